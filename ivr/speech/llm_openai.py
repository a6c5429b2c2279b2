"""``openai`` LLM: streaming ``/chat/completions`` of any OpenAI-compatible server.

Text arrives as ``TextDelta`` pieces; tool calls are streamed by the server as argument
fragments per ``index`` and are yielded here only when complete, as ``ToolCall`` objects
with parsed arguments. Closing or cancelling the consumer closes the HTTP response, which
tells the server to stop generating.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import AdapterFailed, ChatMessage, LLMDelta, TextDelta, ToolCall, ToolSpec, iter_with_timeout
from .openai_http import OpenAIEndpoint

NAME = "openai"
#: Default cap on one reply's tokens: a phone answer is a few sentences (512 tokens are about
#: two minutes of speech); without a cap a runaway model holds the call. None sends no cap.
DEFAULT_MAX_TOKENS = 512


def message_to_wire(m: ChatMessage) -> dict[str, Any]:
    """One ``ChatMessage`` in the chat-completions JSON shape."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                             for c in m.tool_calls]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.name:
        out["name"] = m.name
    return out


def tool_to_wire(t: ToolSpec) -> dict[str, Any]:
    """One ``ToolSpec`` as a chat-completions function tool."""
    return {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}


async def sse_events(content: Any) -> AsyncIterator[str]:
    """The ``data`` payloads of a Server-Sent Events body (multi-line data joined with newlines)."""
    data: list[str] = []
    buf = b""
    async for chunk in content.iter_any():
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8")
            if not line:  # blank line: end of one event
                if data:
                    yield "\n".join(data)
                    data = []
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            # comments (":") and other fields (event, id, retry) carry nothing we use
    if buf.strip().startswith(b"data:"):
        data.append(buf.strip()[5:].decode("utf-8").removeprefix(" "))
    if data:
        yield "\n".join(data)


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Collect streamed ``tool_calls`` deltas (by index) into complete ``ToolCall`` objects."""

    def __init__(self, adapter: str = NAME) -> None:
        self.adapter = adapter
        self._calls: dict[int, _PartialCall] = {}

    def add(self, deltas: list[dict[str, Any]]) -> None:
        """Merge one chunk's ``delta.tool_calls`` list."""
        for d in deltas:
            pc = self._calls.setdefault(int(d.get("index", len(self._calls))), _PartialCall())
            pc.id = d.get("id") or pc.id
            fn = d.get("function") or {}
            pc.name = fn.get("name") or pc.name
            if fn.get("arguments"):
                pc.arguments.append(fn["arguments"])

    def complete(self) -> list[ToolCall]:
        """The calls gathered so far, in index order, arguments parsed; then forget them."""
        out = []
        for index in sorted(self._calls):
            pc = self._calls[index]
            text = "".join(pc.arguments).strip() or "{}"
            try:
                args = json.loads(text)
            except json.JSONDecodeError as e:
                raise AdapterFailed(f"tool call {pc.name!r} has arguments that are not valid JSON ({e}): {text[:80]!r}",
                                    adapter=self.adapter) from None
            if not isinstance(args, dict):
                raise AdapterFailed(f"tool call {pc.name!r} arguments must be a JSON object, got {text[:80]!r}",
                                    adapter=self.adapter)
            out.append(ToolCall(pc.id or f"call_{index}", pc.name, args))
        self._calls.clear()
        return out


class OpenAILLM:
    """Chat model over an OpenAI-compatible API (registry name ``openai``).

    Options: ``model`` (default ``gpt-4o-mini``), ``base_url``, ``api_key`` (else
    ``$OPENAI_API_KEY``), ``api_version`` and ``auth="api-key"`` for Azure, ``timeout``
    (connect / between chunks, default 30 s), ``first_token_timeout`` (default: ``timeout``),
    ``max_tokens`` (default 512; ``None``: no cap), ``temperature``, ``tool_choice``, ``extra_body`` (merged into every
    request: e.g. ``response_format`` or llama.cpp's ``grammar``), ``extra_headers``.
    """

    name = NAME

    def __init__(self, *, model: str = "gpt-4o-mini", base_url: str | None = None, api_key: str | None = None,
                 api_version: str | None = None, auth: str = "bearer", timeout: float = 30.0,
                 first_token_timeout: float | None = None, max_tokens: int | None = DEFAULT_MAX_TOKENS,
                 temperature: float | None = None, tool_choice: str | dict | None = None,
                 extra_body: dict[str, Any] | None = None, extra_headers: dict[str, str] | None = None) -> None:
        self.endpoint = OpenAIEndpoint(NAME, base_url=base_url, api_key=api_key, api_version=api_version,
                                       auth=auth, timeout=timeout, extra_headers=extra_headers)
        self.model, self.max_tokens, self.temperature = model, max_tokens, temperature
        self.tool_choice, self.extra_body = tool_choice, dict(extra_body or {})
        self.first_token_timeout = first_token_timeout if first_token_timeout is not None else timeout
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"OpenAILLM(model={self.model!r}, endpoint={self.endpoint!r})"

    def request_body(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec],
                     temperature: float | None) -> dict[str, Any]:
        """The JSON body for one streamed chat completion."""
        body: dict[str, Any] = {"model": self.model, "stream": True,
                                "messages": [message_to_wire(m) for m in messages]}
        if tools:
            body["tools"] = [tool_to_wire(t) for t in tools]
            if self.tool_choice is not None:
                body["tool_choice"] = self.tool_choice
        temp = temperature if temperature is not None else self.temperature
        if temp is not None:
            body["temperature"] = temp
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        body.update(self.extra_body)
        return body

    def stream(self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = (),
               temperature: float | None = None) -> AsyncIterator[LLMDelta]:
        """Yield ``TextDelta`` and complete ``ToolCall`` items; raises typed ``SpeechError``s."""
        if not messages:
            raise ValueError("openai.stream: messages is empty")
        body = self.request_body(messages, tools, temperature)
        return iter_with_timeout(self._stream(body), first=self.first_token_timeout, between=self.timeout,
                                 adapter=NAME, what="chat completion")

    async def _stream(self, body: dict[str, Any]) -> AsyncIterator[LLMDelta]:
        calls = ToolCallAssembler()
        async with self.endpoint.request("/chat/completions", "chat completion", json=body) as resp:
            async for data in sse_events(resp.content):
                if data.strip() == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except json.JSONDecodeError:
                    raise AdapterFailed(f"chat completion: server sent a non-JSON event: {data[:80]!r}",
                                        adapter=NAME) from None
                if event.get("error"):
                    err = event["error"]
                    msg = err.get("message", err) if isinstance(err, dict) else err
                    raise AdapterFailed(f"chat completion: server error in stream: {msg}", adapter=NAME)
                for choice in event.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        yield TextDelta(delta["content"])
                    if delta.get("tool_calls"):
                        calls.add(delta["tool_calls"])
                    if choice.get("finish_reason"):
                        for call in calls.complete():
                            yield call
        for call in calls.complete():  # servers that end the stream without a finish_reason
            yield call

    async def aclose(self) -> None:
        """Close the HTTP session."""
        await self.endpoint.aclose()
