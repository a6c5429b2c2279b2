"""The YAML interpreter over the real Call: emulator + worker over loopback (ivr.simulate)."""

from __future__ import annotations

import asyncio
import shutil
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import soundfile
from aiohttp import web
from fake_call import FakeCall

from ivr.flow import FlowError, FlowLoadError, load_any
from ivr.simulate import FlowHarness, SimulatedCall, until_listening

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ("main_menu.wav", "pin_prompt.wav", "goodbye.wav")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "audio").mkdir()
    for name in AUDIO:
        shutil.copy(ROOT / "audio" / name, tmp_path / "audio" / name)
    # 0.1 s of tone: an audio step that finishes quickly (real prompts play in real time)
    tone = (np.sin(np.arange(800) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16)
    soundfile.write(str(tmp_path / "audio" / "short.wav"), tone, 8000, subtype="PCM_16")
    return tmp_path


def flow(folder: Path, text: str, name: str = "flow.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def steps(report: Any) -> list[tuple[str, str | None, Any]]:
    return [(s.step, s.id, s.result) for s in report.record.steps]


async def simulate(path: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("timeout", 20)
    return await SimulatedCall(path, recordings_dir=path.parent / "rec", **kwargs).run()


MENU = """
steps:
  - answer
  - id: main
    menu:
      prompt: main_menu.wav
      timeout: 2
      retries: 0
      choices:
        "1": [{set: {dept: sales}}, {transfer: {to: "101", timeout: 5}}]
        "2": [{transfer: {to: "102", timeout: 5, on_busy: [{set: {busy: true}}, {goto: bye}]}}]
      on_no_input: [{goto: bye}]
  - log: not reached after a transfer
  - id: bye
    log: "bye {{ busy | default(false) }} {{ digits }}"
  - hangup
"""


async def test_menu_choice_transfers(folder: Path) -> None:
    report = await simulate(flow(folder, MENU), digits="1")
    kinds = [s[0] for s in steps(report)]
    assert kinds == ["answer", "menu", "set", "transfer"]
    menu = steps(report)[1][2]
    assert (menu["status"], menu["choice"]) == ("match", "1")
    assert steps(report)[3][2]["status"] == "answered"
    assert report.record.transferred_to == "101" and report.record.outcome == "transferred"


async def test_busy_branch_and_goto_out_of_nested_list(folder: Path) -> None:
    report = await simulate(flow(folder, MENU), digits="2", extensions={"102": "busy"})
    assert [s[0] for s in steps(report)] == ["answer", "menu", "transfer", "set", "goto", "log", "hangup"]
    assert steps(report)[2][2]["status"] == "busy"
    assert steps(report)[5][2] == {"message": "bye True 2"}
    assert report.record.outcome == "ivr_hangup"


async def test_gather_switch_subflow_return_and_if(folder: Path) -> None:
    flow(folder, """
    params: {n: 0}
    steps:
      - set: {x: "{{ params.n * 2 }}"}
      - return: {doubled: "{{ x }}"}
    """, "double.yaml")
    main = flow(folder, """
    vars: {kind: none}
    steps:
      - answer
      - gather: {prompt: pin_prompt.wav, min_digits: 2, max_digits: 4, first_digit_timeout: 3, into: code}
      - switch: "{{ code }}"
        cases: {"12": [{set: {kind: twelve}}]}
        default: [{set: {kind: other}}]
      - subflow: {file: double.yaml, params: {n: "{{ code | int }}"}, into: result}
      - if: "result.doubled == 24 and kind == 'twelve' and x is not defined"
        then: [{attach_data: {doubled: "{{ result.doubled }}"}}]
        else: [{log: "wrong: {{ result }} {{ kind }}"}]
      - hangup
    """)
    report = await simulate(main, digits="12#")
    got = steps(report)
    assert [s[0] for s in got] == ["answer", "gather", "switch", "set", "set", "return", "subflow", "if",
                                   "attach_data", "hangup"]
    assert got[1][2]["digits"] == "12" and got[1][2]["terminator"] == "#"
    assert got[5][2] == {"doubled": 24}  # native ints through templates
    assert got[8][2] == {"doubled": "24"}


async def test_endless_goto_is_stopped_and_on_error_runs(folder: Path) -> None:
    path = flow(folder, """
    steps:
      - answer
      - id: spin
        goto: spin
    on_error:
      - log: "failed: {{ error }}"
      - hangup
    """)
    report = await simulate(path)
    got = steps(report)
    assert len(got) == 1000 + 2  # the budget, then on_error's two steps
    assert "more than 1000 steps ran (an endless goto loop?)" in got[-2][2]["message"]
    assert "flow.yaml:3" in got[-2][2]["message"]  # where: file and line of the step
    assert report.record.outcome == "ivr_hangup"


async def test_one_step_budget_per_call_across_a_python_flows_subflows(tmp_path: Path) -> None:
    # Each subflow is one step; the call's budget (call.flow_budget), not each subflow's,
    # stops the loop: the 1001st subflow fails, and the YAML flow run next on the call goes on counting.
    flow(tmp_path, "steps:\n  - set: {n: 1}\n", "one.yaml")
    flow(tmp_path, """
    async def main(call):
        for _ in range(1500):
            await call.subflow("one.yaml")
    """, "loop.py")
    call = FakeCall()
    with pytest.raises(FlowError, match=r"subflow one\.yaml: one\.yaml:2: more than 1000 steps ran"):
        await load_any(tmp_path / "loop.py").run(call)
    assert call.flow_budget is not None and call.flow_budget.used == 1001
    with pytest.raises(FlowError, match="more than 1000 steps ran"):
        await load_any(tmp_path / "one.yaml").run(call)
    assert call.flow_budget.used == 1002


async def test_failing_step_runs_on_error_or_reaches_the_worker(folder: Path) -> None:
    handled = flow(folder, """
    steps:
      - answer
      - play: "{{ 'missing' }}.wav"
      - log: not reached
    on_error: [{set: {why: "{{ error }}"}}, {play: short.wav}, hangup]
    """, "handled.yaml")
    report = await simulate(handled)
    got = steps(report)
    assert [s[0] for s in got] == ["answer", "set", "play", "hangup"]
    assert "missing.wav not found" in got[1][2]["why"]
    unhandled = flow(folder, "steps:\n  - answer\n  - play: \"{{ 'missing' }}.wav\"\n", "unhandled.yaml")
    report = await simulate(unhandled)
    assert any("missing.wav not found" in e for e in report.record.errors)


async def test_on_hangup_runs_without_audio(folder: Path) -> None:
    path = flow(folder, """
    steps:
      - answer
      - gather: {prompt: pin_prompt.wav, max_digits: 4, first_digit_timeout: 10}
      - log: not reached
    on_hangup:
      - play: goodbye.wav
      - log: "gone after {{ caller.number }}"
    """)
    async with FlowHarness(path, recordings_dir=folder / "rec") as h:
        callid, call = await h.place_call()
        assert await until_listening(call, timeout=10)
        await h.emulator.hangup(callid)
        record = await asyncio.wait_for(h.record_of(call), 10)
    got = [(s.step, s.id, s.result) for s in record.steps]
    assert [s[0] for s in got] == ["answer", "play", "log"]
    assert got[1][2] == {"skipped": "caller hung up"}
    assert got[2][2] == {"message": "gone after +4930123456"}
    assert record.outcome == "caller_hangup"


@pytest.mark.parametrize("when, expected", [
    (datetime(2026, 3, 27, 7, 30, tzinfo=UTC), "open 08:30"),  # Friday, CET
    (datetime(2026, 3, 28, 12, 0, tzinfo=UTC), "closed 13:00"),  # Saturday afternoon
    (datetime(2026, 12, 25, 10, 0, tzinfo=UTC), "closed 11:00"),  # holiday
])
async def test_hours_follow_the_call_clock(folder: Path, when: datetime, expected: str) -> None:
    path = flow(folder, """
    steps:
      - hours:
          timezone: Europe/Berlin
          weekly: {mon-fri: "08:00-18:00", sat: "09:00-12:00"}
          holidays: ["12-25"]
          open: [{log: "open {{ '%02d:%02d' % (now.hour, now.minute) }}"}]
          closed: [{log: "closed {{ '%02d:%02d' % (now.hour, now.minute) }}"}]
      - hangup
    """)
    # `now` is the call's clock, pinned by the harness (here in Berlin time)
    report = await simulate(path, at=when.astimezone(ZoneInfo("Europe/Berlin")))
    assert steps(report)[1][2] == {"message": expected}


@pytest.fixture
async def pin_service() -> Any:
    seen: list[Any] = []

    async def check(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((body, request.headers.get("X-Token")))
        return web.json_response({"valid": body.get("pin") == "1234"})

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.6)
        return web.Response(text="late")

    app = web.Application()
    app.add_routes([web.post("/pin", check), web.get("/broken", broken), web.get("/slow", slow)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_http_step_success_failure_and_timeout(folder: Path, pin_service: Any) -> None:
    base, seen = pin_service
    path = flow(folder, f"""
    vars: {{base: "{base}"}}
    steps:
      - answer
      - http:
          method: post
          url: "{{{{ base | raw_url }}}}/pin"
          headers: {{X-Token: secret}}
          json: {{pin: "1234", caller: "{{{{ caller.number }}}}"}}
          into: check
      - if: "check.body.valid"
        then: [{{set: {{verified: true}}}}]
      - http: {{url: "{{{{ base | raw_url }}}}/broken", on_failure: [{{set: {{status: "{{{{ last.status }}}}"}}}}]}}
      - http: {{url: "{{{{ base | raw_url }}}}/slow", timeout: 0.2, on_failure: [{{log: "{{{{ last.error }}}}"}}]}}
      - hangup
    """)
    report = await simulate(path)
    got = steps(report)
    assert [s[0] for s in got] == ["answer", "http", "if", "set", "http", "set", "http", "log", "hangup"]
    assert seen == [({"pin": "1234", "caller": "+4930123456"}, "secret")]
    assert got[1][2]["status"] == 200 and got[1][2]["json"] == {"valid": True}
    assert got[5][2] == {"status": 500}
    assert got[7][2]["message"] == "127.0.0.1: timed out"


async def test_python_flow_runs_a_yaml_subflow(folder: Path) -> None:
    sub = flow(folder, "params: {n: 0}\nsteps:\n  - return: {doubled: \"{{ params.n * 2 }}\"}\n", "double.yaml")
    py = folder / "main.py"
    py.write_text(textwrap.dedent(f"""
        async def main(call):
            await call.answer()
            result = await call.subflow({str(sub)!r}, n=21)
            call.call_record.add_step("python", None, result)
            await call.hangup()
    """))
    report = await simulate(py)
    # The Python flow's actions are steps too (id: the awaiting line), the subflow's YAML steps once.
    assert steps(report) == [("answer", "main.py:3", None), ("return", None, {"doubled": 42}),
                             ("subflow", "main.py:4", {"returned": ["doubled"]}),
                             ("python", None, {"doubled": 42}), ("hangup", "main.py:6", None)]


def test_load_any_kinds(folder: Path) -> None:
    assert repr(load_any(flow(folder, "steps: [answer]\n"))).startswith("YamlFlow(")
    with pytest.raises(FlowLoadError, match=r"unknown flow type '.txt'"):
        load_any(flow(folder, "steps: [answer]\n", "x.txt"))
    assert issubclass(FlowError, Exception)


async def test_a_gather_that_gets_no_gather_result_says_where(folder: Path) -> None:
    # A user's own Call stand-in (a mock, a fake) that returns the wrong result: a flow error
    # naming the step's file:line, not a bare assertion or a TypeError deep inside.
    from ivr.call.results import PlayResult
    from ivr.flow.interpreter import run_flow
    from ivr.flow.loader import load_flow

    path = flow(folder, """
        steps:
          - gather: {prompt: hello.wav, into: pin}
    """)

    class WrongCall(FakeCall):
        async def gather(self, **kwargs: Any) -> PlayResult:
            return PlayResult(completed=True)

    outcome = await run_flow(load_flow(path, check_files=False), WrongCall())
    assert outcome.status == "error" and outcome.error is not None
    assert f"{path.name}:2" in outcome.error and "gather got PlayResult, not a GatherResult" in outcome.error


def test_a_subclass_of_a_call_result_is_recorded_as_its_base() -> None:
    from ivr.call.results import PlayResult, step_result

    class Played(PlayResult):
        pass

    assert step_result(Played(completed=False, interrupted_by="dtmf")) == {"completed": False, "interrupted_by": "dtmf"}
