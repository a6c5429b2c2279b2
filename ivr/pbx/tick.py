"""``SharedTick``: one timer per period wakes every waiter of the process.

Hundreds of calls each sleeping on their own timer cost a timer object, heap operations and
a loop iteration per call per frame. Waiters of a ``SharedTick`` share one timer on a grid of
``period`` seconds (multiples of ``period`` on the loop clock): each gets a plain future,
resolved at the first grid point at or after the time it asked for. Waits are batched in
time across calls - the loop wakes once per grid point for all of them - at the price of up
to one ``period`` of lateness, never earliness. No timer runs while nobody waits.
"""

from __future__ import annotations

import asyncio
import math


class SharedTick:
    """Resolve waits on a shared grid of ``period`` seconds with a single timer."""

    def __init__(self, period: float) -> None:
        if period <= 0:
            raise ValueError(f"SharedTick: period must be > 0 s, got {period}")
        self.period = period
        self._slots: dict[int, list[asyncio.Future[None]]] = {}  # grid index -> its waiters
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot: int | None = None

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

    def _add(self, loop: asyncio.AbstractEventLoop, slot: int) -> asyncio.Future[None]:
        fut = loop.create_future()
        waiters = self._slots.get(slot)
        if waiters is not None:
            waiters.append(fut)
            return fut
        self._slots[slot] = [fut]
        if self._timer_slot is None or slot < self._timer_slot:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_slot = slot
            self._timer = loop.call_at(slot * self.period, self._fire)
        return fut

    def _fire(self) -> None:
        due = self._timer_slot
        self._timer = self._timer_slot = None
        assert due is not None
        for slot in [s for s in self._slots if s <= due]:
            for fut in self._slots.pop(slot):
                if not fut.done():  # a cancelled waiter is skipped
                    fut.set_result(None)
        if self._slots:
            nxt = min(self._slots)
            self._timer_slot = nxt
            self._timer = asyncio.get_running_loop().call_at(nxt * self.period, self._fire)
