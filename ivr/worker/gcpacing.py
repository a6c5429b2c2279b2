"""``PacedCollector``: full garbage collections when the worker chooses, with the audio topped up.

A full collection of CPython's cycle collector stops the process while it walks every tracked
object: every call's audio stops with it. Left to itself, Python starts one whenever enough
objects have survived (calls coming and going) - at 200 calls on the benchmark VM they took
30-110 ms, more than the slack the pacers keep at the PBX, so every caller heard the same gap.

Here the worker takes over the oldest generation (young collections stay automatic; they take
a few ms): start-up objects are frozen out of the collector's sight once, automatic full
collections are switched off, and every ``interval`` seconds the collector first tops up every
outbound stream (the PBX then holds up to lead + top-up) and then collects. Garbage in
reference cycles waits at most ``interval`` seconds to be freed. Each pause is measured
(``ivr_gc_pause_seconds``).

The stall - topping up every stream, then the collection - grows with the calls: on the
benchmark VM 30-50 ms at 200 calls, 125 ms at 500. So the top-up is sized for it: the stall
per stream of the last collections (a pessimistic guess before the first one) times the
streams now, with a margin, never below ``top_up_ms`` and never past ``MAX_AHEAD_MS`` ahead
in all (the 3CX example's own bound).
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
MAX_AHEAD_MS = 500  # lead + top-up: what 3CX's own example stays within
# Stall per stream assumed before a collection has been measured with this many streams:
# twice the 0.25 ms measured on the 2-core benchmark VM at 300-500 calls.
FIRST_GUESS_PER_STREAM_S = 0.0005
MEASURED_FROM_STREAMS = 20  # fewer: the fixed part of a collection dominates the ratio
MARGIN = 1.25


class PacedCollector:
    """Runs the full collections of the process; :meth:`start` once the worker has loaded."""

    def __init__(self, top_up: Callable[[float], int], interval: float = 30.0, top_up_ms: int = 80,
                 registry: Any = None, slack_ms: int = 40, *, streams: Callable[[], int] | None = None,
                 lead_ms: int = 80) -> None:
        """``top_up(extra_s)`` tops up every outbound stream and returns how many it reached
        (:meth:`ivr.pbx.PbxClient.top_up_outbound`); ``streams()`` says how many there are now
        (None: always ``top_up_ms``); ``top_up_ms``: the least top-up; ``slack_ms``: the audio
        the PBX holds at least at any time without a top-up (the pacers' lead minus one batch);
        ``lead_ms``: the pacers' lead (lead + top-up stays within MAX_AHEAD_MS)."""
        if interval <= 0 or top_up_ms < 0:
            raise ValueError(f"PacedCollector: interval must be > 0 s and top_up_ms >= 0, got {interval}, {top_up_ms}")
        self._top_up = top_up
        self._streams = streams
        self.interval = interval
        self.top_up_s = top_up_ms / 1000
        self.max_top_up_s = max(self.top_up_s, (MAX_AHEAD_MS - lead_ms) / 1000)
        self.slack_s = slack_ms / 1000
        self._per_stream: list[float] = []  # stall per stream of the last measured collections
        self._saved: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self.pauses: list[float] = []  # the last few pauses (s), newest last
        self._histogram = None
        if registry is not None:
            from prometheus_client import Histogram

            self._histogram = Histogram(
                "ivr_gc_pause_seconds", "Full garbage collections: how long each stopped the process",
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

    def top_up_for(self, streams: int) -> float:
        """Seconds of audio to send ahead before a collection with ``streams`` streams."""
        per_stream = max(self._per_stream) if self._per_stream else FIRST_GUESS_PER_STREAM_S
        needed = MARGIN * per_stream * streams - self.slack_s  # the PBX holds slack + top-up
        return min(self.max_top_up_s, max(self.top_up_s, needed))

    def collect(self) -> float:
        """Top up every stream's audio, then run a full collection; returns its pause (s)."""
        extra = self.top_up_for(self._streams()) if self._streams is not None else self.top_up_s
        started = time.perf_counter()
        streams = self._top_up(extra)
        collecting = time.perf_counter()
        gc.collect()
        ended = time.perf_counter()
        pause, stall = ended - collecting, ended - started  # the audio stood still for the stall
        self.pauses = [*self.pauses, pause][-20:]
        if streams >= MEASURED_FROM_STREAMS:
            self._per_stream = [*self._per_stream, stall / streams][-3:]
        if self._histogram is not None:
            self._histogram.observe(pause)
        if stall > extra + self.slack_s:  # it outlasted the audio queued: callers heard it
            log.warning("full garbage collection stopped the audio for %.0f ms (%d streams topped up by %.0f ms)",
                        stall * 1000, streams, extra * 1000)
        return pause

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.collect()
            except Exception:  # never let the collector's task die: full collections would stop
                log.exception("paced garbage collection failed")
