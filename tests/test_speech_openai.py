"""OpenAI-compatible LLM, STT and TTS adapters against a small fake service on loopback.

The fake speaks the real wire shapes (SSE chat chunks with streamed tool-call argument
fragments, multipart transcription, raw PCM / WAV speech) so parsing, assembly, errors,
timeouts and cancellation are exercised over a real socket.
"""

from __future__ import annotations

import asyncio
import json
import socket

import numpy as np
import pytest
from aiohttp import web

from ivr.speech import (
    AdapterFailed,
    AdapterHTTPError,
    AdapterTimeout,
    AdapterUnavailable,
    ChatMessage,
    TextDelta,
    ToolCall,
    ToolSpec,
    synthesize_all,
    transcribe,
)
from ivr.speech.llm_openai import DEFAULT_MAX_TOKENS, OpenAILLM, ToolCallAssembler
from ivr.speech.pcm import read_wav, wav_bytes
from ivr.speech.stt_openai import OpenAISTT
from ivr.speech.tts_openai import OpenAITTS

KEY = "sk-test-secret-123"


def chunk(delta=None, finish=None):
    return {"choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}


class FakeOpenAI:
    """Records requests; ``script`` decides each chat answer."""

    def __init__(self):
        self.requests: list[dict] = []
        self.disconnected = asyncio.Event()
        self.mode = "text"

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"body": body, "headers": dict(request.headers), "query": dict(request.query)})
        if self.mode == "401":
            return web.json_response({"error": {"message": "Incorrect API key provided"}}, status=401)
        if self.mode == "500":
            return web.Response(status=500, text="upstream exploded")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(obj, raw=None):
            await resp.write((raw or f"data: {json.dumps(obj)}\n\n").encode())

        try:
            if self.mode == "slow_first":
                await asyncio.sleep(2)
            await send(chunk({"role": "assistant", "content": None}))
            await resp.write(b": keep-alive comment\n\n")
            if self.mode in ("text", "endless", "stall"):
                for word in ["Hello", " there", "!"]:
                    await send(chunk({"content": word}))
                if self.mode == "stall":
                    await asyncio.sleep(2)
                while self.mode == "endless":
                    await send(chunk({"content": " more"}))
                    await asyncio.sleep(0.01)
                await send(chunk(finish="stop"))
            elif self.mode == "tools":
                # Two parallel calls, arguments split mid-token, ids only on the first fragment.
                await send(chunk({"content": "Let me route you."}))
                await send(chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                                  "function": {"name": "route_call", "arguments": ""}}]}))
                await send(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"depar'}}]}))
                await send(chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                                  "function": {"name": "log", "arguments": '{"n": 1'}}]}))
                await send(chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'tment": "billing"}'}}]}))
                await send(chunk({"tool_calls": [{"index": 1, "function": {"arguments": '}'}}]}))
                # one event split across two network writes
                raw = f"data: {json.dumps(chunk(finish='tool_calls'))}\n\n"
                await resp.write(raw[:20].encode())
                await asyncio.sleep(0.01)
                await resp.write(raw[20:].encode())
            elif self.mode == "bad_args":
                await send(chunk({"tool_calls": [{"index": 0, "id": "x", "function": {"name": "f", "arguments": "{oops"}}]}))
                await send(chunk(finish="tool_calls"))
            elif self.mode == "stream_error":
                await send({"error": {"message": "model overloaded"}})
            await resp.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        return resp

    async def transcriptions(self, request: web.Request) -> web.Response:
        form = await request.post()
        f = form["file"]
        pcm, rate = read_wav(f.file.read())
        self.requests.append({"form": {k: v for k, v in form.items() if k != "file"}, "rate": rate,
                              "samples": len(pcm), "headers": dict(request.headers)})
        if form.get("response_format") == "verbose_json":
            return web.json_response({"text": " Billing, please. ", "segments": [
                {"avg_logprob": -0.1}, {"avg_logprob": -0.3}]})
        return web.json_response({"text": "Billing, please."})

    async def speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"body": body, "headers": dict(request.headers)})
        n = int(24000 * 0.1 * len(body["input"].split()))  # 100 ms per word at 24 kHz
        t = np.arange(n) / 24000
        pcm = (8000 * np.sin(2 * np.pi * 300 * t)).astype("<i2")
        if body["response_format"] == "wav":
            return web.Response(body=wav_bytes(pcm.astype(np.int16), 24000), content_type="audio/wav")
        resp = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        await resp.prepare(request)
        data = pcm.tobytes()
        for i in range(0, len(data), 1001):  # odd sizes: samples straddle chunks
            await resp.write(data[i:i + 1001])
        return resp


