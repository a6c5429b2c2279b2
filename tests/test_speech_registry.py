"""Speech protocols, errors, timeout helpers, registry discovery and the test doubles."""

from __future__ import annotations

import asyncio
import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pytest

from ivr.speech import (
    AdapterFailed,
    AdapterTimeout,
    ChatMessage,
    LanguageModel,
    Registry,
    SpeechError,
    SpeechToText,
    TextDelta,
    TextToSpeech,
    ToolCall,
    Transcript,
    UnknownAdapter,
    iter_with_timeout,
    synthesize_all,
    transcribe,
    with_timeout,
)
from ivr.speech.testing import ScriptedLLM, ScriptedSTT, ToneTTS, Turn
from ivr.speech.text import normalize_phrase, split_sentences

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_adapter"


@pytest.fixture
def example_on_path():
    sys.path.insert(0, str(EXAMPLE))
    yield
    sys.path.remove(str(EXAMPLE))
    sys.modules.pop("ivr_example_adapter", None)


def fake_entry_points(*eps: importlib.metadata.EntryPoint):
    return lambda group: [ep for ep in eps if ep.group == group]


def test_import_ivr_speech_is_light():
    # Engines load only on first use: importing the package must not pull them in.
    import subprocess

    code = ("import sys, ivr.speech; heavy = [m for m in ('pocketsphinx', 'hibari', 'onnxruntime', 'aiohttp', 'soxr')"
            " if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_sentences_and_phrases():
    assert split_sentences("Hi there. Dr. Smith is in! Is it? Yes\nNext line") == [
        "Hi there.", "Dr. Smith is in!", "Is it?", "Yes", "Next line"]
    assert split_sentences(" ... ") == []
    assert normalize_phrase("  Technical-Support, please! ") == "technical support please"


def test_transcript_and_message_validation():
    with pytest.raises(ValueError, match=r"confidence must be in 0..1"):
        Transcript("x", confidence=1.5)
    with pytest.raises(ValueError, match="role must be"):
        ChatMessage("robot", "hi")
    with pytest.raises(ValueError, match="tool_call_id"):
        ChatMessage("tool", "42")


def test_error_hierarchy_lets_flows_branch():
    e = AdapterTimeout("took too long", adapter="openai")
    assert isinstance(e, SpeechError) and isinstance(e, TimeoutError)
    assert str(e) == "openai: took too long" and e.adapter == "openai"
    assert issubclass(UnknownAdapter, LookupError)


async def test_with_timeout_and_iter_with_timeout():
    assert await with_timeout(asyncio.sleep(0, "ok"), 1.0, adapter="x", what="w") == "ok"
    with pytest.raises(AdapterTimeout, match=r"x: slow thing took longer than 0.02 s"):
        await with_timeout(asyncio.sleep(1), 0.02, adapter="x", what="slow thing")

    closed = []

    async def gen(delays):
        try:
            for d in delays:
                await asyncio.sleep(d)
                yield d
        finally:
            closed.append(True)

    assert [x async for x in iter_with_timeout(gen([0, 0]), first=0.5, between=0.5, adapter="a", what="w")] == [0, 0]
    with pytest.raises(AdapterTimeout, match="first"):
        [x async for x in iter_with_timeout(gen([1]), first=0.02, between=5, adapter="a", what="first")]
    with pytest.raises(AdapterTimeout, match="stall"):
        [x async for x in iter_with_timeout(gen([0, 1]), first=5, between=0.02, adapter="a", what="stall")]
    assert closed == [True, True, True]


async def test_scripted_llm_streams_tokens_and_tools_and_records():
    call = ToolCall("c1", "transfer", {"to": "sales"})
    llm = ScriptedLLM(["Hello there friend", Turn("One moment.", [call]),
                       {"tool_calls": [{"name": "hangup"}]}], token_delay=0.001)
    assert isinstance(llm, LanguageModel)
    msgs = [ChatMessage("user", "hi")]
    out = [d async for d in llm.stream(msgs)]
    assert out == [TextDelta("Hello"), TextDelta(" there"), TextDelta(" friend")]
    out = [d async for d in llm.stream(msgs, temperature=0.2)]
    assert out == [TextDelta("One"), TextDelta(" moment."), call]
    out = [d async for d in llm.stream(msgs)]
    assert out == [ToolCall("call_0", "hangup", {})]
    assert [c.temperature for c in llm.calls] == [None, 0.2, None] and llm.calls[0].messages == msgs
    with pytest.raises(AdapterFailed, match="no scripted turn left"):
        [d async for d in llm.stream(msgs)]


async def test_scripted_stt_and_tone_tts():
    stt = ScriptedSTT(["sales", Transcript("billing", 0.4, True)])
    tts = ToneTTS()
    assert isinstance(stt, SpeechToText) and isinstance(tts, TextToSpeech)
    audio = await synthesize_all(tts, "Press one. Press two.")
    assert audio.dtype == np.int16 and len(audio) == 2 * (int(8000 * 10 * 0.04) + 800)
    r = await transcribe(stt, audio, phrases=["sales", "billing"])
    assert (r.text, r.is_final, stt.streams[0].samples_fed, stt.streams[0].closed) == ("sales", True, len(audio), True)
    assert (await transcribe(stt, audio)).confidence == 0.4
    with pytest.raises(AdapterFailed, match="no scripted transcript left"):
        await transcribe(stt, audio)  # at finish(): an abandoned stream consumes no transcript


async def test_feed_type_check():
    stream = ScriptedSTT(["x"]).start()
    with pytest.raises(TypeError, match=r"scripted.feed: expected a 1-D int16 numpy array .*float64 array"):
        await stream.feed(np.zeros(10))


def test_registry_builtins_unknown_and_cache():
    reg = Registry(entry_points=fake_entry_points())
    names = reg.available()
    assert {"pocketsphinx", "openai", "scripted"} <= set(names["stt"])
    assert {"hibari", "espeak", "openai", "tone"} <= set(names["tts"])
    assert {"openai", "scripted"} <= set(names["llm"])
    with pytest.raises(UnknownAdapter, match=r"unknown tts adapter 'nope'; known: .*espeak, hibari"):
        reg.get("tts", "nope")
    with pytest.raises(ValueError, match="kind must be one of stt, tts, llm"):
        reg.get("asr", "x")
    a = reg.get("tts", "tone", ms_per_char=10)
    assert reg.get("tts", "tone", ms_per_char=10) is a
    assert reg.get("tts", "tone", ms_per_char=20) is not a
    assert reg.get("llm", "scripted", turns=["hi"]) is reg.get("llm", "scripted", turns=["hi"])
    with pytest.raises(TypeError, match=r"tts adapter 'tone': bad options \['colour'\]"):
        reg.get("tts", "tone", colour="red")
    reg.register("tts", "mine", lambda **o: ToneTTS(**o))
    assert "mine" in reg.names("tts") and isinstance(reg.get("tts", "mine"), ToneTTS)


async def test_registry_discovers_entry_point_of_example_package(example_on_path):
    ep = importlib.metadata.EntryPoint(name="beep", value="ivr_example_adapter:BeepTTS", group="ivr.tts")
    broken = importlib.metadata.EntryPoint(name="broken", value="no_such_module_xyz:X", group="ivr.stt")
    reg = Registry(entry_points=fake_entry_points(ep, broken))
    assert "beep" in reg.names("tts") and "broken" in reg.names("stt")
    beep = reg.get("tts", "beep", pitch=880)
    assert isinstance(beep, TextToSpeech) and beep.pitch == 880
    audio = await synthesize_all(beep, "one two three. four")
    # 4 words, 120 ms beep + 60 ms gap each
    assert audio.dtype == np.int16 and len(audio) == 4 * (960 + 480)
    with pytest.raises(UnknownAdapter, match=r"stt adapter 'broken': entry point 'no_such_module_xyz:X' failed"):
        reg.get("stt", "broken")


def test_entry_point_overriding_builtin_warns(caplog, example_on_path):
    ep = importlib.metadata.EntryPoint(name="hibari", value="ivr_example_adapter:BeepTTS", group="ivr.tts")
    reg = Registry(entry_points=fake_entry_points(ep))
    assert type(reg.get("tts", "hibari")).__name__ == "BeepTTS"
    assert "replaces the built-in tts adapter 'hibari'" in caplog.text
