"""Sentence-by-sentence TTS streaming with one sentence of look-ahead.

While the consumer plays sentence *n*, sentence *n+1* is already being synthesized, so the
gap between sentences is hidden and the first audio arrives after one sentence's work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np

from .text import split_sentences


async def stream_sentences(text: str, synth: Callable[[str], Awaitable[np.ndarray]]) -> AsyncIterator[np.ndarray]:
    """Yield ``await synth(sentence)`` for each sentence of ``text``, prefetching the next one.

    Closing the generator early cancels the look-ahead task.
    """
    sentences = split_sentences(text)
    if not sentences:
        return
    cur: asyncio.Task = asyncio.ensure_future(synth(sentences[0]))
    nxt: asyncio.Task | None = cur
    try:
        for following in [*sentences[1:], None]:
            nxt = asyncio.ensure_future(synth(following)) if following is not None else None
            chunk = await cur
            if len(chunk):
                yield chunk
            if nxt is not None:
                cur = nxt
    finally:
        if nxt is not None and not nxt.done():
            nxt.cancel()
            await asyncio.gather(nxt, return_exceptions=True)
