"""XapiCache over loopback: serves the last values without waiting, keeps serving them while the
PBX is down (a warning once, a failure count, ivr_xapi_stale 1), and recovers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from xapi_helpers import client_cfg, description

from ivr.emulator import Emulator, EmulatorConfig
from ivr.emulator.xapi import XapiError
from ivr.emulator.xapi import routes as xapi_routes
from ivr.pbx import ServerError
from ivr.pbx.xapi import XapiCache, XapiCacheCollector, XapiClient


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_cache_serves_last_values_while_the_pbx_is_down(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    emu = Emulator(EmulatorConfig(), pbx=description(tmp_path))
    await emu.start()
    port = emu.port
    registry = CollectorRegistry()
    try:
        async with XapiClient.standalone(client_cfg(emu.url, request_timeout=1.0)) as xapi:
            cache = XapiCache(xapi, interval=0.05, retry=0.05)
            registry.register(XapiCacheCollector(cache))
            assert cache.snapshot is None and registry.get_sample_value("ivr_xapi_age_seconds") == -1
            await cache.start()
            assert await cache.wait_ready(5)
            snap = cache.snapshot
            assert snap is not None
            assert snap.user("103") is not None and snap.user("103").LastName == "O'Brien"  # type: ignore[union-attr]
            support = snap.group(" support ")
            assert support is not None and [m.Number for m in support.Members] == ["103", "104"]
            assert [h.Name for h in support.OfficeHolidays] == ["12-24"]
            assert [a.Number for a in snap.queue("Support queue").Agents] == ["103", "104"]  # type: ignore[union-attr]
            assert snap.queue("810") is not None and [u.Number for u in snap.directory()] == ["101", "102", "103", "104"]
            assert len(snap.office_hours.OfficeHolidays) == 2 and snap.ring_groups[0].Number == "820"
            assert snap.users[0].ForwardingProfiles  # expanded for presence names

            # A change on the PBX shows up at the next refresh, without anyone asking.
            async with aiohttp.ClientSession() as s, s.put(emu.url + "/_emulator/xapi/users/101",
                                                           json={"presence": "Away"}) as r:
                assert r.status == 200
            await until(lambda: cache.snapshot.user("101").CurrentProfileName == "Away")  # type: ignore[union-attr]

            caplog.set_level(logging.WARNING, logger="ivr.pbx.xapi.cache")
            await emu.stop()
            kept = cache.snapshot
            await until(lambda: cache.failures >= 3)
            assert cache.stale and cache.snapshot is kept  # the last values keep serving
            assert "no response" in cache.last_error  # connection refused
            warnings = [r for r in caplog.records if "cannot be read" in r.getMessage()]
            assert len(warnings) == 1  # once per outage, not once per try
            assert registry.get_sample_value("ivr_xapi_stale") == 1
            assert registry.get_sample_value("ivr_xapi_refresh_failures_total") == cache.failures

            await emu.start(port=port)  # the PBX is back
            await until(lambda: not cache.stale)
            assert cache.snapshot is not kept
            assert registry.get_sample_value("ivr_xapi_stale") == 0
            assert any("reachable again" in r.getMessage() for r in caplog.records)
            await cache.stop()
    finally:
        await emu.stop()


async def test_a_refresh_that_fails_part_way_keeps_the_whole_old_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users read fine, queues answer 503: nothing of that read is swapped in."""
    emu = Emulator(EmulatorConfig(), pbx=description(tmp_path))
    await emu.start()
    try:
        async with XapiClient.standalone(client_cfg(emu.url, retry_attempts=0)) as xapi:
            cache = XapiCache(xapi, interval=3600)
            first = await cache.refresh()
            uid = next(iter(emu.xapi.users))
            emu.xapi.users[uid]["FirstName"] = "Changed"

            def broken(store: object, qid: int) -> dict[str, object]:
                raise XapiError(503, "queue service down")

            monkeypatch.setattr(xapi_routes._SETS["Queues"], "render", broken)
            with pytest.raises(ServerError):
                await cache.refresh()
            assert cache.snapshot is first and cache.stale and cache.failures == 1
            assert first.user("101").FirstName == "Anna"  # type: ignore[union-attr]
            monkeypatch.undo()
            second = await cache.refresh()
            assert second.user("101").FirstName == "Changed" and not cache.stale  # type: ignore[union-attr]
    finally:
        await emu.stop()
