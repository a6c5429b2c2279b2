"""frames, resample and prompts: format helpers, soxr conversion, decoding and the cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.audio.frames import FRAME_BYTES, FRAME_SAMPLES, FrameSplitter, array_to_pcm, pcm_to_array, silence
from ivr.audio.prompts import PromptCache, PromptError, beep, load_audio
from ivr.audio.resample import StreamResampler, float_to_int16, int16_to_float, resample, to_mono


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def dominant_freq(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(float) * np.hanning(x.size)))
    return float(np.argmax(spec) * rate / x.size)


# --- frames ---------------------------------------------------------------------------------

def test_constants_and_round_trip():
    assert (FRAME_SAMPLES, FRAME_BYTES) == (160, 320)
    a = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    pcm = array_to_pcm(a)
    assert pcm == b"\x00\x00\x01\x00\xff\xff\xff\x7f\x00\x80"  # little-endian on the wire
    assert np.array_equal(pcm_to_array(pcm), a)
    assert silence(20).shape == (160,) and not silence(20).any()


def test_format_errors_are_clear():
    with pytest.raises(ValueError, match="3 bytes"):
        pcm_to_array(b"abc")
    with pytest.raises(TypeError, match="int16"):
        array_to_pcm(np.zeros(3))
    with pytest.raises(ValueError, match=">= 0 ms"):
        silence(-1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 900), min_size=1, max_size=30))
def test_frame_splitter_any_chunking(sizes):
    data = np.random.default_rng(len(sizes)).integers(0, 256, sum(sizes), dtype=np.uint8).tobytes()
    fs = FrameSplitter()
    frames, i = [], 0
    for n in sizes:
        frames += fs.feed(data[i:i + n])
        i += n
    whole = len(data) // FRAME_BYTES
    assert len(frames) == whole and all(len(f) == FRAME_BYTES for f in frames)
    assert b"".join(frames) == data[: whole * FRAME_BYTES]
    assert fs.pending == len(data) - whole * FRAME_BYTES
    tail = fs.flush()
    rest = data[whole * FRAME_BYTES:]
    rest = rest[: len(rest) // 2 * 2]  # a dangling odd byte is dropped
    if rest:
        assert tail == rest + bytes(FRAME_BYTES - len(rest))
    else:
        assert tail is None
    assert fs.pending == 0


# --- resample -------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000, 11025])
def test_resample_keeps_pitch_length_and_dtype(rate):
    x = tone(440, rate)
    y = resample(x.astype(np.float32), rate, 8000)
    assert y.dtype == np.float32 and abs(y.size - 8000) <= 1
    assert abs(dominant_freq(y, 8000) - 440) < 2
    yi = resample(float_to_int16(x), rate, 8000)
    assert yi.dtype == np.int16 and abs(dominant_freq(yi, 8000) - 440) < 2


def test_downsampling_removes_content_above_nyquist():
    y = resample(tone(6000, 48000).astype(np.float32), 48000, 8000)
    assert np.sqrt(np.mean(y[200:-200] ** 2)) < 1e-3  # > -50 dB below the 0.35 rms input


def test_mono_and_float_conversions():
    st2 = np.array([[1000, 3000], [-32768, -32768], [32767, 32767]], dtype=np.int16)
    assert to_mono(st2).tolist() == [2000, -32768, 32767]
    assert to_mono(np.zeros((4, 1), np.float32)).shape == (4,)
    assert float_to_int16(np.array([2.0, -2.0, 0.5, np.nan])).tolist() == [32767, -32768, 16384, 0]
    assert int16_to_float(np.array([-32768, 16384], np.int16)).tolist() == [-1.0, 0.5]
    with pytest.raises(ValueError, match="from_rate"):
        resample(np.zeros(10), 0, 8000)


def test_stream_resampler_matches_offline():
    x = float_to_int16(tone(300, 8000, 2.0, 0.3))
    s = StreamResampler(8000, 16000)
    out = np.concatenate([s.process(x[i:i + 160]) for i in range(0, x.size, 160)] + [s.flush()])
    ref = resample(x, 8000, 16000)
    assert abs(out.size - ref.size) <= 2 and out.dtype == np.int16
    n = min(out.size, ref.size)
    assert np.max(np.abs(out[1000:n - 1000].astype(int) - ref[1000:n - 1000])) <= 64
    assert abs(dominant_freq(out, 16000) - 300) < 2


# --- prompts --------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,subtype,rate,channels", [
    ("WAV", "PCM_16", 8000, 1), ("WAV", "ULAW", 8000, 1), ("WAV", "FLOAT", 44100, 2),
    ("FLAC", "PCM_24", 22050, 1), ("OGG", "VORBIS", 48000, 2),
])
def test_load_audio_any_format(tmp_path, fmt, subtype, rate, channels):
    x = tone(500, rate, 0.5, 0.4)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    path = tmp_path / f"p.{fmt.lower()}"
    sf.write(path, data, rate, format=fmt, subtype=subtype)
    y = load_audio(path)
    assert y.dtype == np.int16 and y.ndim == 1 and abs(y.size - 4000) <= 2
    assert abs(dominant_freq(y, 8000) - 500) < 3
    assert 0.3 < np.abs(y).max() / 32768 < 0.5


def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(PromptError, match=r"not found: .*missing.wav"):
        load_audio(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not audio at all")
    with pytest.raises(PromptError, match=r"cannot decode audio file .*bad.wav") as e:
        load_audio(bad)
    assert "\n" not in str(e.value)


def test_cache_shares_read_only_arrays_and_reloads_on_change(tmp_path):
    p = tmp_path / "hello.wav"
    sf.write(p, tone(400, 8000, 0.2), 8000, subtype="PCM_16")
    cache = PromptCache()
    a, b = cache.get(p), cache.get(str(p))
    assert a is b and not a.flags.writeable and (cache.hits, cache.misses) == (1, 1)
    with pytest.raises(ValueError):
        a[0] = 1
    sf.write(p, tone(400, 8000, 0.3), 8000, subtype="PCM_16")  # size changes
    os.utime(p, ns=(1, 1))
    c = cache.get(p)
    assert c is not a and c.size == 2400 and cache.total_bytes == c.nbytes and len(cache) == 1
    with pytest.raises(PromptError, match="not found"):
        cache.get(tmp_path / "nope.wav")


def test_cache_evicts_least_recently_used_by_bytes(tmp_path):
    paths = []
    for i in range(4):
        p = tmp_path / f"p{i}.wav"
        sf.write(p, tone(300 + i, 8000, 0.5), 8000, subtype="PCM_16")  # 8000 bytes decoded
        paths.append(p)
    cache = PromptCache(max_bytes=20000)
    first = cache.get(paths[0])
    cache.get(paths[1])
    assert cache.get(paths[0]) is first  # touch p0 so p1 is the oldest
    cache.get(paths[2])
    assert len(cache) == 2 and cache.total_bytes == 16000
    assert cache.get(paths[0]) is first  # kept
    misses = cache.misses
    cache.get(paths[1])
    assert cache.misses == misses + 1  # p1 was evicted
    huge = PromptCache(max_bytes=100)
    assert huge.get(paths[3]).size == 4000 and len(huge) == 0  # too big to keep, still served


def test_beep():
    b = beep(1000, 200)
    assert b.dtype == np.int16 and b.size == 1600
    assert abs(dominant_freq(b, 8000) - 1000) < 6 and abs(int(b[0])) < 200 and abs(int(b[-1])) < 200
    with pytest.raises(ValueError, match="freq"):
        beep(5000)
