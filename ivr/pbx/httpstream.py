"""``HttpStream``: the two long-lived audio requests, on plain HTTP/1.1 over asyncio.

Each call holds a GET whose chunked response carries a 320-byte chunk every 20 ms, and a POST
whose chunked body does the same the other way. A general HTTP client pays per chunk a task
wake-up, an async generator hop and several Python-level callbacks; with hundreds of calls
that was a third of the worker's CPU. Here, over a :class:`~ivr.pbx.mediasocket.MediaSocket`:

* :meth:`HttpStream.post` - the request head goes out with the first chunk (an idle stream
  costs the PBX nothing); :meth:`HttpStream.write` frames a chunk and hands it to the
  transport synchronously, so a pacer can send straight from the shared timer;
* :meth:`HttpStream.get` - a 200 response's body is decoded into a buffer as it arrives and
  taken in blocks (:meth:`HttpStream.take`, polled from the shared timer: the socket is read
  right then, with no selector wake-up per chunk), or handed to ``on_body`` chunk by chunk.

Responses are parsed by the sans-I/O :class:`~ivr.pbx.http11.ResponseParser` (Content-Length,
chunked encoding or connection close); this module does the socket work around it and decides
where a body goes. Any response but a streamed 200 (an error: 401, 424, ...) is kept whole,
capped, for :meth:`HttpStream.response`.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Callable
from urllib.parse import urlsplit

from .config import client_tls_context
from .http11 import ProtocolError, ResponseParser
from .mediasocket import MediaSocket

MAX_RESPONSE_BYTES = 64 * 1024  # an error message, never audio: cap what is kept
MAX_UNREAD_BYTES = 1 << 20  # audio not taken yet: stop reading the socket beyond this (~1 min)


class HttpStream:
    """One HTTP/1.1 request on its own connection; make one with :meth:`get` or :meth:`post`.

    The connection is watched (read as data arrives) until a streamed body is taken with
    :meth:`take`; from then on it is read only when taken."""

    def __init__(self, head: bytes, *, head_now: bool, stream_ok: bool) -> None:
        self._head: bytes | None = head  # the request head, until sent
        self._head_now = head_now  # send it on connect (GET) or with the first chunk (POST)
        self._stream_ok = stream_ok  # a 200 body is audio: buffered uncapped, taken in blocks
        self._sock: MediaSocket | None = None
        self._parser = ResponseParser(self._on_head, self._body_bytes)
        self._streaming = False  # this response's body is audio
        self._body = bytearray()  # an error response's body (capped)
        self._audio = bytearray()  # audio received, not taken yet
        self._polled = False  # take() reads the socket; it is no longer watched
        self._finished = False  # the zero chunk was written
        loop = asyncio.get_running_loop()
        self._head_in: asyncio.Future[tuple[int, str]] = loop.create_future()
        self._response: asyncio.Future[tuple[int, str, bytes]] = loop.create_future()
        #: Resolved when the response body has ended: None (cleanly) or the exception (cut).
        self.body_done: asyncio.Future[BaseException | None] = loop.create_future()
        #: Set to receive the audio of a streamed body chunk by chunk instead of via take().
        #: An exception it raises ends the body with that exception.
        self.on_body: Callable[[bytes], None] | None = None
        self.closed = False

    # --- opening ----------------------------------------------------------------------------

    @classmethod
    async def get(cls, url: str, headers: dict[str, str], *, ssl: ssl_module.SSLContext | bool,
                  timeout: float) -> HttpStream:
        """Send ``GET url`` (a 200 body is streamed audio). Raises ``OSError`` or
        ``asyncio.TimeoutError`` if the host cannot be reached within ``timeout``."""
        return await cls._open("GET", url, headers, [], ssl, timeout, head_now=True, stream_ok=True)

    @classmethod
    async def post(cls, url: str, headers: dict[str, str], *, ssl: ssl_module.SSLContext | bool,
                   timeout: float) -> HttpStream:
        """Connect for ``POST url`` with a chunked body; the head goes out with the first
        :meth:`write`. Raises ``OSError`` or ``asyncio.TimeoutError`` like :meth:`get`."""
        return await cls._open("POST", url, headers, ["Transfer-Encoding: chunked"], ssl, timeout,
                               head_now=False, stream_ok=False)

    @classmethod
    async def _open(cls, method: str, url: str, headers: dict[str, str], extra: list[str],
                    ssl: ssl_module.SSLContext | bool, timeout: float, *, head_now: bool,
                    stream_ok: bool) -> HttpStream:
        parts = urlsplit(url)
        secure = parts.scheme == "https"
        host = parts.hostname or ""
        port = parts.port or (443 if secure else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{k}: {v}" for k, v in headers.items()] + extra + ["", ""]
        proto = cls("\r\n".join(lines).encode("latin-1"), head_now=head_now, stream_ok=stream_ok)
        tls = None
        if secure:  # True / False: the process's shared context for that setting
            tls = ssl if isinstance(ssl, ssl_module.SSLContext) else client_tls_context(bool(ssl))
        proto._attach(await MediaSocket.connect(host, port, tls, timeout))
        return proto

    # --- the request body (POST) --------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send one chunk now (the request head goes with the first). Nothing if closed."""
        sock = self._sock
        if self.closed or self._finished or sock is None or not data:
            return
        frame = b"%X\r\n%b\r\n" % (len(data), data)
        if self._head is not None:
            frame, self._head = self._head + frame, None
        sock.send(frame)

    def finish(self) -> None:
        """End the body with the zero chunk (only if the request was started at all)."""
        if self._head is None and not self._finished and not self.closed and self._sock is not None:
            self._finished = True
            self._sock.send(b"0\r\n\r\n")

    @property
    def started(self) -> bool:
        """The request head has gone out (the server knows of this request)."""
        return self._head is None

    @property
    def backlog(self) -> int:
        """Bytes written but not yet accepted by the kernel (the peer is not reading)."""
        return self._sock.backlog if self._sock is not None else 0

    # --- the response ---------------------------------------------------------------------------

    async def head(self) -> tuple[int, str]:
        """Wait for the response's status and reason. Raises ``ConnectionError`` if the
        connection closes first."""
        return await asyncio.shield(self._head_in)

    async def response(self) -> tuple[int, str, bytes]:
        """Wait for the whole response: ``(status, reason, body)`` (a streamed 200 has no body
        here). Raises ``ConnectionError`` if the connection closes first (the stream was cut)."""
        return await asyncio.shield(self._response)

    def take(self) -> bytearray:
        """The audio received until now and not taken yet (a streamed 200 body).

        Reads the socket right away; from the first take of a streamed body on, the socket is
        read only here (poll it every block)."""
        sock = self._sock
        if self._streaming and sock is not None and not sock.closed:
            if not self._polled:
                self._polled = True
                sock.watch(None)
            room = MAX_UNREAD_BYTES - len(self._audio)
            if room > 0:
                self._received(sock.read(room))
        data, self._audio = self._audio, bytearray()
        return data

    def close(self) -> None:
        """Close the connection (no zero chunk)."""
        if self._sock is not None:
            self._sock.close()

    # --- the connection -------------------------------------------------------------------------

    def _attach(self, sock: MediaSocket) -> None:
        self._sock = sock
        sock.on_lost = self.connection_lost
        if self._head_now and self._head is not None:
            sock.send(self._head)
            self._head = None
        sock.watch(self._on_readable)

    def _on_readable(self) -> None:
        assert self._sock is not None
        self._received(self._sock.read())

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if self._parser.eof():
            self._end_body(None)  # e.g. a body delimited by the connection's end
            return
        error = ConnectionError(str(exc) if exc else "connection closed by the server")
        for fut in (self._head_in, self._response):
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved: nobody may be waiting for this one
        if not self.body_done.done():
            self.body_done.set_result(error)

    def _received(self, data: bytearray) -> None:
        """``data``: a fresh buffer from :meth:`MediaSocket.read`, taken over as it is."""
        if not data or self.body_done.done():
            return  # anything after the response is ignored
        try:
            if self._parser.feed(data):
                self._end_body(None)
        except ProtocolError as exc:
            self._fail(ConnectionError(f"bad HTTP response: {exc}"))
        except Exception as exc:  # on_body raised: the consumer's problem ends this body
            self._fail(exc)

    # --- where the response goes ----------------------------------------------------------------

    def _on_head(self, status: int, reason: str) -> None:
        self._streaming = self._stream_ok and status == 200
        self._head_in.set_result((status, reason))

    def _body_bytes(self, data: memoryview) -> None:
        if not self._streaming:
            room = MAX_RESPONSE_BYTES - len(self._body)
            if room > 0:
                self._body += data[:room]
        elif self.on_body is not None:
            self.on_body(bytes(data))
        else:
            self._audio += data
            if len(self._audio) > MAX_UNREAD_BYTES and not self._polled and self._sock is not None:
                self._polled = True  # nobody takes the audio: let TCP push back until take()
                self._sock.watch(None)

    def _end_body(self, error: BaseException | None) -> None:
        parser = self._parser
        if not self._response.done() and parser.status is not None:
            self._response.set_result((parser.status, parser.reason, bytes(self._body)))
        if not self.body_done.done():
            self.body_done.set_result(error)

    def _fail(self, error: BaseException) -> None:
        for fut in (self._head_in, self._response):
            if not fut.done():
                fut.set_exception(error if isinstance(error, ConnectionError) else ConnectionError(str(error)))
                fut.exception()
        if not self.body_done.done():
            self.body_done.set_result(error)
        self.close()
