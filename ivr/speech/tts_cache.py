"""``CachedTTS``: an on-disk prompt cache in front of any TTS adapter.

Key: sha256 of (engine name, voice, rate, text); value: an 8 kHz 16-bit WAV file. A prompt is
synthesized once per key, even when several calls ask for it at the same moment: the first
request starts one synthesis task and every concurrent request streams from its chunks as
they arrive. The file is written atomically (temp file + rename) only after a complete,
successful synthesis, so a cancelled or failed synthesis never leaves a truncated prompt.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from .base import TextToSpeech
from .pcm import read_wav, wav_bytes

log = logging.getLogger(__name__)

CHUNK = 8000  # samples per chunk when replaying a cached prompt (1 s)


def default_cache_dir() -> Path:
    """``$IVR_TTS_CACHE`` if set, else ``~/.cache/ivr/tts``."""
    env = os.environ.get("IVR_TTS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ivr" / "tts"


class _Inflight:
    """One synthesis in progress: the chunks so far, shared by every waiting consumer."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.done = False
        self.error: BaseException | None = None
        self.changed = asyncio.Event()
        self.task: asyncio.Task | None = None

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class CachedTTS:
    """Wrap ``inner`` so each (engine, voice, rate, text) is synthesized once and replayed from disk.

    ``directory`` defaults to ``default_cache_dir()``. ``hits``/``misses`` count lookups.
    """

    def __init__(self, inner: TextToSpeech, directory: str | os.PathLike | None = None) -> None:
        self.inner = inner
        self.name = f"{inner.name}+cache"
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()
        self.hits = 0
        self.misses = 0
        self._inflight: dict[str, _Inflight] = {}

    def key(self, text: str, voice: str | None, rate: float | None) -> str:
        """The cache key (hex sha256) for one prompt."""
        ident = json.dumps([self.inner.name, voice, rate, text], ensure_ascii=False)
        return hashlib.sha256(ident.encode()).hexdigest()

    def path(self, key: str) -> Path:
        """Where the WAV for ``key`` lives (two-level fan-out keeps directories small)."""
        return self.directory / key[:2] / f"{key}.wav"

    async def _produce(self, key: str, job: _Inflight, text: str, voice: str | None, rate: float | None) -> None:
        try:
            async for chunk in self.inner.synthesize(text, voice=voice, rate=rate):
                job.chunks.append(chunk)
                job.notify()
            pcm = np.concatenate(job.chunks) if job.chunks else np.zeros(0, np.int16)
            await asyncio.to_thread(self._write, self.path(key), pcm)
        except BaseException as e:  # consumers see the engine's own error
            job.error = e
            if not isinstance(e, Exception):
                raise
        finally:
            job.done = True
            job.notify()
            self._inflight.pop(key, None)

    @staticmethod
    def _write(path: Path, pcm: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(wav_bytes(pcm))
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @staticmethod
    def _read(path: Path) -> np.ndarray | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            pcm, rate = read_wav(data)
        except Exception as e:  # a damaged file is re-synthesized, not fatal
            log.warning("tts cache: %s is unreadable (%s); synthesizing again", path, e)
            return None
        return pcm if rate == 8000 else None

    async def synthesize(self, text: str, *, voice: str | None = None, rate: float | None = None) -> AsyncIterator[np.ndarray]:
        """Yield the prompt from disk if cached, else stream it from the (single) synthesis."""
        key = self.key(text, voice, rate)
        job = self._inflight.get(key)
        if job is None:
            pcm = await asyncio.to_thread(self._read, self.path(key))
            if pcm is not None:
                self.hits += 1
                for i in range(0, len(pcm), CHUNK):
                    yield pcm[i:i + CHUNK]
                return
            job = self._inflight.get(key)  # another request may have started meanwhile
            if job is None:
                self.misses += 1
                job = self._inflight[key] = _Inflight()
                # A task of its own: the prompt gets cached even if this consumer stops early.
                job.task = asyncio.create_task(self._produce(key, job, text, voice, rate))
        i = 0
        while True:
            while i < len(job.chunks):
                yield job.chunks[i]
                i += 1
            if job.done:
                if job.error is not None:
                    raise job.error
                return
            await job.changed.wait()
