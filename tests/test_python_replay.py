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

from ivr.call.collector import AttemptMark
from ivr.call.results import DirectoryMark, DirectoryResult, GatherResult, PlayResult, RecordResult, TransferResult
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


class Tries(StandIn):
    """A call whose menu and directory use every try (nobody answers), telling ``on_attempt``
    as the real ones do; the try ``hang_at`` (kind, number) never ends (the owner dies in it)."""

    def __init__(self, hang_at: tuple[str, int] | None = None) -> None:
        super().__init__()
        self.hang_at = hang_at
        self.hanging = asyncio.Event()
        self.starts: dict[str, Any] = {}  # the start each kind was given

    async def _tries(self, kind: str, options: dict[str, Any], mark: Any) -> int:
        self.performed.append(kind)
        start = self.starts[kind] = options.get("start")
        last = options.get("retries", 2) + 1
        for number in range(start.number if start is not None else 1, last + 1):
            if (at := mark(number)) is not None:
                options["on_attempt"](at)
            if self.hang_at == (kind, number):
                self.hanging.set()
                await asyncio.Event().wait()
        return last

    async def menu(self, **options: Any) -> GatherResult:
        attempts = await self._tries("menu", options, lambda n: AttemptMark(
            number=n, after="no_input", no_input=n - 1) if n > 1 else AttemptMark())
        return GatherResult("no_input", attempts=attempts)

    async def directory(self, **options: Any) -> DirectoryResult:
        attempts = await self._tries("directory", options, lambda n: DirectoryMark(
            number=n, after="none", letters="999") if n > 1 else None)  # as Call.directory: from the second
        return DirectoryResult("no_match", attempts=attempts, letters="999", reason="none")


TRIES = """
    async def main(call):
        await call.answer()
        seen = []
        menu = await call.menu(prompt="menu.wav", choices=["1", "2"], on_attempt=lambda at: seen.append(at.number))
        found = await call.directory(match="last", on_attempt=lambda at: seen.append(at.number))
        call.vars["outcomes"] = [menu.status, menu.attempts, found.status, found.attempts, seen]
"""


async def run_until_hanging(path: Path, call: Tries) -> list[FlowPosition]:
    """Run the flow until its try ``call.hang_at`` hangs; the positions it was told (through JSON)."""
    told: list[FlowPosition] = []
    task = asyncio.ensure_future(load_python_flow(path).run(call, on_position=lambda p: told.append(
        FlowPosition.model_validate_json(p.model_dump_json()))))
    await asyncio.wait_for(call.hanging.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return told


async def test_a_menu_resumed_at_its_second_attempt_has_only_the_tries_left(tmp_path: Path):
    path = write(tmp_path, TRIES)
    told = await run_until_hanging(path, Tries(hang_at=("menu", 2)))
    # the menu as it starts, then again as its second attempt starts (with the attempt)
    assert [(p.waiting_for, p.attempt) for p in told[2:]] == [
        ("menu", None), ("menu", AttemptMark(number=2, after="no_input", no_input=1))]

    call = Tries()
    again: list[FlowPosition] = []
    await load_python_flow(path).run(call, resume=told[-1], on_position=again.append)
    assert call.performed == ["menu", "directory"]  # answer is replayed
    assert call.starts["menu"] == AttemptMark(number=2, after="no_input", no_input=1)
    assert call.starts["directory"] is None  # the mark was the menu's only
    # The menu's attempts 2 and 3 here, 3 in all; the flow's own on_attempt saw them too.
    assert call.vars["outcomes"] == ["no_input", 3, "no_match", 3, [2, 3, 2, 3]]
    # Taken over again at once, the new owner would still start at attempt 2, then 3.
    assert [p.attempt.number if p.attempt else None for p in again if p.waiting_for == "menu"] == [2, 3]


async def test_a_directory_resumed_at_its_second_try_has_only_the_tries_left(tmp_path: Path):
    path = write(tmp_path, TRIES)
    told = await run_until_hanging(path, Tries(hang_at=("directory", 2)))
    assert told[-1].waiting_for == "directory"
    assert told[-1].attempt == DirectoryMark(number=2, after="none", letters="999")
    assert FlowPosition.model_validate_json(told[-1].model_dump_json()).attempt == told[-1].attempt

    call = Tries()
    await load_python_flow(path).run(call, resume=told[-1])
    # answer and the menu (its on_attempt a lambda: named, not by address) are replayed
    assert call.performed == ["directory"]
    assert call.starts["directory"] == DirectoryMark(number=2, after="none", letters="999")
    assert call.vars["outcomes"] == ["no_input", 3, "no_match", 3, [2, 3]]


async def test_the_journal_s_attempt_replaces_the_flow_s_own_start(tmp_path: Path):
    path = write(tmp_path, """
        from ivr.call.collector import AttemptMark

        async def main(call):
            await call.menu(choices=["1"], start=AttemptMark(number=2, after="no_input", no_input=1))
    """)
    call = Tries(hang_at=("menu", 3))
    told = await run_until_hanging(path, call)
    assert call.starts["menu"].number == 2  # the flow's own start, on a call not resumed
    assert told[-1].attempt == AttemptMark(number=3, after="no_input", no_input=2)
    call = Tries()
    await load_python_flow(path).run(call, resume=told[-1])
    assert call.starts["menu"] == AttemptMark(number=3, after="no_input", no_input=2)  # later: reached from it

    # A position at another kind of action than the first run for real: its attempt is not used.
    other = told[-1].model_copy(update={"waiting_for": "gather"})
    call = Tries()
    await load_python_flow(path).run(call, resume=other)
    assert call.starts["menu"].number == 2


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
