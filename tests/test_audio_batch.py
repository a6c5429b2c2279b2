"""InboundBatch: caller audio of many calls gathered in one loop turn and analysed together."""

from __future__ import annotations

import asyncio

from ivr.audio.dtmf import generate_dtmf
from ivr.audio.frames import array_to_pcm
from ivr.audio.pipeline import DigitDetected, InboundProcessor
from ivr.call.audio_batch import InboundBatch, shared_batch


async def test_each_call_gets_its_own_events_and_two_blocks_of_one_call_stay_in_order() -> None:
    first, second = (array_to_pcm(generate_dtmf(d, 80, 80, amplitude=0.3)) for d in "56")
    batch = InboundBatch()
    procs = [InboundProcessor(), InboundProcessor()]
    got: dict[int, list] = {0: [], 1: []}
    # call 0's audio comes in two pieces within the same loop turn; call 1 only hears silence
    batch.add(procs[0], first, got[0].extend)
    batch.add(procs[1], bytes(len(first)), got[1].extend)
    batch.add(procs[0], second, got[0].extend)
    assert got == {0: [], 1: []}  # nothing is analysed before the next loop turn
    await asyncio.sleep(0)
    assert [e.digit for e in got[0] if isinstance(e, DigitDetected)] == ["5", "6"]
    assert got[1] == []


async def test_a_failing_handler_does_not_stop_the_other_calls() -> None:
    batch = InboundBatch()
    heard: list[str] = []

    def broken(events: list) -> None:
        raise RuntimeError("a bug in one call")

    tones = array_to_pcm(generate_dtmf("7", 80, 80, amplitude=0.3))
    batch.add(InboundProcessor(), tones, broken)
    batch.add(InboundProcessor(), tones, lambda events: heard.extend(e.digit for e in events if isinstance(e, DigitDetected)))
    await asyncio.sleep(0)
    assert heard == ["7"]


async def test_one_batch_per_event_loop() -> None:
    assert shared_batch() is shared_batch()


async def test_a_big_batch_is_analysed_in_turns_with_other_work_in_between() -> None:
    # After a stall every call's audio is read at once: analysed in one go it would hold up
    # the outbound pacers for tens of ms, so it goes MAX_CALLS_PER_TURN calls per loop turn.
    from ivr.call.audio_batch import MAX_CALLS_PER_TURN

    batch = InboundBatch()
    order: list[str] = []
    n = 2 * MAX_CALLS_PER_TURN + 10
    done = asyncio.get_running_loop().create_future()
    silence = bytes(640)

    def handler(events: list) -> None:
        order.append("call")
        if order.count("call") == n:
            done.set_result(None)

    for _ in range(n):
        batch.add(InboundProcessor(), silence, handler)
    asyncio.get_running_loop().call_soon(order.append, "other")  # e.g. a pacer that fell due
    await asyncio.wait_for(done, 2)
    assert order.index("other") == MAX_CALLS_PER_TURN  # after the first turn's calls, before the rest
    assert order.count("call") == n  # every call analysed once
