"""ChunkedUpload: the outbound stream's own HTTP/1.1 writer, against raw loopback servers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from ivr.pbx.upload import MAX_RESPONSE_BYTES, ChunkedUpload

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/callcontrol/800/participants/1/stream"


async def read_head(reader: asyncio.StreamReader) -> list[str]:
    return (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[:-2]


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
    data = await reader.readexactly(size + 2)
    assert data.endswith(b"\r\n")
    return data[:-2]


async def test_head_goes_with_the_first_chunk_and_the_body_is_chunked() -> None:
    got: dict[str, object] = {}
    connected = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        got["head"] = await read_head(reader)
        chunks = []
        while chunk := await read_chunk(reader):
            chunks.append(chunk)
        got["chunks"] = chunks
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server, url = await serve(handler)
    async with server:
        up = await ChunkedUpload.open(url, {"Authorization": "Bearer t0k", "Content-Type": "application/octet-stream"},
                                      ssl=True, timeout=2)
        await asyncio.wait_for(connected.wait(), 2)
        await asyncio.sleep(0.05)
        assert "head" not in got and not up.started  # nothing sent before the first chunk
        up.write(b"\x01\x02" * 160)
        up.write(b"\x03\x04")
        up.finish()
        assert await asyncio.wait_for(up.response(), 2) == (200, "OK", b"ok")
    head = got["head"]
    assert isinstance(head, list)
    assert head[0] == "POST /callcontrol/800/participants/1/stream HTTP/1.1"
    assert "Transfer-Encoding: chunked" in head and "Authorization: Bearer t0k" in head
    assert any(h.startswith("Host: 127.0.0.1:") for h in head)
    assert got["chunks"] == [b"\x01\x02" * 160, b"\x03\x04"]


async def test_early_rejection_is_read_while_the_body_goes_on() -> None:
    # 401/424 arrive right after the first chunk, as chunked responses; nothing is lost.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await read_chunk(reader)
        body = b'{"message": "token expired"}'
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n"
                     b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"%x;ext=1\r\n%s\r\n" % (10, body[:10]) + b"%x\r\n%s\r\n" % (len(body) - 10, body[10:])
                     + b"0\r\nX-Trailer: 1\r\n\r\n")
        await writer.drain()
        await reader.read()  # keep the connection until the client closes it

    server, url = await serve(handler)
    async with server:
        up = await ChunkedUpload.open(url, {}, ssl=True, timeout=2)
        up.write(b"\x00" * 320)
        status, reason, body = await asyncio.wait_for(up.response(), 2)
        assert (status, reason, body) == (401, "Unauthorized", b'{"message": "token expired"}')
        up.close()


async def test_body_until_close_is_capped_and_a_cut_raises() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.0 500 Internal Server Error\r\n\r\n" + b"x" * (MAX_RESPONSE_BYTES + 5000))
        await writer.drain()
        writer.close()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.transport.abort()  # no response at all: the stream was cut

    server, url = await serve(until_close)
    async with server:
        up = await ChunkedUpload.open(url, {}, ssl=True, timeout=2)
        up.write(b"\x00" * 320)
        status, _, body = await asyncio.wait_for(up.response(), 2)
        assert status == 500 and len(body) == MAX_RESPONSE_BYTES

    server, url = await serve(cut)
    async with server:
        up = await ChunkedUpload.open(url, {}, ssl=True, timeout=2)
        up.write(b"\x00" * 320)
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(up.response(), 2)
        assert up.closed
        up.write(b"\x00" * 320)  # writing into a closed stream is a no-op, not an error


async def test_garbage_response_and_unreachable_host() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await reader.read()

    server, url = await serve(garbage)
    async with server:
        up = await ChunkedUpload.open(url, {}, ssl=True, timeout=2)
        up.write(b"\x00" * 320)
        with pytest.raises(ConnectionError, match="bad HTTP response"):
            await asyncio.wait_for(up.response(), 2)

    server, url = await serve(garbage)
    server.close()
    await server.wait_closed()
    with pytest.raises(OSError):
        await ChunkedUpload.open(url, {}, ssl=True, timeout=2)
