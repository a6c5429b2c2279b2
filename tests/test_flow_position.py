"""A YAML flow run's position as a plain value: taken after every step, through JSON, and a
new call resumed from it - over the real emulator and worker (FlowHarness); the flow runs from
a Python wrapper that passes ``resume`` and ``on_position`` (the worker will do this itself)."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from fake_call import FakeCall
from helpers import write_tone

from ivr.call.collector import AttemptMark
from ivr.call.record import Outcome
from ivr.flow import load_flow
from ivr.flow.interpreter import HANDLERS, run_flow
from ivr.flow.position import FlowPosition, Frame, PositionError, frames_of, stack_of
from ivr.simulate import FlowHarness, until_listening, until_next_listen

ROOT = Path(__file__).resolve().parent.parent

# Runs the YAML flow `flow` on the call, appending each position to `log` (JSON lines), from
# the position in the file `resume` when given.
WRAPPER = """
    from pathlib import Path

    from ivr.flow import load_flow
    from ivr.flow.interpreter import YamlFlow
    from ivr.flow.position import FlowPosition
    from ivr.flow.python_flow import load_python_flow


    async def main(call, flow, log, resume=None):
        def keep(position):
            with Path(log).open("a") as out:
                out.write(position.model_dump_json() + "\\n")

        start = FlowPosition.model_validate_json(Path(resume).read_text()) if resume else None
        if flow.endswith(".py"):  # on the Call itself: the Python flow's own proxy journals it
            await load_python_flow(Path(flow)).run(getattr(call, "call", call), resume=start, on_position=keep)
        else:
            await YamlFlow(load_flow(flow)).run(call, resume=start, on_position=keep)
"""

PIN = """
    vars: {tries: 0}
    steps:
      - answer
      - set: {greeted: "{{ caller.number }}", tries: "{{ tries + 1 }}"}
      - id: ask
        gather:
          prompt: hello.wav
          max_digits: 2
          first_digit_timeout: 5
          retries: 0
          into: choice
          on_match:
            - if: "choice == '11'"
              then:
                - log: "from {{ greeted }} after {{ tries }}"
                - transfer: {to: "101", timeout: 5}
          on_no_input: [{goto: ask}]
      - hangup