@pytest.fixture
async def fake():
    svc = FakeOpenAI()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", svc.chat)
    app.router.add_post("/v1/audio/transcriptions", svc.transcriptions)
    app.router.add_post("/v1/audio/speech", svc.speech)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    svc.base_url = f"http://127.0.0.1:{port}/v1"
    yield svc
    await runner.cleanup()


def llm_for(svc, **kw) -> OpenAILLM:
    return OpenAILLM(base_url=svc.base_url, api_key=KEY, model="test-model", **kw)


MSGS = [ChatMessage("system", "You route calls."), ChatMessage("user", "My invoice is wrong.")]
ROUTE = ToolSpec("route_call", "Route the caller", {"type": "object", "properties": {"department": {"type": "string"}}})


async def test_stream_text(fake):
    llm = llm_for(fake, max_tokens=20)
    out = [d async for d in llm.stream(MSGS, temperature=0)]
    assert out == [TextDelta("Hello"), TextDelta(" there"), TextDelta("!")]
    req = fake.requests[0]
    assert req["body"]["stream"] is True and req["body"]["model"] == "test-model"
    assert req["body"]["messages"][1] == {"role": "user", "content": "My invoice is wrong."}
    assert req["body"]["temperature"] == 0 and req["body"]["max_tokens"] == 20 and "tools" not in req["body"]
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(llm)
    await llm.aclose()


async def test_tool_calls_assembled_from_fragments(fake):
    fake.mode = "tools"
    llm = llm_for(fake, tool_choice="auto")
    history = [*MSGS, ChatMessage("assistant", "", tool_calls=(ToolCall("c0", "lookup", {"id": 7}),)),
               ChatMessage("tool", '{"ok": true}', tool_call_id="c0")]
    out = [d async for d in llm.stream(history, tools=[ROUTE])]
    assert out == [TextDelta("Let me route you."), ToolCall("call_a", "route_call", {"department": "billing"}),
                   ToolCall("call_b", "log", {"n": 1})]
    body = fake.requests[0]["body"]
    assert body["tools"][0]["function"]["name"] == "route_call" and body["tool_choice"] == "auto"
    assert body["messages"][2]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"id": 7}'}
    assert body["messages"][3] == {"role": "tool", "content": '{"ok": true}', "tool_call_id": "c0"}
    await llm.aclose()


async def test_bad_tool_arguments_and_stream_error(fake):
    llm = llm_for(fake)
    fake.mode = "bad_args"
    with pytest.raises(AdapterFailed, match=r"openai: tool call 'f' has arguments that are not valid JSON"):
        [d async for d in llm.stream(MSGS, tools=[ROUTE])]
    fake.mode = "stream_error"
    with pytest.raises(AdapterFailed, match="server error in stream: model overloaded"):
        [d async for d in llm.stream(MSGS)]
    await llm.aclose()


async def test_http_errors_are_typed_and_never_show_the_key(fake):
    llm = llm_for(fake)
    fake.mode = "401"
    with pytest.raises(AdapterHTTPError) as e:
        [d async for d in llm.stream(MSGS)]
    assert e.value.status == 401 and "check api_key" in str(e.value) and "Incorrect API key" in str(e.value)
    assert KEY not in str(e.value)
    fake.mode = "500"
    with pytest.raises(AdapterHTTPError, match="HTTP 500: upstream exploded"):
        [d async for d in llm.stream(MSGS)]
    await llm.aclose()


async def test_unreachable_server_is_unavailable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = OpenAILLM(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY)
    with pytest.raises(AdapterUnavailable, match=r"cannot connect to http://127.0.0.1:\d+/v1"):
        [d async for d in llm.stream(MSGS)]
    await llm.aclose()


