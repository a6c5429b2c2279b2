"""Streaming recognition (ivr.call.utterance) and the agent's end-of-turn silence.

The VAD pieces the recognizer relies on are checked sans-I/O; the rest runs the full path:
emulator (caller speaks a synthetic voice) -> worker -> Call -> VAD -> UtteranceRecognizer
-> the scripted STT, which records what it was fed and when ``finish()`` came.
"""

from __future__ import annotations

import asyncio
import itertools
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ivr.audio.vad import SpeechEnded, VoiceActivityDetector
from ivr.simulate import FlowHarness, until_listening
from ivr.speech import register
from ivr.speech.services import SpeechServices
from ivr.speech.testing import ScriptedLLM, ScriptedSTT, ToneTTS

_names = itertools.count()


def voice(seconds: float, f0: float = 140.0) -> np.ndarray:
    """Speech-like audio for the VAD: a harmonic buzz with a syllable rhythm."""
    t = np.arange(int(seconds * 8000)) / 8000
    sig = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (sig * env / np.max(np.abs(sig)) * 12000).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 8000), np.int16)


def services(stt: ScriptedSTT, llm: ScriptedLLM | None = None) -> SpeechServices:
    n = next(_names)
    register("stt", f"utt-stt-{n}", lambda: stt)
    register("llm", f"utt-llm-{n}", lambda: llm or ScriptedLLM([]))
    register("tts", f"utt-tts-{n}", lambda: ToneTTS(ms_per_char=10))
    return SpeechServices(llm=f"utt-llm-{n}", stt=f"utt-stt-{n}", tts=f"utt-tts-{n}", tts_cache=False)


