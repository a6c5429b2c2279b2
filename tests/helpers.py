"""Small helpers shared by test files (imported as ``from helpers import ...``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile


def write_tone(path: Path, seconds: float, freq: float = 440.0) -> Path:
    """A short 8 kHz sine prompt: cheap real-time audio for flows under test."""
    t = np.arange(int(8000 * seconds)) / 8000
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 8000, subtype="PCM_16")
    return path
