"""The PBX description in `ivr call --pbx-config` and the `ivr_sim` fixture: the flow's worker
sees the description's users as the extensions (one PBX model) and /xapi/v1 serves them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ivr.cli import main

PBX = """\
users:
  - {number: "201", first_name: Anna, last_name: Busy, answer: busy}
  - {number: "202", first_name: Ben, last_name: Answers}
"""
FLOW = """\
steps:
  - answer
  - transfer: {to: "201", timeout: 5, on_busy: [{transfer: {to: "202", timeout: 5}}]}
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "pbx.yaml").write_text(PBX)
    (tmp_path / "flow.yaml").write_text(FLOW)
    return tmp_path / "flow.yaml", tmp_path / "pbx.yaml"


async def test_ivr_sim_with_a_pbx_description(ivr_sim, files) -> None:
    flow, pbx = files
    caller = await ivr_sim.call(flow, pbx=pbx)
    await caller.expect_transfer("202")
    record = await caller.record()
    transfers = [s.result for s in record.steps if s.step == "transfer"]
    assert [(t["destination"], t["status"]) for t in transfers] == [("201", "busy"), ("202", "answered")], transfers
    harness = caller.harness
    assert sorted(u["Number"] for u in harness.emulator.xapi.users.values()) == ["201", "202"]


def test_ivr_call_pbx_config(files, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow, pbx = files
    assert main(["call", str(flow), "--pbx-config", str(pbx), "--json", "--log-level", "ERROR"]) == 0
    report = json.loads(capsys.readouterr().out)
    steps = [s["result"] for s in report["record"]["steps"] if s["step"] == "transfer"]
    assert [(t["destination"], t["status"]) for t in steps] == [("201", "busy"), ("202", "answered")]
    bad = tmp_path / "bad.yaml"
    bad.write_text("users: [{number: '201', answer: maybe}]\n")
    assert main(["call", str(flow), "--pbx-config", str(bad), "--log-level", "ERROR"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}:1:" in err and "answer" in err


async def test_worker_reads_the_pbx_configuration_on_its_own_token(tmp_path: Path) -> None:
    """xapi.enabled: the worker keeps a cache of the PBX's configuration, read on the Call
    Control token (one token issued), and /metrics shows it."""
    import asyncio

    from ivr.config import PbxSettings, Route, WorkerConfig, XapiSettings
    from ivr.emulator import Emulator, EmulatorConfig
    from ivr.emulator.xapi import load_description
    from ivr.worker.runner import Worker

    (tmp_path / "pbx.yaml").write_text(PBX)
    (tmp_path / "flow.yaml").write_text(FLOW)
    emu = Emulator(EmulatorConfig(client_secret="s3"), pbx=load_description(tmp_path / "pbx.yaml"))
    async with emu.running():
        config = WorkerConfig(
            pbx=PbxSettings(url=emu.url, client_id="900", client_secret="s3"),
            routes=[Route(route_point="800", flow=str(tmp_path / "flow.yaml"))],
            records=None, xapi=XapiSettings(enabled=True, refresh_seconds=1),
        )
        worker = Worker(config)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            await asyncio.wait_for(worker.ready.wait(), 10)
            assert worker.xapi is not None and await worker.xapi.wait_ready(10)
            snap = worker.xapi.snapshot
            assert snap is not None and [u.name for u in snap.directory()] == ["Anna Busy", "Ben Answers"]
            text = worker.metrics.render().decode()
            values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                      if line.startswith("ivr_xapi_")}
            assert values["ivr_xapi_refreshes_total"] >= 1 and values["ivr_xapi_stale"] == 0
            assert values["ivr_xapi_refresh_failures_total"] == 0 and values["ivr_xapi_age_seconds"] >= 0
            assert worker.pbx is not None and worker.pbx.tokens.refreshes == 1
            assert len([t for t in emu.controller.tokens._tokens.values() if not t.revoked]) == 1
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
    assert worker.xapi is not None and not worker.xapi.running  # stopped with the worker
