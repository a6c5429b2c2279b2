"""``espeak`` TTS: the espeak-ng binary (Debian package ``espeak-ng``), WAV on stdout.

Fast (about 20 ms per prompt) and robotic; speech recognisers do badly on it, so do not use
it for STT round-trip tests. Each sentence is one subprocess (text on stdin, so text starting
with "-" is never taken for an option): an asyncio one, or one a thread waits for where the
event loop has none (Windows' selector loop).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator

import numpy as np

from .base import AdapterFailed, AdapterUnavailable, with_timeout
from .pcm import read_wav, resample
from .tts_stream import stream_sentences

NAME = "espeak"
DEFAULT_WPM = 175  # espeak-ng's own default speed; rate=1.0 maps to it


class EspeakTTS:
    """espeak-ng TTS (registry name ``espeak``). Options: ``voice`` (default ``en-us``),
    ``binary`` (default: ``espeak-ng`` on PATH), ``timeout`` seconds per sentence."""

    name = NAME

    def __init__(self, *, voice: str = "en-us", binary: str | None = None, timeout: float = 10.0) -> None:
        self.voice, self.binary, self.timeout = voice, binary, timeout

    def _binary(self) -> str:
        path = shutil.which(self.binary or "espeak-ng")
        if path is None:
            raise AdapterUnavailable(f"{self.binary or 'espeak-ng'} not found: apt-get install espeak-ng "
                                     "(or brew install espeak-ng)", adapter=NAME)
        return path

    async def _synth(self, sentence: str, voice: str, wpm: int) -> np.ndarray:
        args = [self._binary(), "--stdin", "--stdout", "-v", voice, "-s", str(wpm)]
        proc: asyncio.subprocess.Process | subprocess.Popen[bytes]
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            talk = proc.communicate(sentence.encode())
        except NotImplementedError:  # Windows' selector loop (the CLI's choice) has no subprocesses
            proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # noqa: ASYNC220 - started, not waited on
            talk = asyncio.to_thread(proc.communicate, sentence.encode())  # a thread waits for it
        try:
            out, err = await with_timeout(talk, self.timeout, adapter=NAME, what="espeak-ng")
        except BaseException:  # timeout or cancellation: never leave the child behind
            if proc.returncode is None:
                proc.kill()  # (from a thread, communicate() then returns)
                if isinstance(proc, asyncio.subprocess.Process):
                    await proc.wait()
            raise
        if proc.returncode != 0 or not out:
            msg = err.decode(errors="replace").strip().splitlines()
            raise AdapterFailed(f"espeak-ng exited with {proc.returncode}: {msg[0] if msg else 'no output'}",
                                adapter=NAME)
        pcm, rate = read_wav(out)
        return resample(pcm, rate, 8000)

    def synthesize(self, text: str, *, voice: str | None = None, rate: float | None = None) -> AsyncIterator[np.ndarray]:
        """Yield 8 kHz int16 audio, one chunk per sentence; ``rate`` 0.5..3.0 (1.0 = 175 wpm)."""
        speed = 1.0 if rate is None else float(rate)
        if not 0.5 <= speed <= 3.0:
            raise ValueError(f"espeak.synthesize: rate must be between 0.5 and 3.0, got {rate!r}")
        v, wpm = voice or self.voice, round(DEFAULT_WPM * speed)
        return stream_sentences(text, lambda s: self._synth(s, v, wpm))
