"""``SharedTick``: one timer per period wakes every waiter of the process.

Hundreds of calls each sleeping on their own timer cost a timer object, heap operations and
a loop iteration per call per frame. Waiters of a ``SharedTick`` share one timer on a grid of
``period`` seconds (multiples of ``period`` on the loop clock): each gets a plain future,
resolved at the first grid point at or after the time it asked for. Waits are batched in
time across calls - the loop wakes once per grid point for all of them - at the price of up
to one ``period`` of lateness, never earliness. No timer runs while nobody waits.

The media hot paths use :meth:`SharedTick.call_at` instead: a plain callback run from the
timer itself, so a frame sent or a block of caller audio read costs no future and no task
wake-up (hundreds of calls x 50 frames a second).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class SharedTick:
    """Resolve waits on a shared grid of ``period`` seconds with a single timer."""

    def __init__(self, period: float) -> None:
        if period <= 0:
            raise ValueError(f"SharedTick: period must be > 0 s, got {period}")
        self.period = period
        # grid index -> its waiters: futures, or (callback, argument) pairs
        self._slots: dict[int, list[Any]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot: int | None = None
        self._firing = False

    @property
    def waiting(self) -> int:
        """Waiters not yet woken."""
        return sum(len(w) for w in self._slots.values())

    def wait(self) -> asyncio.Future[None]:
        """A future resolved at the next grid point (strictly after now)."""
        loop = asyncio.get_running_loop()
        return self._add(loop, math.floor(loop.time() / self.period) + 1)

    def at(self, when: float) -> asyncio.Future[None]:
        """A future resolved at the first grid point at or after loop time ``when``.

        Await it; cancelling it (its task was cancelled) affects no other waiter.
        """
        loop = asyncio.get_running_loop()
        return self._add(loop, math.ceil(when / self.period))

    def call_at(self, when: float, callback: Callable[[Any], None], arg: Any = None) -> None:
        """Run ``callback(arg)`` from the timer at the first grid point at or after ``when``.

        No handle: a caller that changes its mind ignores the call (e.g. by a token in ``arg``).
        An exception in the callback is logged and does not stop the other callbacks."""
        loop = asyncio.get_running_loop()
        self._insert(loop, math.ceil(when / self.period), (callback, arg))

    def _add(self, loop: asyncio.AbstractEventLoop, slot: int) -> asyncio.Future[None]:
        fut = loop.create_future()
        self._insert(loop, slot, fut)
        return fut

    def _insert(self, loop: asyncio.AbstractEventLoop, slot: int, item: Any) -> None:
        waiters = self._slots.get(slot)
        if waiters is not None:
            waiters.append(item)
            return
        self._slots[slot] = [item]
        if self._firing:
            return  # _fire arms the timer for the earliest slot when it is done
        if self._timer_slot is None or slot < self._timer_slot:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_slot = slot
            self._timer = loop.call_at(slot * self.period, self._fire)

    def _fire(self) -> None:
        due = self._timer_slot
        self._timer = self._timer_slot = None
        assert due is not None
        self._firing = True
        try:
            for slot in [s for s in self._slots if s <= due]:
                for item in self._slots.pop(slot):
                    if type(item) is tuple:
                        callback, arg = item
                        try:
                            callback(arg)
                        except Exception:  # one stream's bug must not stop every other call's audio
                            log.exception("tick callback %r failed", callback)
                    elif not item.done():  # a cancelled waiter is skipped
                        item.set_result(None)
        finally:
            self._firing = False
        if self._slots:
            nxt = min(self._slots)
            self._timer_slot = nxt
            self._timer = asyncio.get_running_loop().call_at(nxt * self.period, self._fire)
