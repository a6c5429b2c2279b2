"""A Python flow's journal and its replay (ivr/flow/replay.py, ivr/flow/python_call.py):
the actions done before a takeover are answered from the journal, the one in progress runs;
a journal that does not fit the code starts the flow again from the top."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fake_call import FakeCall

from ivr.call.results import GatherResult, PlayResult, RecordResult, TransferResult
from ivr.flow.position import FlowPosition
from ivr.flow.python_flow import load_python_flow
from ivr.flow.replay import ReplayMismatch, decode_result, encode_result

FLOW = """
    async def main(call):
        await call.answer()
        await call.play("hello.wav")
        pin = await call.gather(prompt="pin.wav", max_digits=4)
        call.vars["pin"] = pin.digits
        if pin.digits == "1234":
            await call.transfer("101")
"""


class StandIn(FakeCall):
    """A call whose actions a Python flow's proxy performs; counts what was performed."""

    def __init__(self, digits: str = "1234", block: str | None = None) -> None:
        super().__init__(call_id="c1", route_point="800")
        self.performed: list[str] = []
        self.digits = digits
        self.block = block  # an action that never ends (the owner dies in it)

    async def _act(self, kind: str) -> None:
        self.performed.append(kind)
        if kind == self.block:
            await asyncio.Event().wait()

    async def answer(self) -> None:
        await self._act("answer")

    async def play(self, *files: str, **options: Any) -> PlayResult:
        await self._act("play")
        return PlayResult(completed=True, played_ms=1200)

    async def say(self, text: str, **options: Any) -> PlayResult:
        await self._act("say")
        return PlayResult(completed=True)

    async def gather(self, **options: Any) -> GatherResult:
        await self._act("gather")
        return GatherResult("match", digits=self.digits, attempts=1)

    async def transfer(self, destination: str, **options: Any) -> TransferResult:
        await self._act("transfer")
        return TransferResult("answered", destination=destination)


def write(folder: Path, text: str, name: str = "pin.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


async def run_until_blocked(path: Path, call: StandIn) -> list[FlowPosition]:
    """Run the flow until the action ``call.block`` hangs; the positions it was told (as JSON and back)."""
    told: list[FlowPosition] = []
    flow = load_python_flow(path)
    task = asyncio.ensure_future(flow.run(call, on_position=lambda p: told.append(
        FlowPosition.model_validate_json(p.model_dump_json()))))
    for _ in range(100):
        await asyncio.sleep(0)
        if call.performed and call.performed[-1] == call.block:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return told


async def test_a_resumed_python_flow_replays_what_was_done_and_runs_the_action_in_progress(tmp_path: Path):
    path = write(tmp_path, FLOW)
    first = StandIn(block="gather")
    told = await run_until_blocked(path, first)
    assert first.performed == ["answer", "play", "gather"]
    last = told[-1]
    assert last.waiting_for == "gather" and [a["kind"] for a in last.actions or []] == ["answer", "play"]
    assert last.frames[0].at == 2 and last.version == load_python_flow(path).version

    second = StandIn()  # the new owner's call
    second.call_record.taken_over = {"from": "pid 1", "resumed": True}
    again: list[FlowPosition] = []
    await load_python_flow(path).run(second, resume=last, on_position=again.append)
    assert second.performed == ["gather", "transfer"]  # answer and play were not performed again
    assert second.vars == {"pin": "1234"}
    assert second.call_record.taken_over["replayed_actions"] == 2
    assert [s.step for s in second.call_record.steps] == ["gather", "transfer"]  # only what ran here
    assert [a["kind"] for a in again[-1].actions or []] == ["answer", "play", "gather", "transfer"]


async def test_a_replayed_result_is_what_the_flow_saw(tmp_path: Path):
    path = write(tmp_path, """
        async def main(call):
            played = await call.play("hello.wav")
            call.vars["played_ms"] = played.played_ms
            call.vars["type"] = type(played).__name__
            await call.say("next")
    """)
    first = StandIn(block="say")
    told = await run_until_blocked(path, first)
    second = StandIn()
    await load_python_flow(path).run(second, resume=told[-1])
    assert second.performed == ["say"] and second.vars == {"played_ms": 1200, "type": "PlayResult"}


async def test_a_flow_that_asks_for_another_action_starts_again_from_the_top(tmp_path: Path, caplog):
    path = write(tmp_path, FLOW)
    first = StandIn(block="gather")
    told = await run_until_blocked(path, first)
    # The worker would see the new content hash and not resume at all; given the old journal
    # anyway, the replay finds the difference itself.
    write(tmp_path, FLOW.replace('await call.play("hello.wav")', 'await call.say("hello")'))
    changed = load_python_flow(path)
    second = StandIn()
    second.call_record.taken_over = {"from": "pid 1", "resumed": True}
    with caplog.at_level(logging.WARNING, logger="ivr.flow"):
        await changed.run(second, resume=told[-1])
    assert second.performed == ["answer", "say", "gather", "transfer"]  # all of it, from the top
    assert second.call_record.taken_over["resumed"] is False
    assert "asks for a say where the journal has 'play'" in second.call_record.taken_over["replay"]
    assert "starts again from the top" in caplog.text


async def test_other_arguments_or_a_flow_that_ends_early_start_it_again(tmp_path: Path):
    path = write(tmp_path, FLOW)
    told = await run_until_blocked(path, StandIn(block="gather"))
    other = load_python_flow(write(tmp_path, FLOW.replace("hello.wav", "bye.wav"), "other.py"))
    call = StandIn()
    await other.run(call, resume=told[-1])
    assert call.performed == ["answer", "play", "gather", "transfer"]

    short = load_python_flow(write(tmp_path, "async def main(call):\n    await call.answer()\n", "short.py"))
    call = StandIn()
    call.call_record.taken_over = {"resumed": True}
    await short.run(call, resume=told[-1])
    assert call.performed == ["answer"] and "ended before action 2" in call.call_record.taken_over["replay"]


def test_results_go_through_json_and_come_back_as_their_class():
    for result in (PlayResult(completed=False, interrupted_by="dtmf", played_ms=40),
                   GatherResult("match", digits="12", choice="1", confidence=0.5),
                   RecordResult(Path("/r/a.wav"), 2.5, "silence", {"k": "v"}),
                   TransferResult("busy", destination="101")):
        encoded = encode_result(result)
        assert decode_result(FlowPosition.model_validate_json(FlowPosition(
            flow="f", version="v", frames=[{"branch": ["steps"], "at": 1}],
            actions=[{"n": 0, "kind": "x", "args": "", "result": encoded}]).model_dump_json()).actions[0]["result"]
        ) == result
    assert decode_result(encode_result({"a": 1, "b": [object()]}))["a"] == 1  # a subflow's values: plain
    assert decode_result(encode_result(None)) is None
    with pytest.raises(ReplayMismatch):
        decode_result({"type": "Popen", "fields": {}})  # only the known result classes are rebuilt
