"""Answering-machine detection on real speech (the project's own prompt recordings), exact
frame time: a hello is a human, a greeting a machine, silence and noise unknown; the end of a
greeting by beep or silence (ivr/audio/amd.py). Accuracy over many voices: bench/bench_amd.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ivr.audio.amd import AmdSettings, AnsweringMachineDetector, BeepDetector, GreetingEnd

AUDIO = Path(__file__).resolve().parents[1] / "audio"
RATE = 8000


def speech(name: str) -> np.ndarray:
    x, rate = sf.read(AUDIO / name, dtype="int16")
    assert rate == RATE
    loud = np.nonzero(np.abs(x.astype(np.int32)) > 300)[0]
    return x[loud[0]:loud[-1] + 1]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def frames(*parts: np.ndarray) -> np.ndarray:
    x = np.concatenate(parts)
    n = len(x) // 160
    return x[: n * 160].reshape(n, 160)


def tone(seconds: float, freq: float = 1000.0, amplitude: float = 9000.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def test_a_short_hello_then_waiting_is_a_human_decided_well_under_3_s():
    hello = speech("welcome.wav")[: int(0.6 * RATE)]
    decision = AnsweringMachineDetector().feed_many(frames(silence(0.4), hello, silence(5)))
    assert decision is not None and decision.result == "human", decision
    assert decision.at < 2.5
    assert 0.3 < decision.speech_seconds < 0.8


def test_a_long_greeting_is_a_machine_as_soon_as_it_is_too_long():
    greeting = speech("vm_greeting.wav")
    decision = AnsweringMachineDetector().feed_many(frames(silence(0.3), greeting, silence(3)))
    assert decision is not None and decision.result == "machine" and "greeting longer" in decision.reason
    assert decision.at < 0.3 + 2.5  # decided while it is still talking, not at the end


def test_many_pieces_without_a_pause_for_a_reply_are_a_machine():
    word = speech("welcome.wav")[: int(0.5 * RATE)]
    gap = silence(0.45)  # longer than a word gap, too short for someone waiting for an answer
    decision = AnsweringMachineDetector().feed_many(frames(word, gap, word, gap, word, gap, word, silence(3)))
    assert decision is not None and decision.result == "machine" and "utterances" in decision.reason


@pytest.mark.parametrize("noise_sd", [0, 300, 2000])
def test_silence_and_line_noise_are_unknown_never_a_machine(noise_sd):
    x = np.random.default_rng(3).normal(0, noise_sd, 6 * RATE).astype(np.int16) if noise_sd else silence(6)
    decision = AnsweringMachineDetector().feed_many(frames(x))
    assert decision is not None and decision.result == "unknown" and decision.at == pytest.approx(2.5)


def test_a_hello_on_a_noisy_line_is_still_a_human():
    hello = speech("welcome.wav")[: int(0.6 * RATE)]
    clean = np.concatenate([silence(0.4), hello, silence(5)]).astype(np.float64)
    rms = np.sqrt(np.mean(hello.astype(np.float64) ** 2))
    noise = np.random.default_rng(5).normal(0, 0.3 * rms, len(clean))  # about 10 dB SNR
    x = np.clip(clean + noise, -32768, 32767).astype(np.int16)
    decision = AnsweringMachineDetector().feed_many(frames(x))
    assert decision is not None and decision.result == "human", decision


def test_the_decision_is_final_and_time_is_counted_in_frames():
    amd = AnsweringMachineDetector(AmdSettings(initial_silence=1.0))
    first = amd.feed_many(frames(silence(1.5)))
    assert first is not None and first.at == pytest.approx(1.0) and amd.time == pytest.approx(1.0)
    assert amd.feed(speech("welcome.wav")[:160]) is first


def test_settings_are_checked():
    with pytest.raises(ValueError, match="greeting_max"):
        AmdSettings(greeting_max=0)
    with pytest.raises(ValueError, match="max_utterances"):
        AmdSettings(max_utterances=1)


def test_a_beep_is_a_steady_tone_and_speech_is_not():
    beep = BeepDetector()
    assert not any(beep.feed(f) for f in frames(speech("vm_greeting.wav")))
    hits = [beep.feed(f) for f in frames(tone(0.3))]
    assert hits.index(True) == 5  # 120 ms: the sixth frame of the tone
    assert not any(BeepDetector().feed(f) for f in frames(tone(0.3, amplitude=100)))  # too quiet
    assert not any(BeepDetector().feed(f) for f in frames(tone(0.3, freq=150)))  # below the band


def test_the_greeting_ends_on_the_beep():
    end = GreetingEnd()
    x = frames(speech("vm_greeting.wav"), silence(0.5), tone(0.4), silence(3))
    reason = next(r for r in (end.feed(f) for f in x) if r)
    greeting_s = len(speech("vm_greeting.wav")) / RATE
    assert reason == "beep" and end.at == pytest.approx(greeting_s + 0.5 + 0.12, abs=0.03)


def test_the_greeting_ends_on_silence_without_a_beep_and_times_out_while_talking():
    end = GreetingEnd(end_silence=1.0)
    x = frames(speech("vm_greeting.wav"), silence(3))
    assert next(r for r in (end.feed(f) for f in x) if r) == "silence"
    assert end.at is not None and end.at < len(speech("vm_greeting.wav")) / RATE + 1.5
    talking = GreetingEnd(max_wait=2.0)
    assert next(r for r in (talking.feed(f) for f in frames(speech("main_menu.wav"))) if r) == "timeout"
