"""A Python flow's actions as the call record's steps (and so in ivr_step_duration_seconds),
over a real emulator + worker (FlowHarness), tracing off; YAML steps are recorded once."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import write_tone

from ivr.call import RecordResult
from ivr.call.action_steps import action_result
from ivr.call.record import Outcome
from ivr.simulate import FlowHarness


@pytest.fixture
def flow_dir(tmp_path: Path) -> Path:
    write_tone(tmp_path / "hello.wav", 0.3)
    return tmp_path


def write(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def steps(record) -> list[tuple[str, str | None]]:
    return [(s.step, s.id) for s in record.steps]


def step_count(h: FlowHarness, step: str) -> float | None:
    return h.worker.metrics.registry.get_sample_value("ivr_step_duration_seconds_count", {"step": step})


PY_MENU = """
    async def main(call):
        await call.answer()
        await call.play("hello.wav")
        result = await call.menu(prompt="hello.wav", choices=["2"], timeout=2)
        if result.choice == "2":
            await call.transfer("102", timeout=2)
"""

YAML_MENU = """
    steps:
      - answer
      - play: hello.wav
      - menu:
          prompt: hello.wav
          timeout: 2
          choices:
            "2": [{transfer: {to: "102", timeout: 2}}]
"""


async def _menu_call(flow: Path) -> tuple[FlowHarness, object]:
    async with FlowHarness(flow, ring_seconds=0.1) as h:
        callid, call = await h.place_call()
        await asyncio.wait_for(call.listening.wait(), 5)
        await h.emulator.send_dtmf(callid, "2")
        record = await asyncio.wait_for(h.record_of(call), 10)
    assert record.outcome == Outcome.TRANSFERRED
    return h, record


async def test_python_flow_actions_are_steps_with_durations_and_metrics(flow_dir):
    h, record = await _menu_call(write(flow_dir, "flow.py", PY_MENU))
    # menu runs gather, play_prompt and play inside: one step, like the YAML menu.
    assert steps(record) == [("answer", "flow.py:2"), ("play", "flow.py:3"), ("menu", "flow.py:4"),
                             ("transfer", "flow.py:6")]
    _answer, play, menu, transfer = record.steps
    assert play.result == {"completed": True, "interrupted_by": None}
    assert 0.1 < play.duration < 1.5  # 0.3 s of tone, on the loop clock
    assert menu.result["status"] == "match" and menu.result["choice"] == "2" and menu.result["source"] == "dtmf"
    assert transfer.result == {"status": "answered", "reason": "delivered", "destination": "102", "pbx_error": False}
    assert transfer.duration > 0
    assert [s.at for s in record.steps] == sorted(s.at for s in record.steps)
    assert json.loads(record.to_json())["steps"][3]["id"] == "flow.py:6"  # the calls.jsonl line

    for step in ("answer", "play", "menu", "transfer"):
        assert step_count(h, step) == 1, step
    assert h.worker.metrics.registry.get_sample_value("ivr_step_duration_seconds_sum", {"step": "play"}) > 0.1
    assert h.worker.metrics.registry.get_sample_value(
        "ivr_gather_results_total", {"status": "match", "source": "dtmf"}) == 1
    assert step_count(h, "gather") is None and step_count(h, "play_prompt") is None


async def test_a_yaml_flow_records_its_steps_once(flow_dir):
    h, record = await _menu_call(write(flow_dir, "flow.yaml", YAML_MENU))
    assert steps(record) == [("answer", None), ("play", None), ("menu", None), ("transfer", None)]
    for step in ("answer", "play", "menu", "transfer"):
        assert step_count(h, step) == 1, step


async def test_subflows_either_way_record_each_step_once(flow_dir):
    write(flow_dir, "inner.py", """
        async def main(call):
            await call.play("hello.wav")
            return {"x": 1}
    """)
    write(flow_dir, "sub.yaml", """
        steps:
          - play: hello.wav
          - subflow: {file: inner.py}
          - return: {y: 2}
    """)
    flow = write(flow_dir, "flow.py", """
        async def main(call):
            await call.answer()
            await call.subflow("sub.yaml")
            await call.hangup()
    """)
    async with FlowHarness(flow, ring_seconds=0.1) as h:
        _, call = await h.place_call()
        record = await asyncio.wait_for(h.record_of(call), 10)
    assert record.outcome == Outcome.IVR_HANGUP
    # Each step is stamped when it ends: a subflow after the steps it ran.
    assert steps(record) == [("answer", "flow.py:2"), ("play", None), ("play", "inner.py:2"), ("subflow", None),
                             ("return", None), ("subflow", "flow.py:3"), ("hangup", "flow.py:4")]
    assert record.steps[3].result == {"x": 1}  # the YAML subflow step keeps the values
    assert record.steps[5].result == {"returned": ["y"]}  # a Python action only their names
    assert step_count(h, "play") == 2 and step_count(h, "subflow") == 2

    main = write(flow_dir, "main.yaml", "steps:\n  - answer\n  - subflow: {file: inner.py}\n  - hangup\n")
    async with FlowHarness(main, ring_seconds=0.1) as h:
        _, call = await h.place_call()
        record = await asyncio.wait_for(h.record_of(call), 10)
    assert steps(record) == [("answer", None), ("play", "inner.py:2"), ("subflow", None), ("hangup", None)]


async def test_an_action_that_raises_leaves_no_step(flow_dir):
    flow = write(flow_dir, "flow.py", """
        from ivr.call import CallError

        async def main(call):
            await call.answer()
            try:
                await call.play("missing.wav")
            except CallError:
                pass
            await call.hangup()
    """)
    async with FlowHarness(flow, ring_seconds=0.1) as h:
        _, call = await h.place_call()
        record = await asyncio.wait_for(h.record_of(call), 10)
    assert steps(record) == [("answer", "flow.py:4"), ("hangup", "flow.py:9")]  # as a failing YAML step


def test_a_step_keeps_a_short_result():
    agent = SimpleNamespace(status="returned", turns=3, error=None, data={"reason": "menu"},
                            transcript=[{"role": "user", "text": "x" * 10_000}])
    assert action_result(agent) == {"status": "returned", "turns": 3}
    assert action_result({"account": "x" * 10_000, "ok": True}) == {"returned": ["account", "ok"]}
    assert action_result(RecordResult(Path("/r/a.wav"), 2.5, "silence", {"k": "v"})) == \
        {"path": "/r/a.wav", "duration": 2.5, "reason": "silence", "empty": False}
    assert action_result(None) is None and action_result(object()) is None


def test_a_record_keeps_at_most_max_steps_and_counts_the_rest() -> None:
    from ivr.call.record import MAX_RECORDED_STEPS, CallRecord

    record = CallRecord("c1", "800", 1)
    for i in range(MAX_RECORDED_STEPS + 5):
        record.add_step("sleep", f"flow.py:{i}", None, 0.001)
    assert len(record.steps) == MAX_RECORDED_STEPS and record.metrics["steps_not_kept"] == 5
    assert record.steps[-1].id == f"flow.py:{MAX_RECORDED_STEPS - 1}"  # the first ones are kept


def test_call_actions_still_look_async_to_mocks() -> None:
    # A Python flow's proxy (FlowCall) makes each action a plain function returning the
    # observed coroutine: a flow author's unit test mocking the call must still get awaitable actions.
    from unittest.mock import AsyncMock, create_autospec

    from ivr.call import Call
    from ivr.flow.python_call import FlowCall

    mock = create_autospec(Call, instance=True)
    proxy = create_autospec(FlowCall, instance=True)
    for name in ("answer", "play", "say", "menu", "gather", "transfer", "record", "hangup"):
        assert asyncio.iscoroutinefunction(getattr(Call, name)), name
        assert isinstance(getattr(mock, name), AsyncMock), name
    for name in ("answer", "play", "say", "menu", "gather", "transfer", "record", "hangup", "subflow", "agent"):
        assert asyncio.iscoroutinefunction(getattr(FlowCall, name)), name
        assert isinstance(getattr(proxy, name), AsyncMock), name
