"""A virtual monotonic clock for tests of sans-I/O timer code (no sleeping)."""

from __future__ import annotations

import math


class VirtualClock:
    """A clock that only moves when told to.

    ``clock.time()`` (or ``clock()``) reads it like ``loop.time()``; :meth:`advance` and
    :meth:`advance_to` move it forward. It never goes backwards, so code that checks for
    monotonic time behaves as it would on a real loop.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = self._finite(start, "start")

    @staticmethod
    def _finite(value: float, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"VirtualClock {what}: expected a finite number of seconds, got {value!r}")
        return float(value)

    def time(self) -> float:
        """The current virtual time in seconds."""
        return self._now

    __call__ = time

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0); returns the new time."""
        seconds = self._finite(seconds, "advance")
        if seconds < 0:
            raise ValueError(f"VirtualClock advance: cannot go back in time ({seconds:g} s)")
        self._now += seconds
        return self._now

    def advance_to(self, when: float) -> float:
        """Move forward to ``when`` (must not be in the past); returns the new time."""
        when = self._finite(when, "advance_to")
        if when < self._now:
            raise ValueError(f"VirtualClock advance_to: {when:g} is before now ({self._now:g})")
        self._now = when
        return self._now
