"""``MediaSocket``: a TCP (or TLS) connection its owner reads when it chooses.

A call's audio GET brings a 20 ms chunk every 20 ms. With the socket registered in the event
loop's selector, every chunk costs an epoll wake-up, a callback and a ``recv``: for hundreds
of calls, a fifth of the worker. A media socket is read when its owner asks: :meth:`read`,
called from the shared media timer once per block (one ``recv`` for ~40 ms of chunks, no
wake-up at all). While the owner needs to hear at once (a response head, an error answer),
:meth:`watch` registers it with the selector like any asyncio connection.

Writes go straight to the socket; what the kernel does not take waits (``backlog``) and is
flushed when the socket drains. TLS runs on :class:`ssl.SSLObject` over memory buffers: the
same OpenSSL work as asyncio's TLS transport without its Python protocol layers and buffers.

Needs an event loop with ``add_reader`` (the selector loop; on Windows the CLI selects it).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

RECV_BYTES = 4096  # one read; audio comes in ~330-byte pieces, so this is ~6 chunks


class MediaSocket:
    """A connected socket (:meth:`connect`); ``on_lost(exc)`` is told once when it ends."""

    def __init__(self, sock: socket.socket, tls: ssl.SSLObject | None = None,
                 tls_in: ssl.MemoryBIO | None = None, tls_out: ssl.MemoryBIO | None = None) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._tls, self._tls_in, self._tls_out = tls, tls_in, tls_out
        self._out = bytearray()  # written, not yet taken by the kernel
        self._buf = bytearray(RECV_BYTES)
        self._view = memoryview(self._buf)
        self._on_readable: Callable[[], None] | None = None
        self.closed = False
        #: Told once, with None (closed: by us or cleanly by the peer) or the error.
        self.on_lost: Callable[[BaseException | None], None] | None = None

    @classmethod
    async def connect(cls, host: str, port: int, tls: ssl.SSLContext | None, timeout: float) -> MediaSocket:
        """Connect (and shake hands, with ``tls``) within ``timeout`` seconds.

        Raises ``OSError`` (``ssl.SSLError`` for TLS failures, e.g. a certificate that does not
        verify) or ``asyncio.TimeoutError``."""
        return await asyncio.wait_for(cls._connect(host, port, tls), timeout)

    @classmethod
    async def _connect(cls, host: str, port: int, tls: ssl.SSLContext | None) -> MediaSocket:
        loop = asyncio.get_running_loop()
        try:  # an address already: no resolver thread (two streams per call)
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
                                       flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        error: OSError | None = None
        for family, type_, proto, _, address in infos:  # as create_connection: each address in turn
            sock = socket.socket(family, type_, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a chunk leaves when written
                await loop.sock_connect(sock, address)
                if tls is None:
                    return cls(sock)
                return await cls._handshake(sock, tls, host)
            except OSError as exc:
                sock.close()
                error = exc
                if isinstance(exc, ssl.SSLError):
                    raise  # the server answered; another address of it will not verify either
            except BaseException:
                sock.close()
                raise
        raise error or OSError(f"{host}:{port}: no address")

    @classmethod
    async def _handshake(cls, sock: socket.socket, context: ssl.SSLContext, host: str) -> MediaSocket:
        loop = asyncio.get_running_loop()
        tls_in, tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(tls_in, tls_out, server_side=False, server_hostname=host)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if pending := tls_out.read():
                    await loop.sock_sendall(sock, pending)
                data = await loop.sock_recv(sock, 16384)
                if not data:
                    raise ConnectionResetError("TLS handshake: the server closed the connection") from None
                tls_in.write(data)
        if pending := tls_out.read():
            await loop.sock_sendall(sock, pending)
        return cls(sock, tls, tls_in, tls_out)

    # --- writing ---------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send now; what the kernel does not take is flushed when the socket drains."""
        if self.closed:
            return
        if self._tls is not None:
            try:
                self._tls.write(data)
            except ssl.SSLError as exc:
                self._lost(exc)
                return
            data = self._tls_out.read()  # type: ignore[union-attr]
        self._send_wire(data, report=True)

    def _send_wire(self, data: bytes, *, report: bool) -> None:
        """Bytes as they go on the wire (TLS records made); a failure is told to ``on_lost``
        if ``report`` (else the next read or write finds it)."""
        if self._out:
            self._out += data
            return
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            if report:
                self._lost(exc)
            return
        if sent < len(data):
            self._out += data[sent:]
            self._loop.add_writer(self._fd, self._flush)

    @property
    def backlog(self) -> int:
        """Bytes written but not yet taken by the kernel (the peer is not reading)."""
        return len(self._out)

    def _flush(self) -> None:
        try:
            sent = self._sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        del self._out[:sent]
        if not self._out:
            self._loop.remove_writer(self._fd)

    # --- reading ---------------------------------------------------------------------------------

    def read(self, limit: int = 1 << 20) -> bytearray:
        """What has arrived (decrypted), up to about ``limit`` bytes; empty if nothing. The
        bytearray is the caller's (no copy is made for it).

        At the end of the connection what came before it is returned, and ``on_lost`` told
        from the loop."""
        got = bytearray()
        if self.closed:
            return got
        while len(got) < limit:
            try:
                n = self._sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._decrypt_into(got)
                self._end(exc)
                break
            if n == 0:
                self._decrypt_into(got)
                self._end(None)
                break
            if self._tls is None:
                got += self._view[:n]
            else:
                self._tls_in.write(self._view[:n])  # type: ignore[union-attr]
                self._decrypt_into(got)
            if n < RECV_BYTES:
                break  # the kernel had no more (the rest of a busy socket waits for the next read)
        return got

    def _decrypt_into(self, out: bytearray) -> None:
        """Append what OpenSSL can decrypt of the bytes received so far (nothing without TLS)."""
        if self._tls is None:
            return
        while True:
            try:
                piece = self._tls.read(RECV_BYTES)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # the peer's close_notify: the end, cleanly
                self._loop.call_soon(self._lost, None)
                break
            except ssl.SSLError as exc:
                self._loop.call_soon(self._lost, exc)
                break
            if not piece:  # the peer's close_notify (SSLObject reports it so, not by raising)
                self._loop.call_soon(self._lost, None)
                break
            out += piece
        if self._tls_out.pending:  # type: ignore[union-attr]  # e.g. a key update the peer asked for
            self._send_wire(self._tls_out.read(), report=False)  # type: ignore[union-attr]

    def watch(self, on_readable: Callable[[], None] | None) -> None:
        """Call ``on_readable()`` whenever data arrives (None: stop; the owner reads itself)."""
        if self.closed or on_readable is self._on_readable:
            return
        if self._on_readable is not None:
            self._loop.remove_reader(self._fd)
        self._on_readable = on_readable
        if on_readable is not None:
            self._loop.add_reader(self._fd, on_readable)
            if self._tls is not None and self._tls.pending():
                self._loop.call_soon(on_readable)  # decrypted bytes already wait in OpenSSL

    # --- the end ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close now (unsent bytes are dropped); ``on_lost(None)`` follows from the loop.

        Over TLS our close_notify goes out first if the socket takes it at once: a server
        then sees a clean end rather than a truncated connection."""
        if not self.closed:
            self._loop.call_soon(self._lost, None)
            if self._tls is not None and not self._out:
                try:
                    self._tls.unwrap()
                except ssl.SSLError:
                    pass  # SSLWantReadError: the peer's close_notify is not awaited
                try:
                    self._sock.send(self._tls_out.read())  # type: ignore[union-attr]
                except OSError:
                    pass
            self._shut()

    def _end(self, exc: BaseException | None) -> None:
        # Found by read(): its caller gets the data that came with the end before on_lost.
        self._loop.call_soon(self._lost, exc)
        self._shut()

    def _shut(self) -> None:
        self.closed = True
        if self._on_readable is not None:
            self._loop.remove_reader(self._fd)
            self._on_readable = None
        if self._out:
            self._loop.remove_writer(self._fd)
            self._out.clear()
        self._sock.close()

    def _lost(self, exc: BaseException | None) -> None:
        if not self.closed:
            self._shut()
        callback, self.on_lost = self.on_lost, None
        if callback is not None:
            callback(exc)
