"""The owner's control API over real loopback sockets: auth, bad input, a dialled call, the
published endpoint file (ivr/worker/control.py)."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from ivr.config import ConfigError, ControlSettings, PbxSettings, Route, WorkerConfig
from ivr.emulator import Emulator, EmulatorConfig
from ivr.worker.control import ControlServer, read_published, resolve_token
from ivr.worker.runner import Worker

SECRET = "control-test-secret"


@pytest.fixture
async def running(tmp_path: Path):
    (tmp_path / "menu.yaml").write_text("steps: [answer, hangup]\n")
    (tmp_path / "out.yaml").write_text("steps:\n  - set: {reached: 'yes'}\n  - hangup\n")
    emu = Emulator(EmulatorConfig(client_secret=SECRET, ring_seconds=0.1))
    async with emu.running():
        config = WorkerConfig(pbx=PbxSettings(url=emu.url, client_id="900"),
                              routes=[Route(route_point="800", flow=str(tmp_path / "menu.yaml"))], records=None,
                              base_dir=tmp_path)
        worker = Worker(config, secret=SecretStr(SECRET), reload_interval=60)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(worker.ready.wait(), 20)
        published = tmp_path / "run" / "ivr3cx-x.control.json"
        server = ControlServer(worker, config, published)
        endpoint = await server.start()
        async with aiohttp.ClientSession() as session:
            yield session, endpoint, published, server
        await server.stop()
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_every_route_wants_the_token(running):
    session, endpoint, _published, _server = running
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": endpoint.token}):
        async with session.get(f"{endpoint.url}/v1/status", headers=headers) as resp:
            assert resp.status == 401
        async with session.post(f"{endpoint.url}/v1/calls", json={"number": "1", "flow": "out.yaml"},
                                headers=headers) as resp:
            assert resp.status == 401
    async with session.get(f"{endpoint.url}/v1/status", headers={"Authorization": f"Bearer {endpoint.token}"}) as resp:
        assert resp.status == 200 and (await resp.json())["ready"] is True


async def test_a_call_placed_through_the_api_runs_its_flow(running):
    session, endpoint, _published, _server = running
    auth = {"Authorization": f"Bearer {endpoint.token}"}
    async with session.post(f"{endpoint.url}/v1/calls", json={"number": "+4930999", "flow": "out.yaml", "timeout": 5},
                            headers=auth) as resp:
        assert resp.status == 200, await resp.text()
        record = await resp.json()
    assert record["outcome"] == "ivr_hangup" and [s["step"] for s in record["steps"]] == ["set", "hangup"]


@pytest.mark.parametrize("body, needle", [
    (b"not json", "POST /v1/calls"),
    (b'{"number": "", "flow": "out.yaml"}', "number"),
    (b'{"number": "1", "flow": "out.yaml", "extra": 1}', "extra"),
    (b'{"number": "1", "flow": "missing.yaml"}', "missing.yaml"),
])
async def test_bad_requests_get_one_line_errors(running, body, needle):
    session, endpoint, _published, _server = running
    headers = {"Authorization": f"Bearer {endpoint.token}", "Content-Type": "application/json"}
    async with session.post(f"{endpoint.url}/v1/calls", data=body, headers=headers) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert needle in error and "\n" not in error and "Traceback" not in error


async def test_the_endpoint_is_published_for_this_user_only_and_removed_on_stop(running, caplog):
    _session, endpoint, published, server = running
    assert read_published(published) == endpoint
    assert stat.S_IMODE(published.stat().st_mode) == 0o600
    assert endpoint.token not in repr(endpoint)
    caplog.set_level(logging.DEBUG)
    await server.stop()
    assert not published.exists()
    assert all(endpoint.token not in r.getMessage() for r in caplog.records)


def test_tokens_come_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("IVR_CONTROL_TOKEN", " t0ken ")
    assert resolve_token(ControlSettings(token_env="IVR_CONTROL_TOKEN")) == "t0ken"
    (tmp_path / "token").write_text("from-file\n")
    assert resolve_token(ControlSettings(token_file=str(tmp_path / "token"))) == "from-file"
    assert resolve_token(ControlSettings()) is None
    monkeypatch.delenv("IVR_CONTROL_TOKEN")
    with pytest.raises(ConfigError, match="IVR_CONTROL_TOKEN is not set"):
        resolve_token(ControlSettings(token_env="IVR_CONTROL_TOKEN"))
    with pytest.raises(ValueError, match="not both"):
        ControlSettings(token_env="A", token_file="B")
