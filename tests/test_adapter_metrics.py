"""ivr_adapter_latency_seconds measures every adapter kind: TTS (first audio), STT (end of the
utterance to its transcript: speech input in a menu, the agent's turns) and the LLM (request
to its first delta), over a real call on the worker."""

from __future__ import annotations

import asyncio
import itertools
import re
import textwrap
from pathlib import Path

import numpy as np
from helpers import write_tone

from ivr.simulate import FlowHarness
from ivr.speech import ToolCall, register
from ivr.speech.services import SpeechServices
from ivr.speech.testing import ScriptedLLM, ScriptedSTT, ToneTTS, Turn

_names = itertools.count()


def voice(seconds: float = 0.6, f0: float = 140.0) -> np.ndarray:
    """Speech-like audio for the VAD: a harmonic buzz with a syllable rhythm."""
    t = np.arange(int(seconds * 8000)) / 8000
    sig = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (sig * env / np.max(np.abs(sig)) * 12000).astype(np.int16)


def count(text: str, kind: str, name: str) -> float:
    m = re.search(rf'^ivr_adapter_latency_seconds_count\{{kind="{kind}",name="{name}"\}} (\S+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


async def test_stt_and_llm_latency_are_measured_as_tts_is(tmp_path: Path) -> None:
    n = next(_names)
    stt = ScriptedSTT(["sales", "when are you open"])
    llm = ScriptedLLM([Turn("Bye.", [ToolCall("c1", "return_to_flow", {})])])
    register("llm", f"m-llm-{n}", lambda: llm)
    register("stt", f"m-stt-{n}", lambda: stt)
    register("tts", f"m-tts-{n}", lambda: ToneTTS(ms_per_char=10))
    speech = SpeechServices(llm=f"m-llm-{n}", stt=f"m-stt-{n}", tts=f"m-tts-{n}", tts_cache=False)
    write_tone(tmp_path / "menu.wav", 0.3)
    flow = tmp_path / "both.yaml"
    flow.write_text(textwrap.dedent("""
        steps:
          - answer
          - menu:
              prompt: menu.wav
              timeout: 5
              speech: {phrases: {"1": [sales]}}
              choices: {"1": [{log: sales}]}
          - agent:
              greeting: "Hi."
              silence_timeout: 5
              tools: {return: {description: "done"}}
          - hangup
    """))
    async with FlowHarness(flow, speech=speech) as h:
        callid, call = await h.place_call()
        while call.listen_count == 0:
            await asyncio.sleep(0.02)
        await h.emulator.speak(callid, voice(), wait=True)  # "sales", to the menu
        while not any(e["role"] == "assistant" for e in call.call_record.transcript):
            await asyncio.sleep(0.02)
        await h.emulator.speak(callid, voice(), wait=True)  # "when are you open", to the agent
        record = await asyncio.wait_for(h.record_of(call), 30)
        text = h.worker.metrics.render().decode()
    assert [s.step for s in record.steps][:2] == ["answer", "menu"], record.to_dict()
    assert record.steps[1].result["source"] == "speech"
    assert count(text, "stt", "scripted") == 2  # the menu's utterance and the agent's turn
    assert count(text, "llm", "scripted") == 1
    assert count(text, "tts", "tone") >= 2  # "Hi." and "Bye."