async def test_first_token_and_stall_timeouts(fake):
    fake.mode = "slow_first"
    llm = llm_for(fake, timeout=5, first_token_timeout=0.2)
    with pytest.raises(AdapterTimeout, match="chat completion took longer than 0.2 s"):
        [d async for d in llm.stream(MSGS)]
    fake.mode = "stall"
    llm2 = llm_for(fake, timeout=0.2, first_token_timeout=5)
    got = []
    with pytest.raises(AdapterTimeout):
        async for d in llm2.stream(MSGS):
            got.append(d)
    assert got == [TextDelta("Hello"), TextDelta(" there"), TextDelta("!")]
    await llm.aclose()
    await llm2.aclose()


async def test_cancelling_the_consumer_closes_the_request(fake):
    fake.mode = "endless"
    llm = llm_for(fake)
    got = []

    async def consume():
        async for d in llm.stream(MSGS):
            got.append(d)

    task = asyncio.create_task(consume())
    while len(got) < 5:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(fake.disconnected.wait(), 2)  # the server saw the client go away
    await llm.aclose()


async def test_azure_style_endpoint(fake):
    llm = OpenAILLM(base_url=fake.base_url, api_key=KEY, api_version="2024-06-01", auth="api-key")
    assert [d async for d in llm.stream(MSGS)][0] == TextDelta("Hello")
    req = fake.requests[0]
    assert req["query"] == {"api-version": "2024-06-01"} and req["headers"]["api-key"] == KEY
    assert "Authorization" not in req["headers"]
    await llm.aclose()


def test_assembler_index_order_and_empty_arguments():
    a = ToolCallAssembler()
    a.add([{"index": 1, "id": "b", "function": {"name": "second"}}])
    a.add([{"index": 0, "id": "a", "function": {"name": "first", "arguments": "{}"}}])
    assert a.complete() == [ToolCall("a", "first", {}), ToolCall("b", "second", {})]
    assert a.complete() == []


async def test_openai_stt_sends_wav_and_reads_confidence(fake):
    stt = OpenAISTT(base_url=fake.base_url, api_key=KEY, response_format="verbose_json")
    pcm = (np.sin(np.arange(8000) / 5) * 3000).astype(np.int16)
    r = await transcribe(stt, pcm, phrases=["billing", "sales"], language="en-US")
    assert r.text == "Billing, please." and r.is_final
    assert r.confidence == pytest.approx(np.exp(-0.2), abs=1e-4)
    req = fake.requests[0]
    assert req["rate"] == 8000 and req["samples"] == 8000
    assert req["form"] == {"model": "whisper-1", "response_format": "verbose_json", "prompt": "billing, sales",
                           "language": "en"}
    plain = OpenAISTT(base_url=fake.base_url, api_key=KEY)
    assert (await transcribe(plain, pcm)).confidence == 1.0  # the service gave none
    await stt.aclose()
    await plain.aclose()


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
async def test_openai_tts_resamples_to_8k_per_sentence(fake, fmt):
    tts = OpenAITTS(base_url=fake.base_url, api_key=KEY, response_format=fmt)
    chunks = [c async for c in tts.synthesize("Press one for sales. Press two.", rate=1.25)]
    assert [len(c) for c in chunks] == [pytest.approx(3200, abs=8), pytest.approx(1600, abs=8)]
    assert all(c.dtype == np.int16 for c in chunks)
    # a 300 Hz tone stays a 300 Hz tone after 24k -> 8k
    spectrum = np.abs(np.fft.rfft(chunks[0].astype(float)))
    assert abs(np.argmax(spectrum) * 8000 / len(chunks[0]) - 300) < 5
    assert [r["body"]["input"] for r in fake.requests] == ["Press one for sales.", "Press two."]
    assert fake.requests[0]["body"]["speed"] == 1.25 and fake.requests[0]["body"]["voice"] == "alloy"
    assert len(await synthesize_all(tts, "")) == 0
    await tts.aclose()


async def test_replies_are_capped_by_default(fake):
    llm = llm_for(fake)  # no max_tokens given: a runaway model must not talk for ever
    [d async for d in llm.stream(MSGS)]
    assert fake.requests[-1]["body"]["max_tokens"] == DEFAULT_MAX_TOKENS == 512
    uncapped = llm_for(fake, max_tokens=None)
    [d async for d in uncapped.stream(MSGS)]
    assert "max_tokens" not in fake.requests[-1]["body"]
    await llm.aclose()
    await uncapped.aclose()
