"""``SharedTick``: one timer per period runs the media callbacks of every call in the process.

Hundreds of calls each sleeping on their own timer cost a timer object, heap operations and
a loop iteration per call per frame. Callbacks given to a ``SharedTick`` share one timer on a
grid of ``period`` seconds (multiples of ``period`` on the loop clock): each runs from the
timer itself at the first grid point at or after the time it asked for, so a frame sent or a
block of caller audio read costs no future and no task wake-up. Calls are batched in time -
the loop wakes once per grid point for all of them - at the price of up to one ``period`` of
lateness, never earliness. No timer runs while nothing is scheduled.
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
        self._slots: dict[int, list[tuple[Callable[[Any], None], Any]]] = {}  # grid index -> its calls
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot: int | None = None
        self._firing = False

    @property
    def waiting(self) -> int:
        """Callbacks not yet run."""
        return sum(len(w) for w in self._slots.values())

    def call_at(self, when: float, callback: Callable[[Any], None], arg: Any = None) -> None:
        """Run ``callback(arg)`` from the timer at the first grid point at or after ``when``.

        No handle: a caller that changes its mind ignores the call (e.g. by a token in ``arg``).
        An exception in the callback is logged and does not stop the other callbacks."""
        slot = math.ceil(when / self.period)
        calls = self._slots.get(slot)
        if calls is not None:
            calls.append((callback, arg))
            return
        self._slots[slot] = [(callback, arg)]
        if self._firing:
            return  # _fire arms the timer for the earliest slot when it is done
        if self._timer_slot is None or slot < self._timer_slot:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_slot = slot
            self._timer = asyncio.get_running_loop().call_at(slot * self.period, self._fire)

    def _fire(self) -> None:
        due = self._timer_slot
        self._timer = self._timer_slot = None
        assert due is not None
        self._firing = True
        try:
            for slot in [s for s in self._slots if s <= due]:
                for callback, arg in self._slots.pop(slot):
                    try:
                        callback(arg)
                    except Exception:  # one stream's bug must not stop every other call's audio
                        log.exception("tick callback %r failed", callback)
        finally:
            self._firing = False
        if self._slots:
            nxt = min(self._slots)
            self._timer_slot = nxt
            self._timer = asyncio.get_running_loop().call_at(nxt * self.period, self._fire)
