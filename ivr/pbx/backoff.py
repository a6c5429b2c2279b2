"""Capped exponential backoff with jitter, shared by every retry loop of the client."""

from __future__ import annotations

import random


class Backoff:
    """Delays ``initial, 2*initial, 4*initial ...`` capped at ``cap``, each scaled by a random
    factor in ``[1 - jitter, 1 + jitter]`` so many clients do not retry in lockstep."""

    def __init__(self, initial: float, cap: float, jitter: float = 0.2, factor: float = 2.0) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError(f"backoff: need 0 < initial <= cap, got initial={initial} cap={cap}")
        if not 0 <= jitter < 1:
            raise ValueError(f"backoff: jitter must be in [0, 1), got {jitter}")
        self.initial = initial
        self.cap = cap
        self.jitter = jitter
        self.factor = factor
        self.attempts = 0

    def next(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        base = min(self.cap, self.initial * self.factor**self.attempts)
        self.attempts += 1
        return min(self.cap, base * random.uniform(1 - self.jitter, 1 + self.jitter))

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self.attempts = 0
