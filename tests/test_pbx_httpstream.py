"""HttpStream: the audio streams' own HTTP/1.1 client, against raw loopback servers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from ivr.pbx.httpstream import MAX_RESPONSE_BYTES, HttpStream

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
        up = await HttpStream.post(url, {"Authorization": "Bearer t0k", "Content-Type": "application/octet-stream"},
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
        up = await HttpStream.post(url, {}, ssl=True, timeout=2)
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
        up = await HttpStream.post(url, {}, ssl=True, timeout=2)
        up.write(b"\x00" * 320)
        status, _, body = await asyncio.wait_for(up.response(), 2)
        assert status == 500 and len(body) == MAX_RESPONSE_BYTES

    server, url = await serve(cut)
    async with server:
        up = await HttpStream.post(url, {}, ssl=True, timeout=2)
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
        up = await HttpStream.post(url, {}, ssl=True, timeout=2)
        up.write(b"\x00" * 320)
        with pytest.raises(ConnectionError, match="bad HTTP response"):
            await asyncio.wait_for(up.response(), 2)

    server, url = await serve(garbage)
    server.close()
    await server.wait_closed()
    with pytest.raises(OSError):
        await HttpStream.post(url, {}, ssl=True, timeout=2)


async def test_get_streams_a_chunked_body_in_blocks_and_reports_a_cut() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        assert head[0].startswith("GET /callcontrol/800/participants/1/stream HTTP/1.1")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(5):  # chunks split across writes, as TCP may deliver them
            frame = b"140\r\n" + bytes([i]) * 320 + b"\r\n"
            writer.write(frame[:100])
            await writer.drain()
            writer.write(frame[100:])
            await writer.drain()
        await release.wait()
        writer.write(b"140\r\n" + b"\x09" * 100)  # a chunk cut short
        await writer.drain()
        writer.transport.abort()

    server, url = await serve(handler)
    async with server:
        conn = await HttpStream.get(url, {"Authorization": "Bearer x"}, ssl=True, timeout=2)
        assert await asyncio.wait_for(conn.head(), 2) == (200, "OK")
        got = bytearray()
        for _ in range(100):
            got += conn.take()
            if len(got) >= 1600:
                break
            await asyncio.sleep(0.01)
        assert bytes(got) == b"".join(bytes([i]) * 320 for i in range(5))
        release.set()
        for _ in range(200):  # once taken, the socket is read (and its end seen) only by take()
            if conn.body_done.done():
                break
            assert conn.take() == b""  # the cut-short chunk is not audio
            await asyncio.sleep(0.01)
        assert isinstance(conn.body_done.result(), ConnectionError)


async def test_get_hands_chunks_to_on_body_and_ends_cleanly_on_the_zero_chunk() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # on_body is set after head(): nothing may be lost before
        writer.write(b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    server, url = await serve(handler)
    async with server:
        conn = await HttpStream.get(url, {}, ssl=True, timeout=2)
        await asyncio.wait_for(conn.head(), 2)
        pieces: list[bytes] = []
        conn.on_body = pieces.append
        assert await asyncio.wait_for(conn.body_done, 2) is None
        assert pieces == [b"ab", b"cde"]
        conn.close()


async def test_a_consumer_error_from_on_body_ends_the_body_as_itself_not_as_a_bad_response() -> None:
    # The consumer's ValueError is its own bug: taken for a malformed response (a cut stream),
    # the inbound reader would reopen the stream instead of failing.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"2\r\nab\r\n")
        await writer.drain()
        await reader.read()

    def broken(data: bytes) -> None:
        raise ValueError("consumer bug")

    server, url = await serve(handler)
    async with server:
        conn = await HttpStream.get(url, {}, ssl=True, timeout=2)
        await asyncio.wait_for(conn.head(), 2)
        conn.on_body = broken
        error = await asyncio.wait_for(conn.body_done, 2)
        assert isinstance(error, ValueError) and str(error) == "consumer bug"
        conn.close()


async def test_get_error_answers_are_read_whole_and_a_reader_that_stops_pauses_tcp() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 424 Failed Dependency\r\nContent-Length: 7\r\n\r\nno leg!")
        await writer.drain()
        await reader.read()

    server, url = await serve(refuse)
    async with server:
        conn = await HttpStream.get(url, {}, ssl=True, timeout=2)
        assert await asyncio.wait_for(conn.response(), 2) == (424, "Failed Dependency", b"no leg!")
        assert conn.take() == b""  # an error body is not audio
        conn.close()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")  # a body delimited by the connection's end
        block = b"\x01" * 65536
        try:
            for _ in range(64):  # 4 MB: more than the reader keeps unread
                writer.write(block)
                await asyncio.wait_for(writer.drain(), 0.5)
        except TimeoutError:
            pass  # the client stopped reading: TCP pushes back
        writer.transport.abort()

    server, url = await serve(flood)
    async with server:
        conn = await HttpStream.get(url, {}, ssl=True, timeout=2)
        await asyncio.wait_for(conn.head(), 2)
        await asyncio.sleep(0.3)
        unread = len(conn.take())
        assert 0 < unread <= (1 << 20) + 256 * 1024  # paused past 1 MB (one recv more at most), not 4 MB
        conn.close()


# --- TLS: a real 3CX speaks HTTPS --------------------------------------------------------------

@pytest.fixture
def tls(tmp_path):
    """A throwaway CA and a server certificate for 127.0.0.1 (trustme)."""
    return loopback_ca(tmp_path)


def loopback_ca(tmp_path):
    """(server SSL context for 127.0.0.1, the CA's certificate file): trustme, or skip."""
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server_ctx, ca_file


async def serve_tls(handler: Handler, server_ctx) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    return server, f"https://127.0.0.1:{port}/callcontrol/800/participants/1/stream"


async def test_both_streams_work_over_tls_with_the_configured_ca(tls) -> None:
    from ivr.pbx.config import PbxConfig

    server_ctx, ca_file = tls
    posted: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        if head[0].startswith("GET"):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(3):
                writer.write(b"140\r\n" + bytes([i + 1]) * 320 + b"\r\n")
            writer.write(b"0\r\n\r\n")
        else:
            while chunk := await read_chunk(reader):
                posted.append(chunk)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    # verify_tls: a CA bundle path, as an ivr.yaml would give it
    ctx = PbxConfig(url="https://127.0.0.1", client_id="900", client_secret="s", verify_tls=str(ca_file)).ssl_context()
    server, url = await serve_tls(handler, server_ctx)
    async with server:
        get = await HttpStream.get(url, {}, ssl=ctx, timeout=2)
        assert await asyncio.wait_for(get.head(), 2) == (200, "OK")
        assert await asyncio.wait_for(get.body_done, 2) is None
        assert bytes(get.take()) == b"".join(bytes([i + 1]) * 320 for i in range(3))
        get.close()

        post = await HttpStream.post(url, {}, ssl=ctx, timeout=2)
        post.write(b"\x05" * 320)
        post.write(b"\x06" * 320)
        post.finish()
        assert await asyncio.wait_for(post.response(), 2) == (200, "OK", b"")
        assert posted == [b"\x05" * 320, b"\x06" * 320]


async def test_tls_verification_is_on_by_default(tls) -> None:
    import ssl

    server_ctx, _ = tls

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server, url = await serve_tls(handler, server_ctx)
    async with server:
        # ssl=True: the system's CAs, which do not know this certificate
        with pytest.raises(ssl.SSLCertVerificationError):
            await HttpStream.get(url, {}, ssl=True, timeout=2)


async def test_tls_without_verification_still_speaks_tls(tls) -> None:
    # verify_tls: false means "do not check the certificate", never "send in the clear".
    server_ctx, _ = tls

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server, url = await serve_tls(handler, server_ctx)
    async with server:
        get = await HttpStream.get(url, {}, ssl=False, timeout=2)
        assert await asyncio.wait_for(get.head(), 2) == (200, "OK")
        get.close()


def test_one_tls_context_per_setting_for_the_whole_process(tls) -> None:
    # Two TLS streams per call: a context each would load the CA certificates again every time.
    from ivr.pbx.config import PbxConfig, client_tls_context

    _, ca_file = tls
    a = PbxConfig(url="https://pbx", client_id="900", client_secret="s", verify_tls=str(ca_file))
    b = PbxConfig(url="https://pbx", client_id="901", client_secret="t", verify_tls=str(ca_file))
    assert a.ssl_context() is b.ssl_context()
    off = PbxConfig(url="https://pbx", client_id="900", client_secret="s", verify_tls=False).ssl_context()
    assert off is not a.ssl_context() and not off.check_hostname
    assert client_tls_context(True) is client_tls_context(True)
