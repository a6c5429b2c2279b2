"""The worker's legs (ivr/worker/legs.py): the moves a leg may make, and that the registry
lets go of a leg once its call ends, whichever way it ends (real worker, real emulator)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import write_tone

from ivr.call.record import Outcome
from ivr.config import PbxSettings, Route, WorkerConfig
from ivr.emulator import Emulator, EmulatorConfig
from ivr.pbx.events import DtmfReceived, ParticipantUpdated, Resynced
from ivr.worker.legs import IllegalLegMove, Leg, Legs, LegState
from ivr.worker.runner import MAX_EARLY_DIGITS, Worker

SECRET = "test-secret"

OFFERED, DIALLING, CLAIMED, RUNNING, ENDED = (LegState.OFFERED, LegState.DIALLING, LegState.CLAIMED,
                                              LegState.RUNNING, LegState.ENDED)


# --- the state machine --------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    [CLAIMED, RUNNING, ENDED],  # a call in: its flow runs
    [CLAIMED, ENDED],  # overflowed (draining, max_calls), or failed before its Call existed
    [DIALLING, CLAIMED, RUNNING, ENDED],  # a call we dialled, answered
    [DIALLING, OFFERED, CLAIMED, RUNNING, ENDED],  # a dial gave up on it; it became a call in after all
])
def test_a_leg_makes_the_moves_the_worker_makes(path: list[LegState]) -> None:
    leg = Leg("800", 1)
    assert leg.state is OFFERED and not leg.claimed
    for to in path:
        leg.move(to)
        assert leg.state is to
    assert leg.claimed


@pytest.mark.parametrize("start, to", [
    ([], RUNNING),  # a Call only after a claim
    ([], ENDED),
    ([CLAIMED], CLAIMED),  # claimed twice: two flows for one caller
    ([CLAIMED], DIALLING),
    ([CLAIMED, RUNNING], CLAIMED),
    ([CLAIMED, RUNNING], OFFERED),
    ([DIALLING], RUNNING),  # a dialled leg's flow starts through its claim
    ([CLAIMED, RUNNING, ENDED], CLAIMED),  # an ended leg is never taken again
    ([CLAIMED, RUNNING, ENDED], ENDED),
])
def test_an_illegal_move_raises_and_leaves_the_leg_as_it_was(start: list[LegState], to: LegState) -> None:
    leg = Leg("800", 7)
    for step in start:
        leg.move(step)
    before = leg.state
    with pytest.raises(IllegalLegMove, match=f"leg 800/7: {before.value} -> {to.value}"):
        leg.move(to)
    assert leg.state is before


def test_the_registry_counts_running_calls_and_forgets_only_its_own_leg() -> None:
    legs = Legs()
    a = legs.get_or_add("800", 1)
    assert legs.get_or_add("800", 1) is a and len(legs) == 1
    a.move(CLAIMED)
    call: Any = object()
    legs.attach(a, call)
    assert legs.running == 1 and legs.calls() == {("800", 1): call} and a.state is RUNNING
    legs.detach(a)
    assert legs.running == 0 and legs.calls() == {} and a.state is ENDED and a.call is None
    stale = Leg("800", 1)
    legs.forget(stale)  # another object with the same key: not the registry's
    assert ("800", 1) in legs
    legs.forget(a)
    legs.forget(a)
    assert len(legs) == 0 and legs.get(("800", 1)) is None


# --- a leg is gone once its call ended ------------------------------------------------------------


def write_flow(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def flow_dir(tmp_path: Path) -> Path:
    write_tone(tmp_path / "hello.wav", 0.3)
    write_tone(tmp_path / "long.wav", seconds=1.5, freq=300)
    return tmp_path


@asynccontextmanager
async def worker_on(flow: Path, **settings: Any) -> AsyncIterator[tuple[Emulator, Worker]]:
    emu = Emulator(EmulatorConfig(client_secret=SECRET, ring_seconds=0.1, no_answer_timeout=1.0))
    async with emu.running():
        config = WorkerConfig(pbx=PbxSettings(url=emu.url, client_id="900", client_secret=SECRET),
                              routes=[Route(route_point="800", flow=str(flow))], records=None, **settings)
        worker = Worker(config)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(worker.ready.wait(), 10)
        try:
            yield emu, worker
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)


async def ended(worker: Worker, caller: str, seconds: float = 15) -> Any:
    """The record of ``caller``'s call, once written, and the registry once it let go of every leg."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        record = next((r for r in worker.completed if r.caller_number == caller), None)
        if record is not None and len(worker.legs) == 0:
            return record
        await asyncio.sleep(0.02)
    raise AssertionError(f"legs left: {[(leg.key, leg.state) for leg in worker.legs]}, records: "
                         f"{[(r.caller_number, r.outcome) for r in worker.completed]}")


async def running(worker: Worker) -> None:
    for _ in range(500):
        if worker.calls:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the call did not reach the worker")


