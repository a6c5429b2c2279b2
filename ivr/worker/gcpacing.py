"""``PacedCollector``: full garbage collections when the worker chooses, with the audio topped up.

A full collection of CPython's cycle collector stops the process while it walks every tracked
object: every call's audio stops with it. Left to itself, Python starts one whenever enough
objects have survived (calls coming and going) - at 200 calls on the benchmark VM they took
30-110 ms, more than the slack the pacers keep at the PBX, so every caller heard the same gap.

Here the worker takes over the oldest generation (young collections stay automatic; they take
a few ms): start-up objects are frozen out of the collector's sight once, automatic full
collections are switched off, and every ``interval`` seconds the collector first tops up every
outbound stream by ``top_up_ms`` (the PBX then holds up to lead + top-up) and then collects.
Garbage in reference cycles waits at most ``interval`` seconds to be freed. Each pause is
measured (``ivr_gc_pause_seconds``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

NEVER = 2**31 - 1  # a gen-2 threshold the count of gen-1 collections never reaches


class PacedCollector:
    """Runs the full collections of the process; :meth:`start` once the worker has loaded."""

    def __init__(self, top_up: Callable[[float], int], interval: float = 30.0, top_up_ms: int = 80,
                 registry: Any = None, slack_ms: int = 40) -> None:
        """``top_up(extra_s)`` tops up every outbound stream and returns how many it reached
        (:meth:`ivr.pbx.PbxClient.top_up_outbound`); ``slack_ms``: the audio the PBX holds at
        least at any time without a top-up (the pacers' lead minus one batch)."""
        if interval <= 0 or top_up_ms < 0:
            raise ValueError(f"PacedCollector: interval must be > 0 s and top_up_ms >= 0, got {interval}, {top_up_ms}")
        self._top_up = top_up
        self.interval = interval
        self.top_up_s = top_up_ms / 1000
        self.audible_s = (top_up_ms + slack_ms) / 1000  # a longer pause outlasts the audio queued
        self._saved: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self.pauses: list[float] = []  # the last few pauses (s), newest last
        self._histogram = None
        if registry is not None:
            from prometheus_client import Histogram

            self._histogram = Histogram(
                "ivr_gc_pause_seconds", "Full garbage collections: how long all audio stood still",
                buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64), registry=registry,
            )

    def start(self) -> None:
        """Freeze what is loaded, switch automatic full collections off, collect every interval."""
        gc.collect()
        gc.freeze()  # modules, flows, the PBX mirror: as old as the process, never scanned again
        self._saved = gc.get_threshold()
        gc.set_threshold(self._saved[0], self._saved[1], NEVER)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="paced-gc")

    def stop(self) -> None:
        """Give full collections back to Python, start-up objects included."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
            gc.unfreeze()

    def collect(self) -> float:
        """Top up every stream's audio, then run a full collection; returns its pause (s)."""
        streams = self._top_up(self.top_up_s)
        started = time.perf_counter()
        gc.collect()
        pause = time.perf_counter() - started
        self.pauses = (self.pauses + [pause])[-20:]
        if self._histogram is not None:
            self._histogram.observe(pause)
        if pause > self.audible_s:  # callers heard it
            log.warning("full garbage collection stopped the audio for %.0f ms (%d streams topped up by %.0f ms)",
                        pause * 1000, streams, self.top_up_s * 1000)
        return pause

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.collect()
            except Exception:  # never let the collector's task die: full collections would stop
                log.exception("paced garbage collection failed")
