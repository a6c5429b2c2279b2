"""``SharedTick``: one timer per period runs the media callbacks of every call in the process.

Hundreds of calls each sleeping on their own timer cost a timer object, heap operations and
a loop iteration per call per frame. Callbacks given to a ``SharedTick`` share one timer on a
grid of ``period`` seconds (multiples of ``period`` on the loop clock): each runs from the
timer itself at the first grid point at or after the time it asked for, so a frame sent or a
block of caller audio read costs no future and no task wake-up. Calls are batched in time -
the loop wakes once per grid point for all of them - at the price of up to one ``period`` of
lateness, never earliness. No timer runs while nothing is scheduled.

Callbacks given with ``first=True`` (the outbound pacers) run before the others of the same
grid point: a frame's send time then does not depend on how many calls' caller audio is read
in that tick, only on how late the tick itself is.

Recurring callbacks (each call's inbound poll, every 40 ms) take a phase from :meth:`spread`
and reschedule with :meth:`next_on_phase`: they fall evenly on the grid points of a period,
and stay there after the loop fell behind, rather than all running (and all their audio being
analysed) in the same grid point.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class SharedTick:
    """Run callbacks on a shared grid of ``period`` seconds with a single timer."""

    def __init__(self, period: float) -> None:
        if period <= 0:
            raise ValueError(f"SharedTick: period must be > 0 s, got {period}")
        self.period = period
        # grid index -> its calls; the "first" ones in their own table, run before the others
        self._slots: dict[int, list[tuple[Callable[[Any], None], Any]]] = {}
        self._first_slots: dict[int, list[tuple[Callable[[Any], None], Any]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot: int | None = None
        self._firing = False
        self._phases_given = 0

    @property
    def waiting(self) -> int:
        """Callbacks not yet run."""
        return sum(len(w) for w in self._slots.values()) + sum(len(w) for w in self._first_slots.values())

    def call_at(self, when: float, callback: Callable[[Any], None], arg: Any = None, *, first: bool = False) -> None:
        """Run ``callback(arg)`` from the timer at the first grid point at or after ``when``;
        with ``first``, before the callbacks of that grid point given without it.

        No handle: a caller that changes its mind ignores the call (e.g. by a token in ``arg``).
        An exception in the callback is logged and does not stop the other callbacks."""
        slot = math.ceil(when / self.period - 1e-9)  # a grid time computed in floats is that grid point
        table = self._first_slots if first else self._slots
        calls = table.get(slot)
        if calls is not None:
            calls.append((callback, arg))
            return
        table[slot] = [(callback, arg)]
        if self._firing:
            return  # _fire arms the timer for the earliest slot when it is done
        if self._timer_slot is None or slot < self._timer_slot:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_slot = slot
            self._timer = asyncio.get_running_loop().call_at(slot * self.period, self._fire)

    def _slots_per(self, every: float) -> int:
        return max(1, round(every / self.period))

    def spread(self, every: float) -> int:
        """A phase for a callback that recurs every ``every`` seconds (rounded to whole grid
        points): round-robin over the grid points of one period, so such callbacks share the
        grid evenly whenever their calls happened to start."""
        self._phases_given += 1
        return self._phases_given % self._slots_per(every)

    def next_on_phase(self, now: float, every: float, phase: int) -> float:
        """The first grid time after ``now`` that is ``phase`` grid points into a period of
        ``every``: the next due time of a recurring callback, missed periods skipped."""
        n = self._slots_per(every)
        slot = math.floor(now / self.period + 1e-9)
        return (phase + ((slot - phase) // n + 1) * n) * self.period

    def _fire(self) -> None:
        assert self._timer_slot is not None
        # Every grid point passed by now, not only the one the timer was armed for: a loop
        # that fell behind (a long callback, a young collection) catches up in one go, all
        # pacers first, instead of one grid point per loop turn behind the other work.
        due = max(self._timer_slot, math.floor(asyncio.get_running_loop().time() / self.period))
        self._timer = self._timer_slot = None
        self._firing = True
        try:
            for table in (self._first_slots, self._slots):
                for slot in [s for s in table if s <= due]:
                    for callback, arg in table.pop(slot):
                        try:
                            callback(arg)
                        except Exception:  # one stream's bug must not stop every other call's audio
                            log.exception("tick callback %r failed", callback)
        finally:
            self._firing = False
        if self._slots or self._first_slots:
            nxt = min(min(table) for table in (self._first_slots, self._slots) if table)
            self._timer_slot = nxt
            self._timer = asyncio.get_running_loop().call_at(nxt * self.period, self._fire)
