"""A call's observers (ivr/call/observer.py) and a Python flow's proxy (ivr/flow/python_call.py)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fake_call import FakeCall

from ivr.call.action_steps import FlowAction
from ivr.call.observer import CallObserver, CallObservers
from ivr.call.results import PlayResult
from ivr.flow import load_flow_text
from ivr.flow.interpreter import run_flow
from ivr.flow.python_call import FlowCall


class Seen(CallObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def step_started(self, step: Any, info: Mapping[str, Any]) -> None:
        self.events.append(("start", step.kind, info["where"]))

    def step_ended(self, step: Any, info: Mapping[str, Any]) -> None:
        self.events.append(("end", step.kind, "error" in info))

    def listening(self, on: bool, count: int) -> None:
        self.events.append(("listening", on, count))


class Broken(CallObserver):
    def step_started(self, step: Any, info: Mapping[str, Any]) -> None:
        raise RuntimeError("observer bug")


class StandIn(FakeCall):
    """A call that plays (in memory) and keeps what it played."""

    def __init__(self) -> None:
        super().__init__()
        self.played: list[str] = []

    async def play(self, *files: str, loop: int = 1, barge_in: bool = True) -> PlayResult:
        self.played.extend(files)
        return PlayResult(completed=True)


def test_an_observer_that_raises_is_logged_and_the_others_still_hear(caplog) -> None:
    observers, seen = CallObservers(), Seen()
    observers.add(Broken())
    observers.add(seen)
    with caplog.at_level(logging.ERROR, logger="ivr.call"):
        observers.step_started(FlowAction("play", "f.py:3"), {"where": "f.py:3", "label": "play (f.py:3)"})
    assert seen.events == [("start", "play", "f.py:3")]
    assert observers.current_step == "play (f.py:3)"
    assert "observer bug" in caplog.text


async def test_the_proxy_reports_each_action_with_the_awaiting_line() -> None:
    call, seen = StandIn(), Seen()
    call.observers.add(seen)
    proxy = FlowCall(call)
    result = await proxy.play("hello.wav")  # this line is the step's where
    line = test_the_proxy_reports_each_action_with_the_awaiting_line.__code__.co_firstlineno + 4
    assert result.completed and call.played == ["hello.wav"]
    assert seen.events == [("start", "play", f"test_call_observer.py:{line}"), ("end", "play", False)]
    proxy.vars["x"] = 1  # everything that is not an action reads through
    assert call.vars == {"x": 1}


async def test_a_yaml_flow_run_with_a_proxy_reports_its_steps_not_actions() -> None:
    call, seen = StandIn(), Seen()
    call.observers.add(seen)
    flow = load_flow_text("steps:\n  - play: hello.wav\n", "f.yaml", check_files=False)
    outcome = await run_flow(flow, FlowCall(call))
    assert outcome.status == "completed", outcome
    assert [e[:2] for e in seen.events] == [("start", "play"), ("end", "play")]
    assert seen.events[0][2].startswith("f.yaml:2")  # the YAML step, not a FlowAction of the interpreter