"""


def write(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


@pytest.fixture
def flow_dir(tmp_path: Path) -> Path:
    write_tone(tmp_path / "hello.wav", 0.2)
    write(tmp_path, "wrapper.py", WRAPPER)
    return tmp_path


def positions(log: Path) -> list[FlowPosition]:
    return [FlowPosition.model_validate_json(line) for line in log.read_text().splitlines()]


def frames(position: FlowPosition) -> list[tuple[tuple[str, ...], int]]:
    return [(f.branch, f.at) for f in position.frames]


async def call_flow(folder: Path, flow: Path, log: Path, *, resume: Path | None = None, caller: str = "+4930123456",
                    digits: str | None = None, hang_up_when_listening: bool = False) -> Any:
    params: dict[str, Any] = {"flow": str(flow), "log": str(log)}
    if resume is not None:
        params["resume"] = str(resume)
    async with FlowHarness(folder / "wrapper.py", params=params, ring_seconds=0.1) as h:
        callid, call = await h.place_call(caller)
        if digits is not None or hang_up_when_listening:
            assert await until_listening(call, 10)
            if hang_up_when_listening:
                await h.emulator.hangup(callid)
            else:
                await h.emulator.send_dtmf(callid, digits)
        return await asyncio.wait_for(h.record_of(call), 15)


async def test_a_call_taken_over_at_its_gather_resumes_with_its_variables(flow_dir: Path) -> None:
    flow = write(flow_dir, "pin.yaml", PIN)
    first_log = flow_dir / "first.jsonl"
    record = await call_flow(flow_dir, flow, first_log, hang_up_when_listening=True)
    assert record.outcome == Outcome.CALLER_HANGUP
    taken = positions(first_log)
    # after answer, after set, then the gather as it starts (it waits for input)
    assert [(frames(p), p.waiting_for) for p in taken] == [
        ([(("steps",), 1)], None), ([(("steps",), 2)], None), ([(("steps",), 2)], "input")]
    at_gather = taken[-1]
    assert at_gather.waiting_since is not None and abs(at_gather.waiting_since - time.time()) < 60
    assert all(p.waiting_since is None for p in taken[:-1])
    assert at_gather.vars == {"tries": 1, "greeted": "+4930123456"}
    assert at_gather.steps_run == 2 and at_gather.version == load_flow(flow).version
    assert FlowPosition.model_validate_json(at_gather.model_dump_json()) == at_gather  # a plain value
    assert json.loads(at_gather.model_dump_json())["frames"] == [{"branch": ["steps"], "at": 2}]

    # Another call (another process could do the same) continues at the gather: it asks
    # again, and the variables set before the takeover are there.
    (flow_dir / "at_gather.json").write_text(at_gather.model_dump_json())
    second_log = flow_dir / "second.jsonl"
    record = await call_flow(flow_dir, flow, second_log, resume=flow_dir / "at_gather.json",
                             caller="+4940555", digits="11")
    assert [(s.step, s.result.get("message") if s.step == "log" else None) for s in record.steps] == [
        ("gather", None), ("if", None), ("log", "from +4930123456 after 1"), ("transfer", None)]
    assert record.outcome == Outcome.TRANSFERRED and record.transferred_to == "101"
    later = positions(second_log)
    # nested frames: inside the gather's on_match, inside the if's then
    assert [(frames(p), p.waiting_for) for p in later] == [
        ([(("steps",), 2)], "input"),
        ([(("steps",), 3), (("gather", "on_match"), 0)], None),
        ([(("steps",), 3), (("gather", "on_match"), 1), (("then",), 0)], None),
        ([(("steps",), 3), (("gather", "on_match"), 1), (("then",), 1)], None),
        ([(("steps",), 3), (("gather", "on_match"), 1), (("then",), 1)], "transfer"),
    ]
    assert later[2].digits == "11" and later[2].vars["choice"] == "11" and later[2].steps_run == 4
    assert later[0].steps_run == 2 and later[-1].steps_run == 5  # a step being run counts once it ran

    # Resumed inside nested branches: only the steps after that point run.
    (flow_dir / "in_then.json").write_text(later[2].model_dump_json())
    record = await call_flow(flow_dir, flow, flow_dir / "third.jsonl", resume=flow_dir / "in_then.json")
    assert [s.step for s in record.steps] == ["log", "transfer"]
    assert record.outcome == Outcome.TRANSFERRED


async def test_a_position_inside_a_subflow_resumes_the_subflow_there(flow_dir: Path) -> None:
    write(flow_dir, "ask.yaml", """
        params: {question: hello.wav}
        steps:
          - log: "asking"
          - gather: {prompt: "{{ params.question }}", max_digits: 1, retries: 0, into: key}
          - return: {key: "{{ key }}"}
    """)
    flow = write(flow_dir, "main.yaml", """
        steps:
          - answer
          - subflow: {file: ask.yaml, into: answer}
          - log: "pressed {{ answer.key }}"
          - hangup
    """)
    log = flow_dir / "first.jsonl"
    await call_flow(flow_dir, flow, log, hang_up_when_listening=True)
    inside = positions(log)[-1]
    assert frames(inside) == [(("steps",), 1)] and inside.waiting_for is None
    assert inside.subflow is not None and inside.subflow.waiting_for == "input"
    assert frames(inside.subflow) == [(("steps",), 1)] and inside.subflow.params == {"question": "hello.wav"}
    assert inside.subflow.flow.endswith("ask.yaml") and inside.innermost() is inside.subflow
    assert inside.steps_run == inside.subflow.steps_run == 2  # answer, log: subflow and gather run again

    (flow_dir / "inside.json").write_text(inside.model_dump_json())
    record = await call_flow(flow_dir, flow, flow_dir / "second.jsonl", resume=flow_dir / "inside.json", digits="7")
    # the subflow's first step (log) does not run again; its gather does
    assert [s.step for s in record.steps] == ["gather", "return", "subflow", "log", "hangup"]
    assert record.steps[3].result == {"message": "pressed 7"}


MENU = """
    steps:
      - answer
      - menu:
          prompt: hello.wav
          no_input_prompt: [again1.wav, again2.wav]
          choices: {"1": [{log: "one"}]}
          timeout: 1
          retries: 2
          into: key
          on_no_input: [{log: "nothing after {{ last.attempts }} tries"}]
      - hangup
