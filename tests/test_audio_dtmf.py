"""DTMF detector: all keys, rates, frequency tolerance, twist, noise, talk-off, chunking."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
from test_audio_support import PARAGRAPH, TALKOFF_VOICES, add_noise, speech

from ivr.audio.dtmf import DtmfDetector, generate_dtmf

ALL = "123A456B789C*0#D"
AMP = 0.2


def detect(x: np.ndarray, rate: int = 8000, chunk: int | None = None, **kw) -> str:
    d = DtmfDetector(rate, **kw)
    if chunk is None:
        out = d.feed(x)
    else:
        out = [k for i in range(0, x.size, chunk) for k in d.feed(x[i:i + chunk])]
    return "".join(out + d.flush())


def keys(rate: int = 8000, *, off: float = 0.0, twist: float = 0.0, snr: float | None = None,
         seed: int = 0, tone_ms: float = 40, gap_ms: float = 40) -> np.ndarray:
    """All 16 keys after 50 ms lead-in; ``snr`` relative to the two tones' summed power."""
    x = np.concatenate([np.zeros(rate // 20, dtype=np.int16),
                        generate_dtmf(ALL, tone_ms, gap_ms, rate, AMP, twist_db=twist, freq_error=off)])
    if snr is not None:
        a_lo = AMP * 10 ** (-twist / 40) * 32767
        a_hi = AMP * 10 ** (twist / 40) * 32767
        x = add_noise(x, snr, (a_lo**2 + a_hi**2) / 2, seed)
    return x


@pytest.mark.parametrize("rate", [8000, 16000])
def test_all_keys_clean_100ms(rate):
    assert detect(generate_dtmf(ALL, 100, 100, rate), rate) == ALL


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("off", [0.0, 0.015, -0.015])
@pytest.mark.parametrize("twist", [0.0, 8.0, -8.0])
def test_40ms_tones_with_noise_offset_and_twist(rate, off, twist):
    for seed in range(3):
        assert detect(keys(rate, off=off, twist=twist, snr=15, seed=seed), rate) == ALL, (seed,)


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("off", [0.035, -0.035])
def test_rejects_3_5_percent_offset(rate, off):
    assert detect(keys(rate, off=off), rate) == ""
    assert detect(keys(rate, off=off, snr=15, seed=1), rate) == ""


@pytest.mark.parametrize("twist", [12.0, -12.0])
def test_rejects_excessive_twist(twist):
    assert detect(generate_dtmf(ALL, 100, 100, 8000, AMP, twist_db=twist)) == ""


def test_single_tones_and_noise_alone_are_not_digits():
    t = np.arange(8000) / 8000
    for f in (697, 941, 1209, 1633, 1000):
        assert detect(np.rint(8000 * np.sin(2 * np.pi * f * t)).astype(np.int16)) == ""
    assert detect(add_noise(np.zeros(8000 * 5), 0, 3000.0**2)) == ""


def test_held_key_is_reported_once_and_repeats_need_a_gap():
    assert detect(generate_dtmf("5", 2000, 0)) == "5"
    assert detect(generate_dtmf("55", 40, 40)) == "55"
    # No gap between different keys still gives both.
    assert detect(np.concatenate([generate_dtmf("1", 80, 0), generate_dtmf("2", 80, 0)])) == "12"


@pytest.mark.parametrize("chunk", [1, 7, 159, 160, 161, 1000, 8000])
def test_chunk_size_does_not_matter(chunk):
    x = keys(snr=15, seed=4)
    ref_det = DtmfDetector()
    ref = ref_det.feed_timed(x)
    d = DtmfDetector()
    got = [e for i in range(0, x.size, chunk) for e in d.feed_timed(x[i:i + chunk])]
    assert got == ref and "".join(k for k, _ in ref) == ALL


def test_onset_times_and_tone_active():
    x = np.concatenate([np.zeros(800, dtype=np.int16), generate_dtmf("7", 100, 100)])
    d = DtmfDetector()
    assert not d.tone_active
    (digit, t), = d.feed_timed(x[:800 + 400])  # up to 50 ms into the tone
    assert digit == "7" and abs(t - 0.1) <= 0.02
    assert d.tone_active
    d.feed(x[1200:])  # the 100 ms gap releases it
    assert not d.tone_active


def test_flush_reports_tone_at_end_of_stream_and_resets():
    d = DtmfDetector()
    tone = generate_dtmf("9", 35, 0)  # too few whole windows until flush pads the tail
    assert d.feed(tone) == []
    assert d.flush() == ["9"]
    assert d.feed(generate_dtmf("9", 100, 0)) == ["9"]  # after reset the same key counts again


def test_bad_input_errors():
    with pytest.raises(TypeError, match="int16"):
        DtmfDetector().feed(np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match="not DTMF keys"):
        generate_dtmf("12x")


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed (apt-get install -y sox)")
def test_tones_made_by_sox(tmp_path):
    wavs = []
    for _key, (fl, fh) in {"1": (697, 1209), "5": (770, 1336), "#": (941, 1477), "D": (941, 1633)}.items():
        out = tmp_path / f"d{len(wavs)}.wav"
        subprocess.run(["sox", "-n", "-r", "8000", "-b", "16", "-c", "1", str(out),
                        "synth", "0.1", "sine", str(fl), "sine", str(fh), "vol", "0.4"], check=True, timeout=30)
        data, rate = sf.read(out, dtype="int16")
        assert rate == 8000
        wavs += [data, np.zeros(800, dtype=np.int16)]
    assert detect(np.concatenate(wavs)) == "15#D"


@pytest.mark.parametrize("voice,pitch,speed", TALKOFF_VOICES)
def test_no_talk_off_on_tts_speech(voice, pitch, speed):
    x = speech(PARAGRAPH, voice, pitch, speed)
    assert x.size >= 8000 * 25  # three voices: well over a minute in all
    for gain in (0.5, 1.0, 1.9):
        y = np.clip(np.rint(x * gain), -32768, 32767).astype(np.int16)
        assert detect(y, chunk=160) == "", (gain,)
    # Speech with digits pressed over it still finds the digits (double talk).
    digits = np.zeros_like(x)
    tones = generate_dtmf("159#", 80, 400, 8000, 0.35)
    digits[8000:8000 + tones.size] = tones
    mixed = np.clip(digits.astype(np.int32) + (x * 0.1).astype(np.int32), -32768, 32767).astype(np.int16)
    assert detect(mixed) == "159#"


def test_detectors_with_the_same_settings_share_one_read_only_probe_basis() -> None:
    # 77 KB per detector at 8 kHz: one per call would be a third of a call's memory.
    a, b = DtmfDetector(), DtmfDetector(min_level_db=-30.0)
    assert a._basis is b._basis
    assert DtmfDetector(window_ms=30.0)._basis.shape[0] == 240  # other windows get their own
    with pytest.raises(ValueError):
        a._basis[0, 0] = 1.0
