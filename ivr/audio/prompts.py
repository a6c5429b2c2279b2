"""Prompt files: where a name is looked up, decode once to 8 kHz mono int16, share among
calls, generate beeps."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import soundfile as sf

from .frames import SAMPLE_RATE
from .resample import float_to_int16, resample, to_mono


class PromptError(Exception):
    """A prompt file is missing or cannot be decoded; the message names the file."""


#: The folder of the flow running in this task: YAML and Python flows look prompts up from
#: it (a Python flow sets it around ``main``, so ``call.play("x.wav")`` finds its own files).
flow_folder: ContextVar[Path | None] = ContextVar("ivr_flow_folder", default=None)


def prompt_search_path(folder: Path) -> list[Path]:
    """Folders a relative prompt name is looked up in, for a flow in ``folder``: the flow's
    folder, then the nearest ``audio/`` folders walking up from it, then ``./audio``.

    The one rule for YAML and Python flows (and ``ivr validate``); nothing falls back to the
    files shipped with this package."""
    folder = folder.resolve()
    dirs = [folder, *(p / "audio" for p in (folder, *folder.parents))]
    cwd_audio = Path.cwd() / "audio"
    if cwd_audio not in dirs:
        dirs.append(cwd_audio)
    return dirs


def find_prompt(name: str | os.PathLike, dirs: Iterable[Path]) -> Path | None:
    """The file a prompt name refers to: an absolute path as it is, a relative one in the
    first of ``dirs`` that has it; None when there is no such file."""
    path = Path(name)
    if path.is_absolute():
        return path if path.is_file() else None
    for base in dirs:
        candidate = base / path
        if candidate.is_file():
            return candidate
    return None


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode WAV/FLAC/OGG (any rate, any channels) into 1-D int16 at ``sample_rate``.

    Raises :class:`PromptError` with a one-line message naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise PromptError(f"prompt file not found: {p}")
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PromptError(f"cannot decode audio file {p}: {reason}") from None
    mono = to_mono(data)
    return float_to_int16(resample(mono, rate, sample_rate))


class PromptCache:
    """Decoded prompts shared by all calls, LRU-bounded by total bytes.

    Arrays handed out are read-only (``writeable=False``) because many calls share them. An
    entry is re-decoded when the file's mtime or size changes. A single file larger than
    ``max_bytes`` is returned but not kept. Thread-safe (decoding may run in an executor).
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, sample_rate: int = SAMPLE_RATE) -> None:
        if max_bytes <= 0:
            raise ValueError(f"PromptCache: max_bytes must be > 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.sample_rate = sample_rate
        self._entries: OrderedDict[str, tuple[tuple[int, int], np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def total_bytes(self) -> int:
        """Bytes of decoded audio held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, path: str | os.PathLike) -> np.ndarray:
        """Return the decoded, read-only prompt for ``path`` (decoding it if needed)."""
        key = str(Path(path).resolve())
        try:
            st = os.stat(key)
        except OSError:
            raise PromptError(f"prompt file not found: {path}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0] == stamp:
                self._entries.move_to_end(key)
                self.hits += 1
                return hit[1]
        audio = load_audio(key, self.sample_rate)  # outside the lock: decoding is slow
        audio.flags.writeable = False
        with self._lock:
            self.misses += 1
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1].nbytes
            if audio.nbytes <= self.max_bytes:
                self._entries[key] = (stamp, audio)
                self._bytes += audio.nbytes
                while self._bytes > self.max_bytes:
                    _, (_, evicted) = self._entries.popitem(last=False)
                    self._bytes -= evicted.nbytes
        return audio

    def invalidate(self, path: str | os.PathLike) -> None:
        """Drop one file's entry (no error if absent)."""
        with self._lock:
            old = self._entries.pop(str(Path(path).resolve()), None)
            if old is not None:
                self._bytes -= old[1].nbytes

    def clear(self) -> None:
        """Drop all entries."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0


prompt_cache = PromptCache()
"""The process-wide default cache."""


def beep(freq: float = 1000, ms: float = 200, sample_rate: int = SAMPLE_RATE, amplitude: float = 0.3) -> np.ndarray:
    """Return a sine tone as int16 with 5 ms raised-cosine edges (no clicks)."""
    if not 0 < freq < sample_rate / 2:
        raise ValueError(f"beep: freq must be between 0 and {sample_rate / 2} Hz, got {freq}")
    if ms < 0 or not 0 < amplitude <= 1:
        raise ValueError(f"beep: need ms >= 0 and 0 < amplitude <= 1, got ms={ms}, amplitude={amplitude}")
    n = int(round(ms * sample_rate / 1000))
    t = np.arange(n) / sample_rate
    y = amplitude * np.sin(2 * np.pi * freq * t)
    ramp = min(n // 2, int(0.005 * sample_rate))
    if ramp:
        edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        y[:ramp] *= edge
        y[n - ramp:] *= edge[::-1]
    return float_to_int16(y)
