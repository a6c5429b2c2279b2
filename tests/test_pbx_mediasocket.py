"""MediaSocket: the audio streams' socket, against real loopback peers (plain TCP and TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from test_pbx_httpstream import loopback_ca

from ivr.pbx.httpstream import HttpStream
from ivr.pbx.mediasocket import RECV_BYTES, MediaSocket

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def tls(tmp_path):
    """A throwaway CA, a server context for 127.0.0.1 and a client context trusting the CA."""
    server_ctx, ca_file = loopback_ca(tmp_path)
    return server_ctx, ssl.create_default_context(cafile=str(ca_file))


@pytest.fixture(params=["plain", "tls"])
def mode(request):
    """(server ssl context, client ssl context): None, None for plain TCP."""
    if request.param == "plain":
        return None, None
    return request.getfixturevalue("tls")


@contextlib.asynccontextmanager
async def serve(handler: Handler, server_ctx: ssl.SSLContext | None = None,
                small_window: bool = False) -> AsyncIterator[int]:
    """A loopback server on the yielded port; its handlers are given a moment to end (then
    cancelled) before the test's loop closes. ``small_window``: a fixed 64 KB receive buffer
    (no autotuning: on loopback a peer that does not read would take many MB, in bursts)."""
    handlers: set[asyncio.Task] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        except ConnectionResetError:
            pass  # the client closed with unread data (e.g. TLS session tickets): an RST

    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only then (Nagle held TLS records back)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    if small_window:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # inherited on accept
    listener.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(tracked, sock=listener, ssl=server_ctx)
    try:
        yield listener.getsockname()[1]
    finally:
        server.close()
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=0.5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def until(condition: Callable[[], object], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


async def read_until(sock: MediaSocket, size: int, lost: list, timeout: float = 2.0) -> bytes:
    """Poll ``read()`` as the media timer does, until ``size`` bytes or the end."""
    got = bytearray()

    def enough() -> bool:
        got.extend(sock.read())
        return len(got) >= size or bool(lost)

    await until(enough, timeout)
    return bytes(got)


def recorder(sock: MediaSocket) -> list:
    lost: list = []
    sock.on_lost = lost.append
    return lost


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST: SO_LINGER 0, then abort."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# --- round trips -----------------------------------------------------------------------------------

async def test_send_and_read_round_trip(mode) -> None:
    server_ctx, client_ctx = mode
    go = asyncio.Event()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await go.wait()
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async with serve(echo, server_ctx) as port:
        sock = await MediaSocket.connect("127.0.0.1", port, client_ctx, timeout=2)
        lost = recorder(sock)
        assert sock.read() == b""  # nothing arrived: not an error, not the end
        message = bytes(range(256)) * 40 + b"tail"  # more than one recv's worth
        sock.send(message[:333])
        sock.send(message[333:])
        assert sock.backlog == 0  # a few KB: the kernel takes it all at once
        go.set()
        assert await read_until(sock, len(message), lost) == message
        assert lost == [] and not sock.closed
        sock.close()


async def test_a_host_name_is_resolved_and_an_address_is_used_as_it_is(monkeypatch) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    resolved: list[str] = []
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def spy(host, *args, **kwargs):
        resolved.append(host)
        return await real(host, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", spy)
    async with serve(echo) as port:
        for host in ("127.0.0.1", "localhost"):
            sock = await MediaSocket.connect(host, port, None, timeout=2)
            lost = recorder(sock)
            sock.send(b"hello")
            assert await read_until(sock, 5, lost) == b"hello"
            sock.close()
    assert resolved == ["localhost"]  # an IP address needs no resolver (a thread per lookup)


async def test_read_limit_leaves_the_rest_for_the_next_read() -> None:
    sent = random.Random(1).randbytes(64 * 1024)
    done = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(sent)
        await writer.drain()
        done.set()
        await reader.read()

    async with serve(handler) as port:
        sock = await MediaSocket.connect("127.0.0.1", port, None, timeout=2)
        lost = recorder(sock)
        await asyncio.wait_for(done.wait(), 2)
        await asyncio.sleep(0.02)  # loopback: written is as good as arrived
        first = sock.read(5000)
        assert 5000 <= len(first) < 5000 + RECV_BYTES
        rest = await read_until(sock, len(sent) - len(first), lost)
        assert first + rest == sent and lost == []
        sock.close()


# --- a peer that does not read -----------------------------------------------------------------

async def fill(sock: MediaSocket, seed: int) -> bytes:
    """Send 64 KB pieces until the kernel stops taking them; returns all that was sent."""
    rng = random.Random(seed)
    sent = bytearray()
    while sock.backlog == 0:
        assert len(sent) < 64 << 20, "the kernel took 64 MB from a peer that does not read"
        piece = rng.randbytes(65536)
        sock.send(piece)
        sent += piece
    for _ in range(10):  # a few more behind the backlog: they must queue, in order
        piece = rng.randbytes(65536)
        sock.send(piece)
        sent += piece
    return bytes(sent)


async def test_backlog_waits_for_the_peer_and_drains_in_order(mode) -> None:
    server_ctx, client_ctx = mode
    go = asyncio.Event()
    size = asyncio.get_running_loop().create_future()
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await go.wait()
        received.append(await reader.readexactly(await size))
        await reader.read()

    async with serve(handler, server_ctx, small_window=True) as port:
        sock = await MediaSocket.connect("127.0.0.1", port, client_ctx, timeout=2)
        lost = recorder(sock)
        sent = await fill(sock, seed=7)
        backlog = sock.backlog
        assert backlog >= 10 * 65536  # what the kernel did not take is kept, not dropped
        await asyncio.sleep(0.02)
        assert sock.backlog == backlog  # the peer still does not read: nothing moves
        size.set_result(len(sent))
        go.set()
        await until(lambda: sock.backlog == 0, timeout=10)
        await until(lambda: received, timeout=10)
        assert received[0] == sent  # every byte, in order, nothing twice
        assert lost == [] and not sock.closed
        sock.close()


async def test_a_peer_that_resets_while_a_backlog_waits_is_reported_without_reading() -> None:
    writers: list[asyncio.StreamWriter] = []
    done = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await done.wait()  # never reads

    async with serve(handler, small_window=True) as port:
        sock = await MediaSocket.connect("127.0.0.1", port, None, timeout=2)
        lost = recorder(sock)
        await fill(sock, seed=3)
        await until(lambda: writers)
        reset(writers[0])
        await until(lambda: lost)  # the flush sees it: nobody reads or watches this socket
        assert len(lost) == 1 and isinstance(lost[0], OSError)
        assert sock.closed and sock.backlog == 0
        done.set()


# --- the end of the connection -----------------------------------------------------------------

async def test_peer_close_is_told_once_after_the_data_before_it(mode) -> None:
    server_ctx, client_ctx = mode
    go = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await go.wait()
        writer.write(b"last words")
        await writer.drain()
        writer.close()  # TLS: close_notify, then FIN only once ours comes (or after 30 s)

    async with serve(handler, server_ctx) as port:
        sock = await MediaSocket.connect("127.0.0.1", port, client_ctx, timeout=2)
        lost = recorder(sock)
        await asyncio.sleep(0.02)
        assert sock.read() == b"" and lost == []
        go.set()
        assert await read_until(sock, 1 << 20, lost) == b"last words"
        await asyncio.sleep(0.02)
        assert lost == [None]  # cleanly, once (TLS: on the close_notify alone)
        assert sock.closed and sock.read() == b""
        sock.send(b"into the void")  # a no-op, no error, no second on_lost
        sock.close()
        await asyncio.sleep(0.01)
        assert lost == [None]


@pytest.mark.parametrize("size", [RECV_BYTES, 3 * RECV_BYTES, 3 * RECV_BYTES + 1])
async def test_on_lost_comes_after_the_data_read_with_the_end(size: int) -> None:
    # The data and the FIN wait in the kernel together and one read() sees both (a multiple of
    # RECV_BYTES makes the read go on to the FIN): the owner gets the data before on_lost.
    data = random.Random(size).randbytes(size)
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        writer.close()
        await writer.wait_closed()
        closed.set()

    async with serve(handler) as port:
        sock = await MediaSocket.connect("127.0.0.1", port, None, timeout=2)
        got = bytearray()
        told: list = []
        sock.on_lost = lambda exc: told.append((exc, len(got)))
        await asyncio.wait_for(closed.wait(), 2)
        await asyncio.sleep(0.02)
        for _ in range(200):
            got += sock.read()
            if told:
                break
            await asyncio.sleep(0.005)
        assert bytes(got) == data
        assert told == [(None, size)]  # told after the owner had every byte


async def test_an_http_response_that_arrives_with_the_close_is_not_lost() -> None:
    # HttpStream ends a body on on_lost: told before the last read's data, it dropped it (here,
    # a whole error answer of exactly two reads came with the FIN and the head was never seen).
    body = b"x" * (2 * RECV_BYTES - len(b"HTTP/1.0 500 Oops\r\n\r\n"))

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 500 Oops\r\n\r\n" + body)
        writer.close()

    async with serve(handler) as port:
        up = await HttpStream.post(f"http://127.0.0.1:{port}/stream", {}, ssl=True, timeout=2)
        up.write(b"\x00" * 320)
        await asyncio.sleep(0.03)  # the answer and the FIN are both in before the loop looks
        assert await asyncio.wait_for(up.response(), 2) == (500, "Oops", body)


async def test_peer_reset_is_told_with_the_error(mode) -> None:
    server_ctx, client_ctx = mode
    go = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await go.wait()
        writer.write(b"before the reset")
        await writer.drain()
        await asyncio.sleep(0.02)
        reset(writer)

    async with serve(handler, server_ctx) as port:
        sock = await MediaSocket.connect("127.0.0.1", port, client_ctx, timeout=2)
        lost = recorder(sock)
        readable = []
        got = bytearray()

        def on_readable() -> None:
            readable.append(1)
            got.extend(sock.read())

        sock.watch(on_readable)
        go.set()
        await until(lambda: lost)
        assert bytes(got) == b"before the reset"
        await asyncio.sleep(0.01)
        assert len(lost) == 1 and isinstance(lost[0], ConnectionResetError)  # an error, not None
        assert sock.closed
        count = len(readable)
        await asyncio.sleep(0.02)
        assert len(readable) == count  # no longer in the selector


async def test_watch_calls_back_on_data_and_watch_none_stops_it(mode) -> None:
    server_ctx, client_ctx = mode
    say: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (data := await say.get()) != b"":
            writer.write(data)
            await writer.drain()
        await reader.read()

    async with serve(handler, server_ctx) as port:
        sock = await MediaSocket.connect("127.0.0.1", port, client_ctx, timeout=2)
        lost = recorder(sock)
        heard: list[bytes] = []
        calls = [0]

        def on_readable() -> None:
            calls[0] += 1
            if data := sock.read():
                heard.append(data)

        sock.watch(on_readable)
        await asyncio.sleep(0.02)
        assert heard == []  # nothing arrived (TLS 1.3 session tickets may wake it: no data)
        await say.put(b"one")
        await until(lambda: heard == [b"one"])

        sock.watch(None)
        count = calls[0]
        await say.put(b"two")
        await asyncio.sleep(0.03)
        assert calls[0] == count and heard == [b"one"]  # unwatched: nobody is told
        assert await read_until(sock, 3, lost) == b"two"  # the owner reads it when it wants

        sock.watch(on_readable)  # and may watch again
        await say.put(b"three")
        await until(lambda: heard == [b"one", b"three"])
        await say.put(b"")
        sock.close()
        assert lost == []


async def test_close_tells_on_lost_from_the_loop_and_ends_everything(mode) -> None:
    server_ctx, client_ctx = mode
    peer_saw: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer_saw.append(await reader.read())
        except (ConnectionError, ssl.SSLError):
            peer_saw.append(b"<cut>")  # TLS without close_notify may end this way

    async with serve(handler, server_ctx) as port:
        sock = await MediaSocket.connect("127.0.0.1", port, client_ctx, timeout=2)
        lost = recorder(sock)
        readable: list[int] = []
        sock.watch(lambda: readable.append(1))
        sock.close()
        assert sock.closed
        assert lost == []  # not from inside close(): its caller may not expect the callback
        await asyncio.sleep(0)
        assert lost == [None]
        sock.send(b"too late")
        assert sock.read() == b"" and sock.backlog == 0
        sock.watch(lambda: readable.append(2))
        sock.close()
        await until(lambda: peer_saw)
        assert peer_saw == [b""]  # a clean end (TLS: our close_notify), and not "too late"
        await asyncio.sleep(0.01)
        assert lost == [None] and readable == []


async def test_close_drops_the_backlog() -> None:
    peer_got: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.02)  # not reading while the client fills its backlog and closes
        peer_got.append(len(await reader.read()))

    async with serve(handler, small_window=True) as port:
        sock = await MediaSocket.connect("127.0.0.1", port, None, timeout=2)
        lost = recorder(sock)
        sent = await fill(sock, seed=5)
        dropped = sock.backlog
        sock.close()
        assert sock.backlog == 0
        await asyncio.sleep(0.01)
        assert lost == [None]
        await until(lambda: peer_got)
        assert peer_got == [len(sent) - dropped]  # what the kernel took arrives, the backlog not


# --- TLS specifics -----------------------------------------------------------------------------

async def test_tls_send_of_nothing_is_harmless(tls) -> None:
    server_ctx, client_ctx = tls
    got: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.readexactly(2))

    async with serve(handler, server_ctx) as port:
        sock = await MediaSocket.connect("127.0.0.1", port, client_ctx, timeout=2)
        lost = recorder(sock)
        sock.send(b"")
        sock.send(b"ok")
        await until(lambda: got)
        assert got == [b"ok"] and lost == []
        sock.close()


async def test_tls_untrusted_certificate_fails_the_connect(tls) -> None:
    server_ctx, _ = tls

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with serve(handler, server_ctx) as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            await MediaSocket.connect("127.0.0.1", port, ssl.create_default_context(), timeout=2)


async def test_tls_server_that_hangs_up_during_the_handshake() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the ClientHello
        writer.close()

    async with serve(handler) as port:
        with pytest.raises(ConnectionResetError):
            await MediaSocket.connect("127.0.0.1", port, ssl.create_default_context(), timeout=2)


# --- connecting --------------------------------------------------------------------------------

async def test_connect_to_a_closed_port_is_refused_at_once() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # bound, never listening: nothing is there now
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        await MediaSocket.connect("127.0.0.1", port, None, timeout=2)
    assert time.monotonic() - started < 1


async def test_connect_times_out_when_the_handshake_gets_no_answer() -> None:
    ended: list[bytes] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ended.append(await reader.read())  # takes the ClientHello and says nothing

    async with serve(silent) as port:  # plain TCP: accepts, never speaks TLS
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await MediaSocket.connect("127.0.0.1", port, ssl.create_default_context(), timeout=0.2)
        assert 0.15 < time.monotonic() - started < 1
        await until(lambda: ended)  # the abandoned socket was closed: the peer sees EOF
