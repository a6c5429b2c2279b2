"""Queue counters from the PBX's active calls (issue 16): ``CallsSnapshot`` counts the calls
waiting at a queue from ``/ActiveCalls`` (liberal in what it reads), ``XapiCache`` reads them
every ``calls_interval`` seconds and keeps serving the last counts while the Configuration API
is down, and ``pbx.queue(...)`` in templates has ``waiting`` and ``longest_wait``.

The cache runs against the emulator over loopback: callers wait at its queue, an agent answers
through its control API, the ``xapi_unavailable`` fault takes /xapi/v1 down while Call Control
keeps working.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from xapi_helpers import client_cfg

from ivr.call.pbx_view import facts_for
from ivr.emulator import Emulator, EmulatorConfig
from ivr.emulator.xapi import load_description
from ivr.pbx.xapi import ActiveCall, CallsSnapshot, XapiCache, XapiCacheCollector, XapiClient
from ivr.pbx.xapi.calls import callee_number, waits_at

PBX_YAML = """\
users:
  - {number: "101", first_name: Anna, last_name: Schmidt, answer: no_answer}
  - {number: "102", first_name: Ben, last_name: Okafor, answer: no_answer}
queues:
  - {number: "810", name: Sales queue, agents: ["101", "102"]}
  - {number: "811", name: Night queue}