"""


async def test_a_menu_taken_over_at_its_second_attempt_has_only_the_tries_left(flow_dir: Path) -> None:
    for name in ("again1.wav", "again2.wav"):
        write_tone(flow_dir / name, 0.2)
    flow = write(flow_dir, "menu.yaml", MENU)
    first_log = flow_dir / "first.jsonl"
    params = {"flow": str(flow), "log": str(first_log)}
    async with FlowHarness(flow_dir / "wrapper.py", params=params, ring_seconds=0.1) as h:
        callid, call = await h.place_call("+4930123456")
        assert await until_next_listen(call, 1, 15)  # the second attempt listens: the first timed out
        await h.emulator.hangup(callid)
        await asyncio.wait_for(h.record_of(call), 15)
    taken = positions(first_log)
    # the menu as it starts (no attempt: the first), then again as its second attempt starts
    assert [(frames(p), p.waiting_for, p.attempt) for p in taken[1:]] == [
        ([(("steps",), 1)], "input", None),
        ([(("steps",), 1)], "input", AttemptMark(number=2, after="no_input", no_input=1))]
    assert json.loads(taken[-1].model_dump_json())["attempt"] == {
        "number": 2, "after": "no_input", "no_input": 1, "no_match": 0}

    # Resumed there: the second attempt's prompt (the first no-input one, then the question),
    # the third and last attempt, then the no-input branch: 3 tries in all, not 3 more.
    (flow_dir / "at_second.json").write_text(taken[-1].model_dump_json())
    record = await call_flow(flow_dir, flow, flow_dir / "second.jsonl", resume=flow_dir / "at_second.json")
    assert [Path(p).name for p in record.prompts] == ["again1.wav", "hello.wav", "again2.wav", "hello.wav"]
    menu, said = record.steps[0], record.steps[1]
    assert menu.step == "menu" and menu.result["status"] == "no_input" and menu.result["attempts"] == 3
    assert said.result == {"message": "nothing after 3 tries"}
    later = positions(flow_dir / "second.jsonl")
    assert [p.attempt.number if p.attempt else None for p in later if p.waiting_for == "input"] == [2, 3]


PY_MENU = """
    async def main(call):
        await call.answer()
        key = await call.menu(prompt="{dir}/hello.wav", no_input_prompt=["{dir}/again1.wav", "{dir}/again2.wav"],
                              choices=["1"], timeout=1, retries=2)
        call.vars["menu"] = [key.status, key.attempts]
        await call.hangup()
