"""The worker over real loopback sockets: emulator <-> client <-> worker <-> flows.

Flows here use short tone prompts (made in tmp_path) so that real-time audio costs little.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from pathlib import Path

import pytest

from ivr.call.record import Outcome
from ivr.config import PbxSettings, Route, WorkerConfig
from ivr.config_loader import parse_config
from ivr.config import ConfigError
from ivr.emulator import Emulator, EmulatorConfig
from ivr.simulate import FlowHarness
from ivr.worker.runner import Worker
from helpers import write_tone

SECRET = "test-secret"



@pytest.fixture
def flow_dir(tmp_path: Path) -> Path:
    write_tone(tmp_path / "hello.wav", 0.3)
    write_tone(tmp_path / "long.wav", seconds=1.5, freq=300)
    return tmp_path


def write_flow(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


MENU = """
    steps:
      - answer
      - play: hello.wav
      - menu:
          prompt: hello.wav
          timeout: 2
          choices:
            "1": [{transfer: {to: "101", timeout: 2}}]
            "2": [{transfer: {to: "102", timeout: 2}}]
            "3": [{transfer: {to: "103", timeout: 2}}]
            "4": [{transfer: {to: "104", timeout: 2}}]
          on_no_input: [hangup]
"""


async def test_flow_runs_and_transfers(flow_dir):
    flow = write_flow(flow_dir, "menu.yaml", MENU)
    async with FlowHarness(flow, ring_seconds=0.1) as h:
        callid, call = await h.place_call("+4930111")
        await asyncio.wait_for(call.listening.wait(), 5)
        await h.emulator.send_dtmf(callid, "2")
        record = await asyncio.wait_for(h.record_of(call), 10)
    assert record.outcome == Outcome.TRANSFERRED
    assert record.transferred_to == "102"
    assert record.digits == ["2"]
    assert record.caller_number == "+4930111"
    assert record.direction == "inbound"
    assert [s.step for s in record.steps][:3] == ["answer", "play", "menu"]


async def test_fifty_concurrent_calls_each_get_their_own_outcome(flow_dir):
    flow = write_flow(flow_dir, "menu.yaml", MENU)
    async with FlowHarness(flow, ring_seconds=0.1) as h:

        async def one(i: int):
            key = str(1 + i % 4)
            callid, call = await h.place_call(f"+49301{i:04d}")
            await asyncio.wait_for(call.listening.wait(), 20)
            await h.emulator.send_dtmf(callid, key)
            return key, await asyncio.wait_for(h.record_of(call), 30)

        results = await asyncio.gather(*(one(i) for i in range(50)))
    assert len({r.call_id for _, r in results}) == 50
    for key, record in results:
        assert record.outcome == Outcome.TRANSFERRED, record.to_dict()
        assert record.transferred_to == f"10{key}"
        assert record.digits == [key]


async def test_hot_reload_keeps_the_call_in_progress_on_its_version(flow_dir):
    flow = write_flow(flow_dir, "menu.yaml", MENU)
    async with FlowHarness(flow, ring_seconds=0.1) as h:
        old_callid, old_call = await h.place_call("+4930001")
        await asyncio.wait_for(old_call.listening.wait(), 5)
        old_version = h.worker.library.get(flow).version
        # Edit: key 1 now goes to 105. The call in progress must still go to 101.
        flow.write_text(flow.read_text().replace('to: "101"', 'to: "105"'))
        os.utime(flow, (flow.stat().st_atime, flow.stat().st_mtime + 1))
        for _ in range(50):
            if h.worker.library.get(flow).version != old_version:
                break
            await asyncio.sleep(0.05)
        assert h.worker.library.get(flow).version != old_version
        await h.emulator.send_dtmf(old_callid, "1")
        old_record = await asyncio.wait_for(h.record_of(old_call), 10)

        new_callid, new_call = await h.place_call("+4930002")
        await asyncio.wait_for(new_call.listening.wait(), 5)
        await h.emulator.send_dtmf(new_callid, "1")
        new_record = await asyncio.wait_for(h.record_of(new_call), 10)
    assert old_record.flow_version == old_version and old_record.transferred_to == "101"
    assert new_record.flow_version != old_version and new_record.transferred_to == "105"


async def test_an_invalid_edit_is_reported_and_ignored(flow_dir, caplog):
    flow = write_flow(flow_dir, "menu.yaml", MENU)
    async with FlowHarness(flow, ring_seconds=0.1) as h:
        good = h.worker.library.get(flow).version
        flow.write_text(flow.read_text().replace("- answer", "- answr"))
        os.utime(flow, (flow.stat().st_atime, flow.stat().st_mtime + 1))
        for _ in range(50):
            if h.worker.library.failed_reloads:
                break
            await asyncio.sleep(0.05)
        assert h.worker.library.failed_reloads == 1
        assert h.worker.library.get(flow).version == good
        callid, call = await h.place_call()
        await asyncio.wait_for(call.listening.wait(), 5)
        await h.emulator.send_dtmf(callid, "3")
        record = await asyncio.wait_for(h.record_of(call), 10)
    assert record.transferred_to == "103"
    assert "menu.yaml:3:" in caplog.text and "answr" in caplog.text


async def test_a_failing_step_runs_on_error(flow_dir):
    write_flow(flow_dir, "boom.py", """
        async def main(call, **params):
            raise ValueError("the database is down")
    """)
    flow = write_flow(flow_dir, "errors.yaml", """
        on_error:
          - log: "failed: {{ error }}"
          - transfer: {to: "100", timeout: 2}
        steps:
          - answer
          - subflow: {file: boom.py}
          - hangup
    """)
    async with FlowHarness(flow, ring_seconds=0.1) as h:
        _, call = await h.place_call()
        record = await asyncio.wait_for(h.record_of(call), 10)
    assert record.outcome == Outcome.TRANSFERRED and record.transferred_to == "100"
    assert any("the database is down" in e for e in record.errors)


async def test_a_python_flow_that_raises_falls_back_without_touching_other_calls(flow_dir):
    flow = write_flow(flow_dir, "raises.py", """
        async def main(call):
            await call.answer()
            if call.caller.number.endswith("666"):
                raise RuntimeError("bug in the flow")
            await call.play("long.wav")
            await call.transfer("101", timeout=2)
    """)
    async with FlowHarness(flow, ring_seconds=0.1) as h:
        _, bad = await h.place_call("+49666")
        _, good = await h.place_call("+49777")
        bad_record, good_record = await asyncio.gather(h.record_of(bad), h.record_of(good))
    assert bad_record.outcome == Outcome.ERROR
    assert "bug in the flow" in bad_record.errors[0]
    assert good_record.outcome == Outcome.TRANSFERRED


async def test_caller_hangup_runs_on_hangup_and_is_recorded(flow_dir):
    flow = write_flow(flow_dir, "hang.yaml", """
        on_hangup:
          - set: {left: "yes"}
          - log: "caller left during {{ vars.stage }}"
        steps:
          - answer
          - set: {stage: waiting}
          - play: {files: [long.wav], loop: 10}
    """)
    async with FlowHarness(flow, ring_seconds=0.1) as h:
        callid, call = await h.place_call()
        await asyncio.sleep(0.5)
        await h.emulator.hangup(callid)
        record = await asyncio.wait_for(h.record_of(call), 10)
    assert record.outcome == Outcome.CALLER_HANGUP
    assert call.vars.get("left") == "yes"


async def test_drain_overflows_new_calls_and_lets_calls_finish(flow_dir, tmp_path):
    flow = write_flow(flow_dir, "slow.yaml", """
        steps:
          - answer
          - play: long.wav
          - transfer: {to: "101", timeout: 2}
    """)
    emu = Emulator(EmulatorConfig(client_secret=SECRET, ring_seconds=0.1))
    async with emu.running():
        config = WorkerConfig(
            pbx=PbxSettings(url=emu.url, client_id="900", client_secret=SECRET),
            routes=[Route(route_point="800", flow=str(flow))],
            overflow="105",
            drain_timeout=10,
            records=str(tmp_path / "calls.jsonl"),
        )
        worker = Worker(config)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(worker.ready.wait(), 10)
        first = await emu.place_call("+4930001", "800")
        for _ in range(100):
            if worker.calls:
                break
            await asyncio.sleep(0.02)
        stop.set()  # SIGTERM: drain
        await asyncio.sleep(0.1)
        second = await emu.place_call("+4930002", "800")
        await asyncio.wait_for(task, 15)
        await asyncio.sleep(0.3)
        second_log = emu.call_info(second)["log"]
    records = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    by_caller = {r["caller_number"]: r for r in records}
    assert by_caller["+4930001"]["outcome"] == Outcome.TRANSFERRED
    assert by_caller["+4930002"]["outcome"] == Outcome.OVERFLOW
    assert any(e.get("destination") == "105" for e in second_log)
    assert first != second


async def test_drain_deadline_cuts_calls_with_an_outcome(flow_dir, tmp_path):
    flow = write_flow(flow_dir, "forever.yaml", """
        steps:
          - answer
          - play: {files: [long.wav], loop: 100}
    """)
    emu = Emulator(EmulatorConfig(client_secret=SECRET, ring_seconds=0.1))
    async with emu.running():
        config = WorkerConfig(
            pbx=PbxSettings(url=emu.url, client_id="900", client_secret=SECRET),
            routes=[Route(route_point="800", flow=str(flow))],
            drain_timeout=0.5,
            records=None,
        )
        worker = Worker(config)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(worker.ready.wait(), 10)
        callid = await emu.place_call("+4930001", "800")
        for _ in range(100):
            if worker.calls:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 15)
        await asyncio.sleep(0.2)
        info = emu.call_info(callid)
    assert worker.completed[-1].outcome == Outcome.DRAINED
    assert info["state"] in ("ended", "Ended", "disconnected") or any(e["event"] == "dropped" for e in info["log"])


async def test_dial_runs_the_flow_when_answered(flow_dir, caplog):
    caplog.set_level("INFO", logger="ivr")
    flow = write_flow(flow_dir, "outbound.yaml", """
        steps:
          - play: hello.wav
          - set: {reached: "{{ call.id }}"}
          - hangup
    """)
    inbound = write_flow(flow_dir, "menu.yaml", MENU)
    emu = Emulator(EmulatorConfig(client_secret=SECRET, ring_seconds=0.1))
    async with emu.running():
        config = WorkerConfig(
            pbx=PbxSettings(url=emu.url, client_id="900", client_secret=SECRET),
            routes=[Route(route_point="800", flow=str(inbound))],
            records=None,
        )
        worker = Worker(config)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(worker.ready.wait(), 10)
        record = await asyncio.wait_for(worker.dial("+4930999888", str(flow), timeout=5), 15)
        stop.set()
        await asyncio.wait_for(task, 10)
    assert record.outcome == Outcome.IVR_HANGUP, record.to_dict()
    assert [s.step for s in record.steps] == ["play", "set", "hangup"]
    # logged and recorded as what it is: the route point called the number
    assert record.direction == "outbound" and record.to_dict()["direction"] == "outbound"
    assert "outbound call from 800 to +4930999888: flow outbound.yaml" in caplog.text
    assert "call from +4930999888 to 800" not in caplog.text


def test_config_errors_name_file_line_and_column(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_config("pbx:\n  url: ftp://pbx\n  client_id: 900\n  client_secret_env: X\nroutes: []\n", "ivr.yaml")
    lines = str(err.value).splitlines()
    assert lines[0].startswith("ivr.yaml:2:8: error:") and "http" in lines[0]
    assert any(line.startswith("ivr.yaml:5:") for line in lines)


def test_config_secret_comes_from_env_and_never_shows(tmp_path, monkeypatch):
    flow = tmp_path / "f.yaml"
    flow.write_text("steps: [answer]\n")
    config = parse_config(
        "pbx: {url: 'https://pbx:5001', client_id: 900, client_secret_env: MY_SECRET}\n"
        "routes: [{route_point: 800, flow: f.yaml}]\n",
        "ivr.yaml",
        base_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match="MY_SECRET is not set"):
        config.pbx.resolve_secret()
    monkeypatch.setenv("MY_SECRET", "s3cr3t-value")
    secret = config.pbx.resolve_secret()
    assert secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t" not in repr(config) + repr(secret) + str(secret)


def test_validate_checks_a_worker_config_and_its_flows(tmp_path, capsys):
    from ivr.cli import main

    (tmp_path / "menu.yaml").write_text("steps:\n  - answr\n")
    config = tmp_path / "ivr.yaml"
    config.write_text(
        "pbx: {url: 'https://pbx:5001', client_id: 900, client_secret_env: X}\n"
        "routes: [{route_point: 800, flow: menu.yaml}]\n"
    )
    assert main(["validate", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'menu.yaml'}:2:5: error: unknown step 'answr'" in out
    config.write_text("pbx: {url: 'ftp://pbx', client_id: 900, client_secret_env: X}\nroutes: []\n")
    assert main(["validate", str(config)]) == 1
    assert f"{config}:1:12: error:" in capsys.readouterr().out


def test_the_media_defaults_of_ivr_yaml_are_the_pbx_clients():
    # ivr.yaml's pbx: settings are passed on to the client as they are: one default each, not two
    # that can drift apart when one is changed.
    from ivr.pbx import PbxConfig

    for name in ("outbound_lead_ms", "outbound_batch_frames", "outbound_tick_ms", "inbound_block_ms"):
        assert PbxSettings.model_fields[name].default == PbxConfig.model_fields[name].default, name
