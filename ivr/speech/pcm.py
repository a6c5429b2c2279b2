"""Small audio conversions at the speech adapters' edge: float -> int16, resampling, WAV bytes.

Kept here (soxr + soundfile directly) so ``ivr.speech`` does not depend on the state of
``ivr.audio``; both use the same libraries and the same conventions.
"""

from __future__ import annotations

import io

import numpy as np

from .base import SAMPLE_RATE


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float audio in -1..1 (clipped) to int16; int16 input is returned unchanged."""
    if x.dtype == np.int16:
        return x
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def resample(x: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a whole 1-D signal (int16 or float) with soxr; same dtype out.

    int16 goes through float32 and is rounded here: soxr's own int16 output is dithered with
    a random seed, which would make identical input give different output.
    """
    if from_rate == to_rate or len(x) == 0:
        return x
    import soxr

    if x.dtype == np.int16:
        y = soxr.resample(x.astype(np.float32), from_rate, to_rate)
        return np.clip(np.round(y), -32768, 32767).astype(np.int16)
    return soxr.resample(x, from_rate, to_rate)


def wav_bytes(pcm: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """Encode int16 mono audio as a 16-bit PCM WAV file in memory."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, pcm, rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a WAV (or any soundfile format) held in memory to (int16 mono, rate)."""
    import soundfile as sf

    x, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    mono = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1).astype(np.int16)
    return np.ascontiguousarray(mono), rate