async def test_the_leg_goes_when_the_caller_hangs_up(flow_dir: Path) -> None:
    flow = write_flow(flow_dir, "long.yaml", "steps:\n  - answer\n  - play: {files: [long.wav], loop: 20}\n")
    async with worker_on(flow) as (emu, worker):
        callid = await emu.place_call("+4930001", "800")
        await running(worker)
        await emu.hangup(callid)
        record = await ended(worker, "+4930001")
    assert record.outcome == Outcome.CALLER_HANGUP
    assert worker.legs.running == 0


async def test_the_leg_goes_when_the_flow_hangs_up(flow_dir: Path) -> None:
    flow = write_flow(flow_dir, "short.yaml", "steps:\n  - answer\n  - play: hello.wav\n  - hangup\n")
    async with worker_on(flow) as (emu, worker):
        await emu.place_call("+4930002", "800")
        record = await ended(worker, "+4930002")
    assert record.outcome == Outcome.IVR_HANGUP


async def test_the_leg_goes_when_the_call_is_transferred(flow_dir: Path) -> None:
    flow = write_flow(flow_dir, "xfer.yaml", "steps:\n  - answer\n  - transfer: {to: '101', timeout: 2}\n")
    async with worker_on(flow) as (emu, worker):
        await emu.place_call("+4930003", "800")
        record = await ended(worker, "+4930003")
    assert record.outcome == Outcome.TRANSFERRED and record.transferred_to == "101"


async def test_the_legs_go_when_a_drain_cuts_a_call_and_overflows_the_next(flow_dir: Path) -> None:
    flow = write_flow(flow_dir, "long.yaml", "steps:\n  - answer\n  - play: {files: [long.wav], loop: 100}\n")
    async with worker_on(flow, overflow="105") as (emu, worker):
        await emu.place_call("+4930004", "800")
        await running(worker)
        await worker.drain(0.2)  # the deadline passes: the call is cut; the dispatcher still runs
        cut = await ended(worker, "+4930004")
        await emu.place_call("+4930005", "800")  # draining: overflowed, never run
        overflowed = await ended(worker, "+4930005")
    assert cut.outcome == Outcome.DRAINED
    assert overflowed.outcome == Outcome.OVERFLOW and overflowed.transferred_to == "105"


async def test_the_legs_of_dialled_calls_go_answered_or_not(flow_dir: Path) -> None:
    flow = write_flow(flow_dir, "out.yaml", "steps:\n  - play: hello.wav\n  - hangup\n")
    async with worker_on(flow) as (emu, worker):
        emu.set_behaviour("102", "busy")
        answered = await asyncio.wait_for(worker.dial("+4930999888", str(flow), timeout=5), 15)
        await ended(worker, "+4930999888")
        busy = await asyncio.wait_for(worker.dial("102", str(flow), timeout=5), 15)
        await ended(worker, "+4930999888")  # nothing left of the busy one either
    assert answered.outcome == Outcome.IVR_HANGUP and answered.dial_status == "answered"
    assert busy.dial_status != "answered" and busy.outcome != Outcome.IVR_HANGUP


async def test_keys_that_overtake_the_first_upsert_reach_the_call(flow_dir: Path) -> None:
    # The PBX's DTMF event for a participant can come before its first Upsert: the key is kept
    # on the leg (offered, no task yet) and handed to the Call once its flow starts.
    flow = write_flow(flow_dir, "menu.yaml", """
        steps:
          - answer
          - menu:
              prompt: hello.wav
              timeout: 3
              choices:
                "2": [{set: {picked: two}}, hangup]
              on_no_input: [hangup]
    """)
    async with worker_on(flow) as (emu, worker):
        handle, seen = worker._handle, set()

        def keys_first(event: Any) -> None:
            if isinstance(event, ParticipantUpdated) and event.participant.id not in seen:
                seen.add(event.participant.id)
                handle(DtmfReceived(event.dn, event.participant.id, "2"))
                leg = worker.legs.get((event.dn, event.participant.id))
                assert leg is not None and leg.state is LegState.OFFERED and leg.early_digits == ["2"]
            handle(event)

        worker._handle = keys_first  # type: ignore[method-assign]
        await emu.place_call("+4930006", "800")
        record = await ended(worker, "+4930006")
    assert record.digits == ["2"] and record.outcome == Outcome.IVR_HANGUP
    assert [s.step for s in record.steps][:2] == ["answer", "menu"] and "set" in [s.step for s in record.steps]


async def test_keys_for_a_participant_the_pbx_never_names_are_bounded_and_forgotten_at_a_resync(flow_dir: Path) -> None:
    # A DTMF event for an id no Upsert ever names (a PBX glitch, or one missed Remove) made a
    # leg that stayed forever, its keys growing with every event.
    flow = write_flow(flow_dir, "hello.yaml", """
        steps:
          - answer
          - hangup
    """)
    async with worker_on(flow) as (_emu, worker):
        for _ in range(100):
            worker._handle(DtmfReceived("800", 4242, "5"))
        leg = worker.legs.get(("800", 4242))
        assert leg is not None and leg.state is LegState.OFFERED and len(leg.early_digits) == MAX_EARLY_DIGITS
        worker._handle(Resynced())
        assert worker.legs.get(("800", 4242)) is None
