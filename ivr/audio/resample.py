"""Sample-rate and format conversion at the edges (prompt files, TTS output, STT input).

Backed by ``soxr`` (high quality, ~-80 dB aliasing). int16 stays int16 and float stays
float so callers never get a surprise dtype.
"""

from __future__ import annotations

import numpy as np
import soxr

_SUPPORTED_DTYPES = (np.int16, np.int32, np.float32, np.float64)


def _check_rate(name: str, rate: object) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer, float)) or rate <= 0:
        raise ValueError(f"resample: {name} must be a positive number of Hz, got {rate!r}")
    return rate  # type: ignore[return-value]


def resample(x: np.ndarray, from_rate: float, to_rate: float, quality: str = "HQ") -> np.ndarray:
    """Resample 1-D (samples) or 2-D (frames, channels) audio from ``from_rate`` to ``to_rate``.

    int16 in gives int16 out, float32/float64 in gives the same float dtype out. Any positive
    rates work (8000, 16000, 22050, 24000, 48000, ...). Equal rates return the input unchanged.
    """
    _check_rate("from_rate", from_rate)
    _check_rate("to_rate", to_rate)
    x = np.asarray(x)
    if x.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"resample: unsupported sample dtype {x.dtype} (use int16 or float)")
    if x.ndim not in (1, 2):
        raise ValueError(f"resample: expected 1-D or 2-D (frames, channels) audio, got shape {x.shape}")
    if from_rate == to_rate:
        return x
    if x.shape[0] == 0:
        return x.copy()
    return soxr.resample(x, from_rate, to_rate, quality=quality)


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average the channels of 2-D (frames, channels) audio into 1-D; 1-D passes through.

    int16 input is averaged in float and rounded back, so no wrap-around can happen.
    """
    x = np.asarray(x)
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise ValueError(f"to_mono: expected 1-D or 2-D (frames, channels) audio, got shape {x.shape}")
    if x.shape[1] == 1:
        return x[:, 0]
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        m = np.rint(x.mean(axis=1))
        return np.clip(m, info.min, info.max).astype(x.dtype)
    return x.mean(axis=1).astype(x.dtype)


def float_to_int16(x: np.ndarray) -> np.ndarray:
    """Convert float audio in [-1, 1] to int16, clipping anything outside (NaN becomes 0)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.nan_to_num(x * 32768.0, nan=0.0)
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def int16_to_float(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Convert int16 audio to float in [-1, 1) (divides by 32768)."""
    x = np.asarray(x)
    if x.dtype != np.int16:
        raise TypeError(f"int16_to_float: expected int16 samples, got {x.dtype}")
    return x.astype(dtype) / dtype(32768.0)


class StreamResampler:
    """Resample a stream chunk by chunk with filter state carried across chunks.

    Use for live audio (caller frames upsampled to 16 kHz for STT). Output length per chunk
    varies slightly; the total matches offline :func:`resample` within a few samples.
    """

    def __init__(self, from_rate: float, to_rate: float, dtype: type = np.int16, quality: str = "HQ") -> None:
        _check_rate("from_rate", from_rate)
        _check_rate("to_rate", to_rate)
        self.from_rate = from_rate
        self.to_rate = to_rate
        self.dtype = np.dtype(dtype)
        if self.dtype not in _SUPPORTED_DTYPES:
            raise TypeError(f"StreamResampler: unsupported dtype {self.dtype}")
        self._quality = quality
        self._stream = soxr.ResampleStream(from_rate, to_rate, 1, dtype=self.dtype, quality=quality)

    def process(self, chunk: np.ndarray, last: bool = False) -> np.ndarray:
        """Feed one 1-D chunk and return the output available so far."""
        chunk = np.asarray(chunk)
        if chunk.dtype != self.dtype:
            raise TypeError(f"StreamResampler.process: expected {self.dtype} samples, got {chunk.dtype}")
        if chunk.ndim != 1:
            raise ValueError(f"StreamResampler.process: expected a 1-D chunk, got shape {chunk.shape}")
        return self._stream.resample_chunk(np.ascontiguousarray(chunk), last=last)

    def flush(self) -> np.ndarray:
        """End the stream and return the filter's tail; the resampler is then reset."""
        out = self._stream.resample_chunk(np.zeros(0, dtype=self.dtype), last=True)
        self.reset()
        return out

    def reset(self) -> None:
        """Start a fresh stream (drops filter state)."""
        self._stream = soxr.ResampleStream(self.from_rate, self.to_rate, 1, dtype=self.dtype, quality=self._quality)
