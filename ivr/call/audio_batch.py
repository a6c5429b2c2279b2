"""``InboundBatch``: the caller audio of many calls analysed together, once per loop turn.

Inbound streams are polled from one shared timer, so dozens of calls hand over a block of
audio within the same timer callback. Analysed one by one, each block pays ~15 numpy calls
for DTMF whatever its size; gathered here and analysed by
:meth:`~ivr.audio.pipeline.InboundProcessor.process_many` right after (``call_soon``), their
DTMF windows go through one matrix product. Each call still gets exactly its own events.
(The analysis itself is pure numpy in ``ivr.audio``; this module is its asyncio side.)

At most ``MAX_CALLS_PER_TURN`` blocks are analysed per loop turn, the rest in the next ones:
after a stall every call's audio is read at once, and analysed in one go (~20 ms at 500
calls) it would keep the outbound pacers of the next grid points waiting.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Callable

from ivr.audio.pipeline import InboundEvent, InboundProcessor

log = logging.getLogger(__name__)

EventHandler = Callable[[list[InboundEvent]], None]

# Blocks analysed per loop turn: ~40 us each at 500 calls on the benchmark VM, so a turn of
# analysis stays near 2-3 ms; past ~50 the per-call numpy overhead is already amortised.
MAX_CALLS_PER_TURN = 64


class InboundBatch:
    """Collects ``(processor, pcm)`` during one loop turn; analyses them all in the next."""

    def __init__(self) -> None:
        self._pending: dict[InboundProcessor, tuple[bytes, EventHandler]] = {}
        self._scheduled = False

    def add(self, processor: InboundProcessor, pcm: bytes, on_events: EventHandler) -> None:
        """Queue ``pcm`` for ``processor``; ``on_events(events)`` is called with its events soon
        (in the next loop turn, from the event loop). ``pcm`` is kept, not copied."""
        entry = self._pending.get(processor)
        # Twice in one turn (rare): one block, in order.
        self._pending[processor] = (entry[0] + pcm, entry[1]) if entry is not None else (pcm, on_events)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if len(self._pending) <= MAX_CALLS_PER_TURN:
            pending, self._pending = self._pending, {}
            self._scheduled = False
        else:  # the oldest now, the rest next turn: timers that fell due (pacers) run in between
            keys = list(itertools.islice(self._pending, MAX_CALLS_PER_TURN))
            pending = {proc: self._pending.pop(proc) for proc in keys}
            asyncio.get_running_loop().call_soon(self._flush)
        items = [(proc, data) for proc, (data, _) in pending.items()]
        try:
            results = InboundProcessor.process_many(items)
        except Exception:  # a bug of ours: this block has no events; the next is analysed again
            # (not call by call: the block may be half taken in already, it would count twice)
            log.exception("batched caller-audio analysis failed")
            results = [[] for _ in items]
        for (_, handler), events in zip(pending.values(), results):
            try:
                handler(events)
            except Exception:
                log.exception("handling caller-audio events failed")


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, InboundBatch] = weakref.WeakKeyDictionary()


def shared_batch() -> InboundBatch:
    """The running loop's batch (one per event loop)."""
    loop = asyncio.get_running_loop()
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = InboundBatch()
    return batch
