"""Sans-I/O playback queue: prompts in, 20 ms frames out, barge-in cuts.

The pacer asks :meth:`PlaybackQueue.next_frame` once per 20 ms tick. Prompts are kept as
the arrays given (shared, read-only prompt-cache arrays included) and sliced frame by frame,
so each tick is O(1) whatever the prompt length.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .frames import FRAME_MS, FRAME_SAMPLES, pcm_to_array


@dataclass(frozen=True)
class PlaybackFinished:
    """Item ``id`` played to its end."""

    id: int
    tag: object = None


@dataclass(frozen=True)
class PlaybackCut:
    """Item ``id`` was stopped by ``reason`` ("speech", "dtmf" or "clear") after ``played_ms``."""

    id: int
    tag: object
    reason: str
    played_ms: int


@dataclass
class _Item:
    id: int
    pcm: np.ndarray
    barge_in_speech: bool
    barge_in_dtmf: bool
    tag: object
    pos: int = 0


class PlaybackQueue:
    """FIFO of PCM items played out frame by frame, with barge-in rules per item."""

    def __init__(self, frame_samples: int = FRAME_SAMPLES) -> None:
        self.frame_samples = frame_samples
        self._items: deque[_Item] = deque()
        self._events: list[PlaybackFinished | PlaybackCut] = []
        self._next_id = 1
        self._ms_per_sample = FRAME_MS / FRAME_SAMPLES

    @property
    def busy(self) -> bool:
        """True while anything is playing or queued."""
        return bool(self._items)

    @property
    def current(self) -> int | None:
        """Id of the item now playing, or None."""
        return self._items[0].id if self._items else None

    def enqueue(self, pcm: np.ndarray | bytes, *, barge_in_speech: bool = True,
                barge_in_dtmf: bool = True, tag: object = None) -> int:
        """Queue int16 mono PCM (array or bytes) and return its item id. No copy is made."""
        if isinstance(pcm, (bytes, bytearray, memoryview)):
            pcm = pcm_to_array(pcm)
        pcm = np.asarray(pcm)
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise ValueError(f"PlaybackQueue.enqueue: expected 1-D int16 PCM, got {pcm.dtype} shape {pcm.shape}")
        item = _Item(self._next_id, pcm, barge_in_speech, barge_in_dtmf, tag)
        self._next_id += 1
        self._items.append(item)
        return item.id

    def next_frame(self) -> bytes | None:
        """Return the next 20 ms of PCM, or None when idle.

        An item's last partial frame is zero-padded (items never share a frame), and its
        PlaybackFinished is queued when that last frame is handed out.
        """
        while self._items:
            item = self._items[0]
            n = item.pcm.shape[0]
            if item.pos >= n:  # empty item: finished without a frame
                self._items.popleft()
                self._events.append(PlaybackFinished(item.id, item.tag))
                continue
            chunk = item.pcm[item.pos:item.pos + self.frame_samples]
            item.pos += chunk.shape[0]
            data = chunk.astype("<i2", copy=False).tobytes()
            if chunk.shape[0] < self.frame_samples:
                data += bytes(2 * (self.frame_samples - chunk.shape[0]))
            if item.pos >= n:
                self._items.popleft()
                self._events.append(PlaybackFinished(item.id, item.tag))
            return data
        return None

    def on_speech(self) -> list[int]:
        """Caller speech: cut every item (playing or queued) that allows speech barge-in."""
        return self._cut(lambda it: it.barge_in_speech, "speech")

    def on_digit(self) -> list[int]:
        """Caller DTMF: cut every item (playing or queued) that allows DTMF barge-in."""
        return self._cut(lambda it: it.barge_in_dtmf, "dtmf")

    def clear(self) -> list[int]:
        """Cut everything regardless of barge-in flags."""
        return self._cut(lambda it: True, "clear")

    def pop_events(self) -> list[PlaybackFinished | PlaybackCut]:
        """Return and forget the events since the last call, oldest first."""
        ev, self._events = self._events, []
        return ev

    def _cut(self, allows, reason: str) -> list[int]:
        keep: deque[_Item] = deque()
        cut: list[int] = []
        for item in self._items:
            if allows(item):
                cut.append(item.id)
                played = int(round(min(item.pos, item.pcm.shape[0]) * self._ms_per_sample))
                self._events.append(PlaybackCut(item.id, item.tag, reason, played))
            else:
                keep.append(item)
        self._items = keep
        return cut
