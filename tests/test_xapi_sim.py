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