"""

NOW = "2026-12-07T10:00:30Z"


def call(callee: str, status: str = "Routing", since: str | None = "2026-12-07T10:00:00Z", **kw: Any) -> ActiveCall:
    return ActiveCall.model_validate({"Id": 1, "Caller": "+4930", "Callee": callee, "Status": status,
                                      "LastChangeStatus": since, "EstablishedAt": "2026-12-07T09:59:00Z",
                                      "ServerNow": NOW, **kw})


def test_counts_the_calls_at_a_queue_that_no_agent_talks_to() -> None:
    calls = (
        call("810 Sales queue"), call("810", status="Queued", since="2026-12-07T10:00:20Z"),
        call("810 Sales queue", status="talking"),  # an agent has it
        call("8100 Other queue"), call("101 Anna Schmidt"), call("", status=""),
        ActiveCall.model_validate({"Id": 9, "Callee": None, "Status": None, "Surprise": [1]}),  # unknown fields kept
    )
    snap = CallsSnapshot(calls, fetched_at=1000.0)
    counts = snap.queue("810")
    assert counts.waiting == 2 and counts.longest_wait_s == 30.0  # ServerNow - LastChangeStatus, the PBX's clock
    assert snap.queue("810", now=1004.0).longest_wait_s == 34.0  # and older by the time since the read
    assert snap.queue(" 8100 ").waiting == 1 and snap.queue("811").waiting == 0
    assert snap.queue("811").longest_wait_s is None
    assert callee_number(calls[0]) == "810" and not waits_at(calls[2], "810") and not waits_at(calls[5], "")


def test_waits_without_usable_times_are_unknown_not_wrong() -> None:
    no_times = call("810", since=None, EstablishedAt=None)
    unset = call("810", since="0001-01-01T00:00:00.0000000+00:00")  # OData's default for none: use EstablishedAt
    garbage = call("810", since="yesterday", ServerNow="never")
    assert CallsSnapshot((no_times,), 0).queue("810").longest_wait_s is None
    assert CallsSnapshot((unset,), 0).queue("810").longest_wait_s == 90.0
    assert CallsSnapshot((garbage,), 0).queue("810").waiting == 1
    assert CallsSnapshot((garbage,), 0).queue("810").longest_wait_s is None


def test_templates_read_the_counts_and_nothing_behind_them() -> None:
    from ivr.call.pbx_view import PbxFacts
    from ivr.pbx.xapi import OfficeHours, PbxSnapshot, Queue
    from ivr.templating.templates import TemplateError, render

    snap = PbxSnapshot(OfficeHours(), (), (), (), (Queue(Number="810", Name="Sales queue"),), (), fetched_at=0.0)
    calls = CallsSnapshot((call("810 Sales queue"), call("810 Sales queue", status="Talking")), fetched_at=100.0)
    pbx = PbxFacts(snap, datetime.now().astimezone(), 1.0, calls, wall=102.0)
    text = ("{{ pbx.queue('Sales queue').waiting }} wait, longest {{ pbx.queue('810').longest_wait }} s, "
            "read {{ pbx.calls_age }} s ago")
    assert render(text, {"pbx": pbx}) == "1 wait, longest 32.0 s, read 2.0 s ago"
    for escape in ("{{ pbx._calls }}", "{{ pbx._calls.calls }}", "{{ pbx._wall }}", "{{ pbx.__dict__ }}",
                   "{{ pbx.queue.__globals__ }}"):
        with pytest.raises(TemplateError):
            render(escape, {"pbx": pbx})


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_the_cache_counts_waiting_callers_and_serves_the_last_count_while_xapi_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "pbx.yaml"
    path.write_text(PBX_YAML, encoding="utf-8")
    emu = Emulator(EmulatorConfig(ring_seconds=0.1, repeat_upserts=False), pbx=load_description(path))
    await emu.start()
    registry = CollectorRegistry()
    try:
        async with XapiClient.standalone(client_cfg(emu.url, request_timeout=1.0)) as xapi, \
                aiohttp.ClientSession() as http:
            cache = XapiCache(xapi, interval=3600, retry=3600, calls_interval=0.05)
            registry.register(XapiCacheCollector(cache))
            assert cache.calls is None and registry.get_sample_value("ivr_xapi_calls_age_seconds") == -1
            await cache.start()
            await until(lambda: cache.calls is not None)
            assert cache.calls is not None and cache.calls.queue("810").waiting == 0

            callers = [await emu.place_call(f"+49301234{n}", to="810") for n in range(3)]
            await until(lambda: cache.calls.queue("810").waiting == 3)  # type: ignore[union-attr]
            typed = await xapi.active_calls()
            assert sorted(c.Id for c in typed) == sorted(callers)
            assert {(c.Callee, c.Status) for c in typed} == {("810 Sales queue", "Routing")}
            snap = cache.snapshot
            assert snap is not None and snap.queue("810") is not None
            facts = facts_for(cache, datetime.now().astimezone())
            sales = facts.queue("Sales queue")
            assert sales is not None and sales["waiting"] == 3 and sales["longest_wait"] is not None
            assert 0 <= sales["longest_wait"] < 30 and facts.calls_age is not None and facts.calls_age < 30
            assert facts.queue("811")["waiting"] == 0  # type: ignore[index]

            async with http.post(f"{emu.url}/_emulator/extensions/101/answer") as r:
                assert r.status == 200 and (await r.json())["callid"] == callers[0]
            await until(lambda: cache.calls.queue("810").waiting == 2)  # type: ignore[union-attr]

            caplog.set_level(logging.WARNING, logger="ivr.pbx.xapi.cache")
            async with http.post(f"{emu.url}/_emulator/faults", json={"xapi_unavailable": {"seconds": 600}}) as r:
                assert r.status == 200
            failures = cache.calls_failures
            await until(lambda: cache.calls_failures >= failures + 3)
            await emu.hangup(callers[1])  # the PBX has 1 waiting now; the cache cannot know
            await until(lambda: cache.calls_failures >= failures + 6)
            assert cache.calls_stale and cache.calls.queue("810").waiting == 2  # the last count keeps serving
            assert facts_for(cache, datetime.now().astimezone()).queue("810")["waiting"] == 2  # type: ignore[index]
            warnings = [r.getMessage() for r in caplog.records if "active calls cannot be read" in r.getMessage()]
            assert len(warnings) == 1 and "serving the counts read" in warnings[0]  # once per outage
            assert registry.get_sample_value("ivr_xapi_calls_failures_total") == cache.calls_failures

            async with http.post(f"{emu.url}/_emulator/faults", json={"xapi_unavailable": {"seconds": 0}}) as r:
                assert r.status == 200
            await until(lambda: not cache.calls_stale)
            assert cache.calls.queue("810").waiting == 1
            assert any("readable again" in r.getMessage() for r in caplog.records)
            await cache.stop()
            assert not cache.running
    finally:
        await emu.stop()


async def test_refresh_reads_the_active_calls_too_and_zero_turns_them_off(tmp_path: Path) -> None:
    path = tmp_path / "pbx.yaml"
    path.write_text(PBX_YAML, encoding="utf-8")
    emu = Emulator(EmulatorConfig(ring_seconds=0.1), pbx=load_description(path))
    await emu.start()
    try:
        async with XapiClient.standalone(client_cfg(emu.url)) as xapi:
            await emu.place_call("+4930123456", to="810")
            cache = XapiCache(xapi, interval=3600)
            await cache.refresh()  # what `caller.harness.refresh_pbx()` calls
            assert cache.calls is not None and cache.calls.queue("810").waiting == 1
            off = XapiCache(xapi, interval=3600, calls_interval=0)
            await off.refresh()
            assert off.calls is None
            sales = facts_for(off, datetime.now().astimezone()).queue("810")
            assert sales is not None and sales["waiting"] is None and sales["longest_wait"] is None  # unknown, not 0
            with pytest.raises(ValueError, match="calls_interval"):
                XapiCache(xapi, calls_interval=-1)
    finally:
        await emu.stop()