async def until(cond, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


# --- the VAD contract (sans-I/O) -----------------------------------------------------------


def test_streamed_frames_are_the_prefix_of_the_utterance_audio():
    """What a listener can take during speech, plus the rest from SpeechEnded, is exactly
    the utterance's audio (pre-roll included)."""
    vad = VoiceActivityDetector(end_ms=300)
    pcm = np.concatenate([silence(0.5), voice(0.8), silence(0.6)])
    taken: list[np.ndarray] = []
    start = None
    ended: list[SpeechEnded] = []
    for i in range(0, len(pcm) - 159, 160):
        if vad.utterance_start is not None:  # the listener runs before the VAD sees the frame
            start = vad.utterance_start
            taken += vad.utterance_frames(len(taken))
        ended += [e for e in vad.feed(pcm[i:i + 160]) if isinstance(e, SpeechEnded)]
    assert len(ended) == 1 and ended[0].start == start
    streamed = np.concatenate(taken)
    assert 0 < len(streamed) < len(ended[0].audio)
    assert np.array_equal(ended[0].audio[:len(streamed)], streamed)
    assert vad.utterance_start is None and vad.utterance_frames() == []


def test_end_ms_can_change_between_utterances():
    vad = VoiceActivityDetector(end_ms=500)
    assert vad.end_ms == 500
    vad.end_ms = 1000
    pcm = np.concatenate([voice(0.6), silence(0.8), voice(0.6), silence(1.3)])
    events = [e for i in range(0, len(pcm) - 159, 160) for e in vad.feed(pcm[i:i + 160])]
    assert [type(e).__name__ for e in events] == ["SpeechStarted", "SpeechEnded"]  # the pause did not end it
    with pytest.raises(ValueError, match="end_ms"):
        vad.end_ms = -1


# --- the full path -------------------------------------------------------------------------


def agent_flow(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text("steps:\n  - answer\n  - agent:\n      silence_timeout: 5\n      max_turns: 1\n"
                    f"{extra}  - hangup\n")
    return path


async def test_agent_feeds_the_stt_while_the_caller_speaks(tmp_path: Path) -> None:
    stt = ScriptedSTT(["when are you open"])
    llm = ScriptedLLM(["Nine to five."])
    async with FlowHarness(agent_flow(tmp_path), speech=services(stt, llm)) as h:
        callid, call = await h.place_call()
        await until(lambda: call.media.vad.end_ms == 700)  # the agent listens, with its end of turn
        await h.emulator.speak(callid, np.concatenate([voice(2.0), silence(1.0)]))
        await asyncio.sleep(1.3)  # the caller is still speaking (the turn ends ~0.7 s after 2.0 s)
        assert len(stt.streams) == 1
        mid = stt.streams[0]
        assert mid.samples_fed >= 0.4 * 8000 and mid.feeds >= 2 and not mid.finished
        record = await asyncio.wait_for(h.record_of(call), 15)
    assert mid.finished and mid.closed
    assert [e["text"] for e in record.transcript if e["role"] == "user"] == ["when are you open"]
    assert len(llm.calls) == 1
    assert call.media.vad.end_ms == 500  # restored for the gathers after the agent


async def test_a_cough_is_dropped_before_recognition(tmp_path: Path) -> None:
    """A burst too short for the VAD (SpeechCancelled): its stream is abandoned unfinished
    and the next utterance gets the first transcript."""
    stt = ScriptedSTT(["hello"])
    llm = ScriptedLLM(["Hi."])
    async with FlowHarness(agent_flow(tmp_path), speech=services(stt, llm)) as h:
        callid, call = await h.place_call()
        await until(lambda: call.media.vad.end_ms == 700)
        await h.emulator.speak(callid, np.concatenate([voice(0.1), silence(1.0)]), wait=True)
        await until(lambda: len(stt.streams) == 1 and stt.streams[0].closed)
        await h.emulator.speak(callid, np.concatenate([voice(0.8), silence(1.0)]))
        record = await asyncio.wait_for(h.record_of(call), 15)
    cough, words = stt.streams
    assert not cough.finished and words.finished
    assert [e["text"] for e in record.transcript if e["role"] == "user"] == ["hello"]


async def test_a_pause_shorter_than_end_of_turn_does_not_end_the_turn(tmp_path: Path) -> None:
    """0.8 s of silence inside the sentence: the media's 500 ms would cut it in two; the
    agent's end_of_turn_ms of 1200 keeps it one turn (one STT stream, one user line)."""
    stt = ScriptedSTT(["a sentence with a pause"])  # a second utterance would fail the STT
    llm = ScriptedLLM(["Got it."])
    path = agent_flow(tmp_path, "      end_of_turn_ms: 1200\n")
    async with FlowHarness(path, speech=services(stt, llm)) as h:
        callid, call = await h.place_call()
        await until(lambda: call.media.vad.end_ms == 1200)
        await h.emulator.speak(callid, np.concatenate([voice(0.6), silence(0.8), voice(0.6), silence(1.5)]))
        record = await asyncio.wait_for(h.record_of(call), 15)
    assert [e["text"] for e in record.transcript if e["role"] == "user"] == ["a sentence with a pause"]
    assert len(stt.streams) == 1
    turn = record.metrics["agent_turns"][0]
    assert turn["speech_ms"] >= 1800 and turn["vad_hangover_ms"] >= 1100
    assert record.steps[-2].result["status"] == "max_turns"


async def test_gather_feeds_the_stt_while_the_caller_speaks(tmp_path: Path) -> None:
    stt = ScriptedSTT(["sales"])
    flow = tmp_path / "g.yaml"
    flow.write_text(textwrap.dedent("""
        steps:
          - answer
          - gather:
              first_digit_timeout: 5
              retries: 0
              speech: {phrases: [sales, support]}
          - set: {got: "{{ last.choice }}", how: "{{ last.source }}"}
          - hangup
    """))
    async with FlowHarness(flow, speech=services(stt)) as h:
        callid, call = await h.place_call()
        assert await until_listening(call, 10)
        await h.emulator.speak(callid, np.concatenate([voice(1.5), silence(1.0)]))
        await asyncio.sleep(1.0)  # still speaking: the gather's 500 ms end comes after 1.5 s
        assert len(stt.streams) == 1 and stt.streams[0].samples_fed >= 0.3 * 8000
        assert not stt.streams[0].finished
        assert stt.streams[0].phrases == ["sales", "support"]
        await asyncio.wait_for(h.record_of(call), 15)
    assert call.vars["got"] == "sales" and call.vars["how"] == "speech"
    assert stt.streams[0].finished and stt.streams[0].closed


async def test_a_failing_caller_audio_listener_is_dropped_and_the_call_goes_on(tmp_path: Path, caplog) -> None:
    # A tap's bug (an STT adapter's listener raising) must cost only that tap: the call still
    # hears the caller's key, and the audio is analysed once.
    flow = tmp_path / "tap.py"
    flow.write_text(textwrap.dedent("""
        async def main(call):
            await call.answer()

            def broken(frame):
                raise RuntimeError("a bug in a tap")

            call.media.add_listener(broken)
            result = await call.gather(max_digits=1, first_digit_timeout=5, retries=0)
            call.vars["got"] = result.digits
            call.vars["listeners"] = len(call.media._listeners)
            await call.hangup()
    """))
    from ivr.audio.dtmf import generate_dtmf

    async with FlowHarness(flow) as h:
        callid, call = await h.place_call()
        assert await until_listening(call, 10)
        await h.emulator.speak(callid, np.concatenate([silence(0.2), generate_dtmf("7", 120, 100), silence(0.3)]))
        await asyncio.wait_for(h.record_of(call), 15)
        assert abs(call.media.vad.time - call.media.processor.time) < 1e-9  # each frame analysed once
    assert call.vars["got"] == "7" and call.vars["listeners"] == 0
    assert "a caller-audio listener failed and was removed" in caplog.text
