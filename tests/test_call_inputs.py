"""The call's one input stream (ivr/call/inputs.py): what a wait gets, what stays queued for
the next one, deadlines, sticky hang-up, and the ends of watched work (on the virtual-time
loop, ivr.testing.clock); and the key semantics the Call builds on it, over the emulator."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

from helpers import write_tone

from ivr.audio.vad import SpeechStarted
from ivr.call.inputs import HUNG_UP, MAX_QUEUED, Digit, HungUp, InputStream, PromptDone, WorkDone, stop
from ivr.simulate import FlowHarness, until_listening, until_next_listen
from ivr.testing.clock import run


def digits_only(item: object) -> bool:
    return isinstance(item, Digit)


def test_a_wait_takes_what_it_wants_and_leaves_the_rest_in_order() -> None:
    async def main() -> None:
        stream = InputStream()
        stream.push(SpeechStarted(t=0.0))
        stream.push(Digit("1", 0.1))
        stream.push(Digit("2", 0.2))
        assert await stream.next(digits_only) == Digit("1", 0.1)
        assert stream.pending() == [SpeechStarted(t=0.0), Digit("2", 0.2)]  # speech stays, key 2 too
        assert stream.take_digits() == "2"
        stream.push(Digit("3", 0.3))
        stream.unread_digits("12", 0.4)  # read but not used: read first by the next wait
        assert stream.take_digits() == "123"
        stream.drop_speech()
        assert stream.pending() == []

    run(main())


def test_a_wait_ends_at_its_deadline_or_at_the_input_that_comes_first() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stream = InputStream()
        t0 = loop.time()
        assert await stream.next(digits_only, t0 + 2.0) is None
        assert loop.time() - t0 >= 2.0 - 0.01
        loop.call_later(0.5, stream.push, SpeechStarted(t=0.0))  # not wanted: the wait goes on
        loop.call_later(1.0, stream.push, Digit("5", 0.0))
        t1 = loop.time()
        assert await stream.next(digits_only, t1 + 3.0) == Digit("5", 0.0)
        assert 0.99 <= loop.time() - t1 < 1.5
        assert stream.pending() == [SpeechStarted(t=0.0)]

    run(main())


def test_hang_up_is_sticky_and_a_cancelled_wait_loses_nothing() -> None:
    async def main() -> None:
        stream = InputStream()
        waiting = asyncio.ensure_future(stream.next(lambda i: isinstance(i, SpeechStarted)))
        await asyncio.sleep(0.1)
        stream.push(Digit("7", 0.0))  # not wanted by that wait
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await stop(waiting)
        assert waiting.cancelled() and stream.pending() == [Digit("7", 0.0)]
        stream.push(HUNG_UP)
        assert isinstance(await stream.next(digits_only), HungUp)  # even with a key queued
        assert isinstance(await stream.next(digits_only, 0.0), HungUp)

    run(main())


def test_the_end_of_watched_work_is_an_input_until_forgotten() -> None:
    async def main() -> None:
        stream = InputStream()
        work = stream.watch(asyncio.ensure_future(asyncio.sleep(0.5, "played")), PromptDone)
        item = await stream.next(lambda i: isinstance(i, PromptDone) and i.task is work)
        assert isinstance(item, PromptDone) and item.task.result() == "played"
        # Work a wait gave up on: its end, queued or still to come, never reaches anyone.
        late = stream.watch(asyncio.ensure_future(asyncio.sleep(0.2)), WorkDone)
        done_early = stream.watch(asyncio.ensure_future(asyncio.sleep(0)), WorkDone)
        await asyncio.sleep(0.05)
        assert [type(i) for i in stream.pending()] == [WorkDone]
        stream.forget(done_early)
        stream.forget(late)
        await asyncio.sleep(0.5)
        assert stream.pending() == []

    run(main())


def test_speech_nobody_listened_for_is_bounded_and_keys_are_kept() -> None:
    stream = InputStream()
    stream.push(Digit("1", 0.0))
    for n in range(MAX_QUEUED * 2):
        stream.push(SpeechStarted(t=float(n)))
    queued = stream.pending()
    assert len(queued) == MAX_QUEUED and queued[0] == Digit("1", 0.0)
    assert queued[-1] == SpeechStarted(t=float(MAX_QUEUED * 2 - 1))  # the newest are kept


KEYS_FLOW = """
    async def main(call):
        await call.answer()
        pin = await call.gather(max_digits=2, terminator="#", final_timeout=0, first_digit_timeout=5,
                                inter_digit_timeout=3, retries=0)
        call.vars["pin"] = [pin.status, pin.digits, pin.reason]
        menu = await call.menu(prompt="hello.wav", choices=["1", "2"], timeout=5, retries=0)
        call.vars["menu"] = [menu.status, menu.choice, menu.reason]
        played = await call.play("long.wav", barge_in=False)
        call.vars["play"] = [played.completed, played.interrupted_by]
        first = await call.gather(max_digits=1, first_digit_timeout=5, retries=0)
        second = await call.gather(prompt="hello.wav", max_digits=1, first_digit_timeout=5, retries=0)
        call.vars["typed_ahead"] = [first.digits, second.digits]
        await call.hangup()
"""


async def test_late_terminator_type_ahead_and_unread_keys_over_the_emulator(tmp_path: Path) -> None:
    write_tone(tmp_path / "hello.wav", 0.3)
    write_tone(tmp_path / "long.wav", 1.5)
    flow = tmp_path / "keys.py"
    flow.write_text(textwrap.dedent(KEYS_FLOW).lstrip())
    async with FlowHarness(flow, ring_seconds=0.1) as h:
        callid, call = await h.place_call()
        assert await until_listening(call, 10)
        await h.emulator.send_dtmf(callid, "12")  # max_digits: the gather ends at the 2
        seen = call.listen_count
        assert await until_next_listen(call, seen, 10)
        # The "then press #" comes after the gather returned: it belongs to it, neither cutting
        # the menu's prompt nor making the menu a no_match.
        await h.emulator.send_dtmf(callid, "#1")
        for _ in range(500):
            if "long.wav" in [Path(p).name for p in call.call_record.prompts]:
                break
            await asyncio.sleep(0.01)
        # Keys typed over a prompt stay queued: the next gather takes both and decides on the
        # first; the one it did not use goes back, read first by the gather after it.
        await h.emulator.send_dtmf(callid, "34")
        record = await asyncio.wait_for(h.record_of(call), 20)
    assert call.vars["pin"] == ["match", "12", "max_digits"]
    assert call.vars["menu"] == ["match", "1", "max_digits"]
    assert call.vars["play"] == [True, None]
    assert call.vars["typed_ahead"] == ["3", "4"]
    assert record.digits == ["12", "1", "3", "4"]

def test_a_caller_keying_with_nobody_gathering_cannot_grow_the_queue_without_bound() -> None:
    stream = InputStream()
    stream.push(SpeechStarted(t=0.0))
    for n in range(MAX_QUEUED * 4):
        stream.push(Digit(str(n % 10), float(n)))
    queued = stream.pending()
    assert len(queued) == MAX_QUEUED
    assert SpeechStarted(t=0.0) not in queued  # stale speech goes first
    assert queued[0] == Digit(str((MAX_QUEUED * 3) % 10), float(MAX_QUEUED * 3))  # then the oldest keys
    assert queued[-1] == Digit(str((MAX_QUEUED * 4 - 1) % 10), float(MAX_QUEUED * 4 - 1))
