"""Shared helpers for the audio tests: TTS speech (cached), noise, sox. Also tests them.

Speech comes from espeak-ng (Debian: ``apt-get install -y espeak-ng sox``); tests that need
it skip with the reason when it is missing.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ivr.audio.resample import float_to_int16, resample

CACHE = Path(tempfile.gettempdir()) / "ivr-audio-test-cache"

SENTENCES = [
    "Hello, I would like to check the balance of my account please.",
    "Yes.",
    "Can you transfer me to an agent?",
    "My customer number is four five six seven eight nine.",
    "No, that is not right.",
    "Thank you very much, goodbye.",
]

PARAGRAPH = (
    "Thank you for calling the customer service line. Please listen carefully, as our menu "
    "options have recently changed. For billing questions and account balances, press one. To "
    "report a technical problem with your internet, television or telephone service, press two. "
    "If you would like to speak with a representative about a new order, press three. Our opening "
    "hours are Monday through Friday from eight in the morning until eight in the evening. "
    "She sells sea shells by the sea shore. Hello? Hello! Operator, can you hear me? "
    "Whistle while you work, eeeee, ooooo, aaaah, my account number is four five six."
)

# Voices chosen to cover low and high pitch: high female voices are the talk-off risk.
TALKOFF_VOICES = [("en-us", 50, 165), ("en+f3", 70, 150), ("en-us+f5", 99, 130)]


def tts_engine() -> str | None:
    """Name of an available offline TTS engine, or None."""
    return "espeak-ng" if shutil.which("espeak-ng") else None


def _espeak(text: str, voice: str, pitch: int, speed: int) -> tuple[np.ndarray, int]:
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", text],
        check=True, capture_output=True, timeout=60,
    ).stdout
    data, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return data, rate


def speech(text: str, voice: str = "en-us", pitch: int = 50, speed: int = 165) -> np.ndarray:
    """TTS ``text`` as 8 kHz int16 (peak about -6 dBFS), cached on disk between runs."""
    engine = tts_engine()
    if engine is None:
        pytest.skip("no offline TTS engine: apt-get install -y espeak-ng")
    key = hashlib.sha256(f"{engine}|{voice}|{pitch}|{speed}|{text}".encode()).hexdigest()[:20]
    path = CACHE / f"{key}.npy"
    if path.exists():
        return np.load(path)
    data, rate = _espeak(text, voice, pitch, speed)
    x = resample(data.astype(np.float32), rate, 8000)
    x = x / max(1e-6, float(np.abs(x).max())) * 0.5
    out = float_to_int16(x)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(path)
    return out


def speech_bounds(x: np.ndarray, rel: float = 0.02) -> tuple[int, int]:
    """First and last sample index where |x| exceeds ``rel`` of the peak (the true speech)."""
    idx = np.flatnonzero(np.abs(x.astype(np.int32)) > rel * np.abs(x.astype(np.int32)).max())
    return int(idx[0]), int(idx[-1]) + 1


def add_noise(x: np.ndarray, snr_db: float, signal_power: float, seed: int = 0) -> np.ndarray:
    """Add white Gaussian noise ``snr_db`` below ``signal_power`` (mean square), clip to int16."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, np.sqrt(signal_power / 10 ** (snr_db / 10)), x.size)
    return np.clip(np.rint(x + noise), -32768, 32767).astype(np.int16)


def test_speech_helper_gives_cached_8k_speech():
    a = speech("Testing one two three.")
    b = speech("Testing one two three.")
    assert a.dtype == np.int16 and a.size > 8000 * 0.5
    assert np.array_equal(a, b)
    start, end = speech_bounds(a)
    assert 0 <= start < end <= a.size


def test_add_noise_hits_requested_snr():
    x = np.zeros(80000)
    y = add_noise(x, 20.0, signal_power=1e6)
    assert abs(10 * np.log10(1e6 / np.mean(y.astype(float) ** 2)) - 20.0) < 0.3
