"""``SharedTick``: one timer per period wakes every waiter of the process.

Hundreds of calls each sleeping on their own timer cost a timer object, two heap operations
and a wake-up per call per period. Waiters of a ``SharedTick`` share one timer: each gets a
plain future that the tick resolves at the next multiple of ``period`` on the loop clock, so
work that can wait for the next boundary (reading a block of caller audio) is batched in time
across calls. No timer runs while nobody waits.
"""

from __future__ import annotations

import asyncio
import math


class SharedTick:
    """Resolve every pending :meth:`wait` at the next multiple of ``period`` seconds."""

    def __init__(self, period: float) -> None:
        if period <= 0:
            raise ValueError(f"SharedTick: period must be > 0 s, got {period}")
        self.period = period
        self._waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        """Waiters for the next tick."""
        return len(self._waiters)

    def wait(self) -> asyncio.Future[None]:
        """A future resolved at the next tick. Await it; cancelling it affects no other waiter."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiters.append(fut)
        if self._timer is None:
            at = (math.floor(loop.time() / self.period) + 1) * self.period
            self._timer = loop.call_at(at, self._fire)
        return fut

    def _fire(self) -> None:
        self._timer = None
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():  # a cancelled waiter (its task was cancelled) is skipped
                fut.set_result(None)
