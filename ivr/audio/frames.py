"""The project's internal audio format and helpers to move between bytes and arrays.

Everything inside the project is 8 kHz, mono, signed 16-bit little-endian PCM in 20 ms
frames: 160 samples, 320 bytes. This is also the 3CX stream format, so wire bytes can be
framed without conversion.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 8000
"""Samples per second of all internal audio."""
FRAME_MS = 20
"""Duration of one frame in milliseconds."""
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
"""Samples per frame (160)."""
FRAME_BYTES = FRAME_SAMPLES * 2
"""Bytes per frame of int16 PCM (320)."""

_PCM_DTYPE = np.dtype("<i2")  # the wire is little-endian whatever the host is


def pcm_to_array(b: bytes | bytearray | memoryview) -> np.ndarray:
    """Interpret little-endian int16 PCM bytes as a 1-D int16 array.

    No copy is made: for ``bytes`` input the array is read-only. Raises ``ValueError`` on an
    odd byte count (use :class:`FrameSplitter` for streams that split samples).
    """
    n = len(memoryview(b).cast("B"))
    if n % 2:
        raise ValueError(f"pcm_to_array: {n} bytes is not a whole number of int16 samples")
    a = np.frombuffer(b, dtype=_PCM_DTYPE)
    # On little-endian hosts this is a no-op view; only big-endian hosts pay a copy.
    return a if a.dtype.isnative else a.astype(np.int16)


def array_to_pcm(a: np.ndarray) -> bytes:
    """Encode a 1-D int16 array as little-endian PCM bytes.

    Raises ``TypeError`` for other dtypes: convert floats with
    :func:`ivr.audio.resample.float_to_int16` so clipping is explicit.
    """
    a = np.asarray(a)
    if a.dtype != np.int16:
        raise TypeError(f"array_to_pcm: expected int16 samples, got {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"array_to_pcm: expected a 1-D array, got shape {a.shape}")
    return a.astype(_PCM_DTYPE, copy=False).tobytes()


def silence(ms: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Return ``ms`` milliseconds of digital silence as int16 (rounded to whole samples)."""
    if ms < 0:
        raise ValueError(f"silence: duration must be >= 0 ms, got {ms}")
    return np.zeros(int(round(ms * sample_rate / 1000)), dtype=np.int16)


class FrameSplitter:
    """Cut a byte stream of arbitrary chunk sizes into whole fixed-size frames.

    ``feed`` returns the complete frames now available and keeps the remainder (including a
    dangling odd byte) for the next call, so chunking never shifts sample alignment.
    """

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        if frame_bytes <= 0 or frame_bytes % 2:
            raise ValueError(f"FrameSplitter: frame_bytes must be a positive even number, got {frame_bytes}")
        self.frame_bytes = frame_bytes
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet make a whole frame."""
        return len(self._buf)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[bytes]:
        """Add ``chunk`` and return every whole frame now available, oldest first."""
        self._buf += chunk
        n = len(self._buf) // self.frame_bytes
        if n == 0:
            return []
        fb = self.frame_bytes
        frames = [bytes(self._buf[i * fb:(i + 1) * fb]) for i in range(n)]
        del self._buf[: n * fb]  # one shift per feed, not per frame
        return frames

    def feed_block(self, chunk: bytes | bytearray | memoryview) -> bytes:
        """Add ``chunk`` and return every whole frame now available as one bytes object
        (a multiple of ``frame_bytes``, possibly empty): no object per frame."""
        fb = self.frame_bytes
        if not self._buf and len(chunk) % fb == 0:
            return bytes(chunk)  # the common case: whole frames in, no copy for bytes input
        self._buf += chunk
        n = len(self._buf) // fb * fb
        if n == 0:
            return b""
        block = bytes(self._buf[:n])
        del self._buf[:n]
        return block

    def flush(self) -> bytes | None:
        """Return the buffered remainder zero-padded to a whole frame, or None if empty.

        A dangling odd byte is dropped (it cannot be half a sample of anything useful).
        """
        if not self._buf:
            return None
        data = bytes(self._buf[: len(self._buf) // 2 * 2])
        self._buf.clear()
        if not data:
            return None
        return data + bytes(self.frame_bytes - len(data))

    def reset(self) -> None:
        """Drop any buffered bytes."""
        self._buf.clear()
