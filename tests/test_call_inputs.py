"""The call's one input stream (ivr/call/inputs.py): what a wait gets, what stays queued for
the next one, deadlines, sticky hang-up, and the ends of watched work. On the virtual-time
loop (ivr.testing.clock), so deadlines cost no real time."""

from __future__ import annotations

import asyncio

from ivr.audio.vad import SpeechStarted
from ivr.call.inputs import HUNG_UP, MAX_QUEUED, Digit, HungUp, InputStream, PromptDone, WorkDone, stop
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
