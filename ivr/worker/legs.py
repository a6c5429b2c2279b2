"""The worker's call legs: one object per participant it knows on its route points.

A leg is keyed by ``(route point, participant id)`` and carries everything the worker keeps
about it: its state, the keys pressed before its call started, the flow a dial asked for,
the futures of whoever waits on it, a checkpoint a previous owner left, its task and its
``Call``. The registry drops a leg once the PBX removed it and no task of ours runs for it.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ivr.call import Call
    from ivr.call.record import CallRecord
    from ivr.cluster.checkpoints import Checkpoint

LegKey = tuple[str, int]


class LegState(enum.Enum):
    OFFERED = "offered"  # seen (keys pressed, a checkpoint left) but no task of ours yet
    DIALLING = "dialling"  # we dialled it: its flow starts when the other side answers
    CLAIMED = "claimed"  # a task runs for it (its flow's, or the overflow's); no Call yet
    RUNNING = "running"  # its Call exists and its flow runs
    ENDED = "ended"  # our task is done with it; it stays claimed until the PBX removes it


# The moves the worker makes. DIALLING -> OFFERED: a dial gave up on a leg still there.
_MOVES: dict[LegState, frozenset[LegState]] = {
    LegState.OFFERED: frozenset({LegState.DIALLING, LegState.CLAIMED}),
    LegState.DIALLING: frozenset({LegState.CLAIMED, LegState.OFFERED}),
    LegState.CLAIMED: frozenset({LegState.RUNNING, LegState.ENDED}),
    LegState.RUNNING: frozenset({LegState.ENDED}),
    LegState.ENDED: frozenset(),
}


class IllegalLegMove(RuntimeError):
    """A move the worker never makes: a bug, not a PBX event."""


@dataclass(frozen=True)
class Dialled:
    """A call this worker dialled: the flow to run when it is answered, and how."""

    flow: Any  # a LoadedFlow
    params: dict[str, Any]
    keep_variables: bool


@dataclass(eq=False)
class Leg:
    route_point: str
    participant_id: int
    state: LegState = LegState.OFFERED
    early_digits: list[str] = field(default_factory=list)  # keys pressed before its Call existed
    dialled: Dialled | None = None  # set by dial(): run this flow once answered
    answered: asyncio.Future[bool] | None = None  # dial() waits: True when claimed, False if removed
    record_waiter: asyncio.Future[CallRecord] | None = None  # dial() waits for the call's record
    checkpoint: Checkpoint | None = None  # a previous owner's, when the worker took the calls over
    task: asyncio.Task[None] | None = None
    call: Call | None = None
    removed: bool = False  # the PBX removed it while our task still ran

    @property
    def key(self) -> LegKey:
        return (self.route_point, self.participant_id)

    @property
    def claimed(self) -> bool:
        return self.state in (LegState.CLAIMED, LegState.RUNNING, LegState.ENDED)

    def move(self, to: LegState) -> None:
        if to not in _MOVES[self.state]:
            raise IllegalLegMove(f"leg {self.route_point}/{self.participant_id}: {self.state.value} -> {to.value}")
        self.state = to


class Legs:
    """The registry: legs by key, and how many have a running Call (for ``max_calls``)."""

    def __init__(self) -> None:
        self._by_key: dict[LegKey, Leg] = {}
        self.running = 0

    def get(self, key: LegKey) -> Leg | None:
        return self._by_key.get(key)

    def get_or_add(self, route_point: str, participant_id: int) -> Leg:
        key = (route_point, participant_id)
        leg = self._by_key.get(key)
        if leg is None:
            leg = self._by_key[key] = Leg(route_point, participant_id)
        return leg

    def forget(self, leg: Leg) -> None:
        if self._by_key.get(leg.key) is leg:
            del self._by_key[leg.key]

    def attach(self, leg: Leg, call: Call) -> None:
        """The leg's flow starts: its Call counts against max_calls from now."""
        leg.move(LegState.RUNNING)
        leg.call = call
        self.running += 1

    def detach(self, leg: Leg) -> None:
        """The leg's Call is over (the record is still to be written)."""
        leg.move(LegState.ENDED)
        leg.call = None
        self.running -= 1

    def calls(self) -> dict[LegKey, Call]:
        return {key: leg.call for key, leg in self._by_key.items() if leg.call is not None}

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Leg]:
        return iter(list(self._by_key.values()))

    def __contains__(self, key: object) -> bool:
        return key in self._by_key
