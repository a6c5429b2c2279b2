"""InboundProcessor (framing, DTMF before VAD, tone masking, frame tap) and DigitMerger."""

from __future__ import annotations

import numpy as np
import pytest

from ivr.audio.dtmf import generate_dtmf
from ivr.audio.frames import array_to_pcm
from ivr.audio.pipeline import DigitDetected, DigitMerger, InboundProcessor
from ivr.audio.vad import SpeechEnded, SpeechStarted, VoiceActivityDetector
from test_audio_support import SENTENCES, speech, speech_bounds


def feed_random_chunks(proc: InboundProcessor, pcm: bytes, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    events, i = [], 0
    while i < len(pcm):
        n = int(rng.integers(1, 2000))  # odd sizes split samples across chunks
        events += proc.process(pcm[i:i + n])
        i += n
    return events + proc.close()


def test_digits_do_not_trigger_speech_but_speech_does():
    tones = generate_dtmf("4711#", 120, 150, amplitude=0.3)
    talk = speech(SENTENCES[2])
    a, b = speech_bounds(talk)
    x = np.concatenate([np.zeros(4000, dtype=np.int16), tones, np.zeros(8000, dtype=np.int16), talk,
                        np.zeros(8000, dtype=np.int16)])
    events = feed_random_chunks(InboundProcessor(), array_to_pcm(x))
    digits = [e for e in events if isinstance(e, DigitDetected)]
    assert "".join(d.digit for d in digits) == "4711#"
    assert abs(digits[0].t - 0.5) <= 0.02
    started = [e for e in events if isinstance(e, SpeechStarted)]
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    talk_start = (4000 + tones.size + 8000 + a) / 8000
    assert len(started) == 1 and abs(started[0].t - talk_start) <= 0.1
    assert len(ended) == 1 and abs(ended[0].t - (4000 + tones.size + 8000 + b) / 8000) <= 0.1


def test_without_masking_webrtcvad_calls_tones_speech():
    # Why the pipeline masks: the same tones through the VAD alone start "speech".
    tones = generate_dtmf("4711#", 120, 150, amplitude=0.3)
    vad = VoiceActivityDetector()
    events = [e for i in range(0, tones.size - 159, 160) for e in vad.feed(tones[i:i + 160])]
    assert any(isinstance(e, SpeechStarted) for e in events)


def test_chunking_does_not_change_events_and_tap_sees_every_frame():
    x = np.concatenate([generate_dtmf("123", 60, 60), speech(SENTENCES[1]), np.zeros(8000, dtype=np.int16)])
    pcm = array_to_pcm(x)

    def summary(events):
        return [(type(e).__name__, getattr(e, "digit", None), round(e.t, 3)) for e in events]

    ref = summary(feed_random_chunks(InboundProcessor(), pcm, seed=1))
    tapped: list[tuple[np.ndarray, float]] = []
    proc = InboundProcessor(on_frame=lambda f, t: tapped.append((f.copy(), t)))
    assert summary(feed_random_chunks(proc, pcm, seed=2)) == ref
    assert [t for _, t in tapped] == pytest.approx([k * 0.02 for k in range(len(tapped))])
    assert np.array_equal(np.concatenate([f for f, _ in tapped])[: x.size], x)


def test_dtmf_or_vad_can_be_turned_off():
    x = array_to_pcm(np.concatenate([generate_dtmf("9", 100, 100), speech(SENTENCES[1])]))
    only_vad = InboundProcessor(dtmf=False).process(x)
    assert not any(isinstance(e, DigitDetected) for e in only_vad)
    only_dtmf = InboundProcessor(vad=None)
    assert [e.digit for e in only_dtmf.process(x) + only_dtmf.close()] == ["9"]


def test_merger_counts_each_press_once():
    m = DigitMerger(window=0.15)
    assert m.add("5", "inband", 10.00) == "5"
    assert m.add("5", "pbx", 10.10) is None  # the same press reported by the PBX
    assert m.add("5", "inband", 10.40) == "5"  # a second press
    assert m.add("5", "pbx", 10.45) is None
    assert m.add("6", "pbx", 11.00) == "6"  # PBX first, in-band second
    assert m.add("6", "inband", 11.12) is None
    assert m.add("7", "pbx", 12.00) == "7"
    assert m.add("7", "inband", 12.20) == "7"  # outside the window: counts
    assert m.add("8", "inband", 13.00) == "8"
    assert m.add("8", "inband", 13.05) == "8"  # same source repeats always count
    assert m.add("8", "pbx", 13.06) is None
    assert m.add("8", "pbx", 13.07) is None  # matches the second in-band report
    assert m.add("8", "pbx", 13.08) == "8"  # nothing left to match
    with pytest.raises(ValueError, match="window"):
        DigitMerger(window=-1)
