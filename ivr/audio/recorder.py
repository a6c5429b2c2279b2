"""Call recorder: caller and/or IVR audio to a WAV file with a JSON sidecar.

Tracks are aligned by frame count: the n-th caller frame and the n-th IVR frame are the same
20 ms of the call. Call :meth:`Recorder.add_ivr` once per pacer tick, passing ``None`` while
nothing plays, so IVR silence keeps its place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from .frames import FRAME_SAMPLES, SAMPLE_RATE, pcm_to_array

_MODES = ("caller", "ivr", "both")


class Recorder:
    """Accumulate 20 ms frames in memory, bounded by ``max_seconds`` (later frames dropped)."""

    def __init__(self, mode: str = "caller", max_seconds: float = 3600.0, sample_rate: int = SAMPLE_RATE) -> None:
        if mode not in _MODES:
            raise ValueError(f"Recorder: mode must be one of {_MODES}, got {mode!r}")
        if max_seconds <= 0:
            raise ValueError(f"Recorder: max_seconds must be > 0, got {max_seconds}")
        self.mode = mode
        self.sample_rate = sample_rate
        self.max_samples = int(max_seconds * sample_rate)
        self.truncated = False
        self._caller: list[np.ndarray] = []
        self._ivr: list[np.ndarray] = []
        self._n = {"caller": 0, "ivr": 0}

    def add_caller(self, frame: np.ndarray | bytes | None) -> None:
        """Append one caller frame (None = a silent frame)."""
        if self.mode != "ivr":
            self._add("caller", self._caller, frame)

    def add_ivr(self, frame: np.ndarray | bytes | None) -> None:
        """Append one IVR frame (None = nothing played this tick)."""
        if self.mode != "caller":
            self._add("ivr", self._ivr, frame)

    def _add(self, track: str, store: list[np.ndarray], frame: np.ndarray | bytes | None) -> None:
        if frame is None:
            frame = np.zeros(FRAME_SAMPLES * self.sample_rate // SAMPLE_RATE, dtype=np.int16)
        elif isinstance(frame, (bytes, bytearray, memoryview)):
            frame = pcm_to_array(frame)
        frame = np.asarray(frame)
        if frame.dtype != np.int16 or frame.ndim != 1:
            raise ValueError(f"Recorder.add_{track}: expected 1-D int16 frame, got {frame.dtype} shape {frame.shape}")
        room = self.max_samples - self._n[track]
        if room <= 0:
            self.truncated = True
            return
        if frame.shape[0] > room:
            frame, self.truncated = frame[:room], True
        store.append(frame.copy())  # the caller may reuse its buffer
        self._n[track] += frame.shape[0]

    @property
    def duration(self) -> float:
        """Seconds of audio that :meth:`to_array` returns."""
        if self.mode == "caller":
            n = self._n["caller"]
        elif self.mode == "ivr":
            n = self._n["ivr"]
        else:
            n = max(self._n.values())
        return n / self.sample_rate

    def to_array(self) -> np.ndarray:
        """The recording as 1-D int16 ("both": the two tracks summed with clipping)."""
        def cat(frames: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)

        if self.mode == "caller":
            return cat(self._caller)
        if self.mode == "ivr":
            return cat(self._ivr)
        a, b = cat(self._caller), cat(self._ivr)
        n = max(a.size, b.size)
        mix = np.zeros(n, dtype=np.int32)
        mix[: a.size] += a
        mix[: b.size] += b
        return np.clip(mix, -32768, 32767).astype(np.int16)

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> Path:
        """Write a 16-bit PCM WAV at ``path`` and ``<path>.json`` with metadata; return the path.

        The sidecar holds ``metadata`` (e.g. caller, call_id, started_at, reason) plus
        duration, sample_rate, mode and truncated. Both files appear atomically.
        """
        path = Path(path)
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"Recorder.save: metadata must be a dict, got {type(metadata).__name__}")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(metadata or {})
        meta.update(duration=round(self.duration, 3), sample_rate=self.sample_rate, mode=self.mode,
                    truncated=self.truncated)
        tmp_wav = path.with_name(path.name + ".tmp")
        tmp_json = path.with_name(path.name + ".json.tmp")
        try:
            sf.write(str(tmp_wav), self.to_array(), self.sample_rate, subtype="PCM_16", format="WAV")
            tmp_json.write_text(json.dumps(meta, indent=2, default=str, ensure_ascii=False))
            os.replace(tmp_wav, path)
            os.replace(tmp_json, path.with_name(path.name + ".json"))
        finally:
            for t in (tmp_wav, tmp_json):
                t.unlink(missing_ok=True)
        return path
