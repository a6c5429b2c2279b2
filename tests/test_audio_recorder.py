"""Recorder: modes, alignment, clipping mix, bound, WAV + sidecar read back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from ivr.audio.recorder import Recorder


def frame(v: int) -> np.ndarray:
    return np.full(160, v, dtype=np.int16)


def test_both_mode_mixes_aligned_frames_with_clipping():
    r = Recorder("both")
    r.add_caller(frame(1000))
    r.add_ivr(frame(30000))
    r.add_caller(frame(-20000))
    r.add_ivr(frame(-20000))
    r.add_caller(frame(5))
    r.add_ivr(None)  # idle tick keeps alignment
    r.add_caller(frame(7))
    out = r.to_array()
    assert out.size == 640 and r.duration == pytest.approx(0.08)
    assert (out[:160] == 31000).all() and (out[160:320] == -32768).all()
    assert (out[320:480] == 5).all() and (out[480:] == 7).all()


def test_single_track_modes_ignore_the_other_track():
    r = Recorder("caller")
    r.add_caller(frame(3))
    r.add_ivr(frame(9))
    assert (r.to_array() == 3).all() and r.to_array().size == 160
    r = Recorder("ivr")
    r.add_caller(frame(3))
    r.add_ivr(frame(9).tobytes())
    assert (r.to_array() == 9).all()


def test_bounded_by_max_seconds():
    r = Recorder("caller", max_seconds=0.05)
    for _ in range(10):
        r.add_caller(frame(1))
    assert r.to_array().size == 400 and r.truncated


def test_save_reads_back_with_soundfile_and_sidecar(tmp_path):
    r = Recorder("both")
    src = (np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16)
    for i in range(0, 8000, 160):
        r.add_caller(src[i:i + 160])
        r.add_ivr(None)
    path = r.save(tmp_path / "rec" / "call-42.wav",
                  {"caller": "+4930123", "call_id": 42, "started_at": "2024-05-01T10:00:00Z", "reason": "hangup"})
    data, rate = sf.read(path, dtype="int16")
    assert rate == 8000 and np.array_equal(data, src)
    info = sf.info(path)
    assert info.subtype == "PCM_16" and info.channels == 1
    meta = json.loads((tmp_path / "rec" / "call-42.wav.json").read_text())
    assert meta["caller"] == "+4930123" and meta["call_id"] == 42 and meta["reason"] == "hangup"
    assert meta["duration"] == 1.0 and meta["mode"] == "both" and meta["truncated"] is False
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == ["call-42.wav", "call-42.wav.json"]


def test_bad_input():
    with pytest.raises(ValueError, match="mode"):
        Recorder("stereo")
    with pytest.raises(ValueError, match="int16"):
        Recorder().add_caller(np.zeros(160, dtype=np.float64))
