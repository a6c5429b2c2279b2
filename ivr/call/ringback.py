"""What the caller hears while a transfer rings: a ringback tone, the flow's hold audio, or nothing.

3CX's own IVR example plays a progress tone on the stream while it awaits ``routeto``: the
route point's leg keeps the call (and its streams) until the destination answers, so the
caller would otherwise hear silence for the whole ring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any, Self

import numpy as np

from ivr.call.results import CallHangup

log = logging.getLogger("ivr.call")
RATE = 8000
TONE = "tone"
NONE = "none"


@lru_cache(maxsize=1)
def ringback_tone() -> np.ndarray:
    """One cadence of the North American ringback: 440 + 480 Hz for 2 s, then 4 s of silence."""
    t = np.arange(2 * RATE) / RATE
    on = 0.2 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t))
    ramp = np.minimum(1.0, np.minimum(np.arange(len(t)), np.arange(len(t))[::-1]) / 80)  # 10 ms: no clicks
    pcm = np.concatenate([on * ramp, np.zeros(4 * RATE)])
    out = (pcm * 32767).astype(np.int16)
    out.setflags(write=False)
    return out


class Ringback:
    """Plays ``play_once`` over and over until stopped: ``async with Ringback(...):``.

    ``play_once`` plays one round (the tone's cadence, or the hold prompt) and returns when it
    has been handed to the pacer; ``cut`` stops what was already queued.
    """

    def __init__(self, play_once: Callable[[], Awaitable[Any]] | None, cut: Callable[[], None]) -> None:
        self._play_once = play_once
        self._cut = cut
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        if self._play_once is not None:
            self._task = asyncio.ensure_future(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        self._cut()  # what the pacer still holds must not play over the next prompt

    async def _loop(self) -> None:
        assert self._play_once is not None
        try:
            while True:
                played = await self._play_once()
                if getattr(played, "interrupted_by", None) == "hangup":
                    return  # the leg is gone (delivered, or the caller left)
                await asyncio.sleep(0)  # a zero-length round must not spin the loop
        except asyncio.CancelledError:
            raise
        except CallHangup:
            return
        except Exception as exc:  # noqa: BLE001 - the hold audio failed (TTS down): the transfer goes on in silence
            log.warning("ringback stopped: %s", exc)