"""


async def test_a_python_flow_s_menu_taken_over_at_its_second_attempt_has_only_the_tries_left(flow_dir: Path) -> None:
    for name in ("again1.wav", "again2.wav"):
        write_tone(flow_dir / name, 0.2)
    flow = write(flow_dir, "menu.py", PY_MENU.replace("{dir}", str(flow_dir)))
    first_log = flow_dir / "first.jsonl"
    params = {"flow": str(flow), "log": str(first_log)}
    async with FlowHarness(flow_dir / "wrapper.py", params=params, ring_seconds=0.1) as h:
        callid, call = await h.place_call("+4930123456")
        assert await until_next_listen(call, 1, 15)  # the second attempt listens: the first timed out
        await h.emulator.hangup(callid)
        await asyncio.wait_for(h.record_of(call), 15)
    taken = positions(first_log)
    # the menu as it starts, then again as its second attempt starts, with the attempt
    assert [(p.waiting_for, p.attempt, [a["kind"] for a in p.actions or []]) for p in taken[2:]] == [
        ("menu", None, ["answer"]), ("menu", AttemptMark(number=2, after="no_input", no_input=1), ["answer"])]

    # Resumed there by replay: answer is not performed again; the menu plays the second
    # attempt's prompt (the first no-input one, then the question), runs the third and last
    # attempt, and ends in no_input: 3 tries in all, not 3 more.
    (flow_dir / "at_second.json").write_text(taken[-1].model_dump_json())
    record = await call_flow(flow_dir, flow, flow_dir / "second.jsonl", resume=flow_dir / "at_second.json")
    assert [Path(p).name for p in record.prompts] == ["again1.wav", "hello.wav", "again2.wav", "hello.wav"]
    assert [s.step for s in record.steps] == ["menu", "hangup"]
    assert record.steps[0].result["status"] == "no_input" and record.steps[0].result["attempts"] == 3
    later = positions(flow_dir / "second.jsonl")
    assert [p.attempt.number if p.attempt else None for p in later if p.waiting_for == "menu"] == [2, 3]
    assert later[-1].vars["menu"] == ["no_input", 3]


def test_a_position_from_before_attempts_loads_and_an_attempt_round_trips(tmp_path: Path) -> None:
    old = {"format": 1, "flow": "f.yaml", "version": "abc", "frames": [{"branch": ["steps"], "at": 1}],
           "waiting_for": "input"}
    assert FlowPosition.model_validate_json(json.dumps(old)).attempt is None  # a checkpoint from before
    mark = AttemptMark(number=3, after="no_match", no_input=1, no_match=1)
    position = FlowPosition.model_validate({**old, "attempt": mark.model_dump()})
    assert FlowPosition.model_validate_json(position.model_dump_json()) == position
    assert position.attempt == mark
    for bad in ({"number": 2}, {"number": 2, "after": "match", "no_input": 1}, {"number": 0},
                {"number": 2, "after": "no_match", "no_input": 1}):
        with pytest.raises(ValueError):
            FlowPosition.model_validate({**old, "attempt": bad})


def test_a_restored_attempt_goes_to_its_own_step_only(tmp_path: Path) -> None:
    # The gather the position points at starts at the attempt; if a `when` skips it on the
    # resume, the next gather starts afresh.
    from ivr.call.results import GatherResult

    flow = load_flow(write(tmp_path, "f.yaml", """
        steps:
          - when: "go"
            gather: {max_digits: 1, into: a}
          - gather: {max_digits: 1, into: b}
    """), check_files=False)

    class Keys(FakeCall):
        def __init__(self) -> None:
            super().__init__()
            self.starts: list[AttemptMark | None] = []

        async def gather(self, **kwargs: Any) -> GatherResult:
            self.starts.append(kwargs["start"])
            return GatherResult("match", "5", attempts=1)

    mark = AttemptMark(number=2, after="no_match", no_match=1)
    at_first = FlowPosition(flow=str(flow.path), version=flow.version, frames=[Frame(branch=("steps",), at=0)],
                            waiting_for="input", attempt=mark, vars={"go": True})
    call = Keys()
    asyncio.run(run_flow(flow, call, resume=at_first))
    assert call.starts == [mark, None]
    call = Keys()
    asyncio.run(run_flow(flow, call, resume=at_first.model_copy(update={"vars": {"go": False}})))
    assert call.starts == [None]


def test_a_position_that_does_not_fit_the_flow_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "f.yaml", """
        steps:
          - set: {a: 1}
          - if: "a == 1"
            then: [{log: one}]
    """)
    flow = load_flow(path)
    good = FlowPosition(flow=str(path), version=flow.version, frames=[Frame(branch=("steps",), at=1)])

    def fails(position: FlowPosition) -> str:
        with pytest.raises(PositionError) as err:
            asyncio.run(run_flow(flow, FakeCall(), resume=position))
        return str(err.value)

    other = good.model_copy(update={"version": "0123456789ab"})
    assert fails(other) == f"position is for version 0123456789ab of {path}, not {flow.version} ({path})"
    past = good.model_copy(update={"frames": [Frame(branch=("steps",), at=5)]})
    assert fails(past) == "frame 1: index 5 is past the end of 'steps' (2 steps)"
    no_branch = good.model_copy(update={"frames": [Frame(branch=("steps",), at=2), Frame(branch=("else",), at=0)]})
    assert fails(no_branch) == "frame 2: the if step has no branch 'else'"
    section = good.model_copy(update={"frames": [Frame(branch=("main",), at=0)]})
    assert fails(section) == "frame 1: 'main' is not a section (steps, on_error, on_hangup)"


def test_positions_go_to_the_observer_and_one_that_fails_stops_nothing(tmp_path: Path) -> None:
    # Steps that need no call (set, if, log): the interpreter alone, no PBX involved.
    flow = load_flow(write(tmp_path, "f.yaml", """
        vars: {n: 0}
        steps:
          - set: {n: "{{ n + 1 }}"}
          - if: "n == 1"
            then: [{set: {n: "{{ n + 10 }}"}}]
          - return: {n: "{{ n }}"}
    """))
    seen: list[FlowPosition] = []

    def broken(position: FlowPosition) -> None:
        seen.append(position)
        raise ConnectionError("redis is down")

    outcome = asyncio.run(run_flow(flow, FakeCall(), on_position=broken))
    assert outcome.status == "returned" and outcome.returned == {"n": 11}
    assert [(frames(p), p.vars["n"]) for p in seen] == [
        ([(("steps",), 1)], 1), ([(("steps",), 2), (("then",), 0)], 1), ([(("steps",), 2)], 11)]

    # Resumed from the middle of the run, it ends the same way.
    outcome = asyncio.run(run_flow(flow, FakeCall(), resume=seen[1]))
    assert outcome.status == "returned" and outcome.returned == {"n": 11}


def test_a_run_resumed_in_on_error_keeps_the_error(tmp_path: Path) -> None:
    flow = load_flow(write(tmp_path, "f.yaml", """
        steps:
          - set: {x: "{{ 1 // 0 }}"}
        on_error:
          - set: {seen: "{{ error }}"}
          - log: "sorry"
    """))
    seen: list[FlowPosition] = []
    outcome = asyncio.run(run_flow(flow, FakeCall(), on_position=seen.append))
    assert outcome.status == "error" and outcome.handled and "ZeroDivisionError" in (outcome.error or "")
    inside = seen[0]
    assert frames(inside) == [(("on_error",), 1)] and inside.error == outcome.error
    assert inside.steps_run == 2 and inside.vars["seen"] == outcome.error
    again = asyncio.run(run_flow(flow, FakeCall(), resume=inside))
    assert (again.status, again.error, again.handled, again.steps) == ("error", outcome.error, True, 1)


def test_every_branch_list_of_every_shipped_flow_has_a_position() -> None:
    # Positions name lists by the outcomes the models declare: each nested step list must be
    # one, and every step's address must go through frames and back to the same lists.
    paths = [*sorted((ROOT / "flows").glob("*.yaml")), ROOT / "examples" / "receptionist.yaml"]
    for path in paths:
        flow = load_flow(path, check_files=False)
        for step, address in flow.walk():
            declared = {o.path for o in step.outcomes() if o.steps}
            assert {p for p, _ in step.branches()} == declared, (path.name, step.kind)
            stack = [[steps, i + 1] for steps, i in address]
            _, back = stack_of(flow, frames_of(flow, stack, in_step=True))
            assert [id(lst) for lst, _ in back] == [id(lst) for lst, _ in stack], (path.name, step.label())
            assert back[-1][1] == address[-1][1]
    assert HANDLERS.missing() == []
