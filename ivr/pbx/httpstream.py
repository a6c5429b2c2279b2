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

Responses are parsed by Content-Length, chunked encoding or connection close. Any other
response (an error: 401, 424, ...) is kept whole, capped, for :meth:`HttpStream.response`.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Callable
from urllib.parse import urlsplit

from .config import client_tls_context
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
        self._inbox = bytearray()  # bytes received, not parsed yet
        self._status: int | None = None
        self._reason = ""
        self._length: int | None = None  # Content-Length of the response body
        self._chunked = False
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
        if self._status is not None and self._length is None and not self._chunked:
            self._end_body(None)  # a body delimited by the connection's end
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
        if self._inbox:
            self._inbox += data
        else:  # the usual case (reads end on whole chunks): no copy
            self._inbox = data
        try:
            self._parse()
        except ValueError as exc:
            self._fail(ConnectionError(f"bad HTTP response: {exc}"))
        except Exception as exc:  # on_body raised: the consumer's problem ends this body
            self._fail(exc)

    # --- parsing --------------------------------------------------------------------------------

    def _parse(self) -> None:
        if self._status is None and not self._parse_head():
            return
        if self._chunked:
            self._parse_chunks()
        else:
            self._body_bytes(self._inbox)
            self._inbox = bytearray()
            if self._length is not None and self._length <= 0:
                self._end_body(None)

    def _parse_head(self) -> bool:
        while True:
            end = self._inbox.find(b"\r\n\r\n")
            if end < 0:
                if len(self._inbox) > MAX_RESPONSE_BYTES:
                    raise ValueError("response head too large")
                return False
            head = bytes(self._inbox[:end]).decode("latin-1").split("\r\n")
            del self._inbox[: end + 4]
            parts = head[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise ValueError(f"status line {head[0][:80]!r}")
            status = int(parts[1])
            if not 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
                break
        self._status, self._reason = status, parts[2] if len(parts) > 2 else ""
        for line in head[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                if not value.isdigit():
                    raise ValueError(f"Content-Length {value[:20]!r}")
                self._length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                self._chunked = True
        if self._chunked:
            self._length = None
        self._streaming = self._stream_ok and status == 200
        self._head_in.set_result((status, self._reason))
        return True

    def _parse_chunks(self) -> None:
        inbox = self._inbox
        pos = 0
        ended = False
        with memoryview(inbox) as view:  # each chunk handed on without a copy of its own
            while True:
                line_end = inbox.find(b"\r\n", pos)
                if line_end < 0:
                    break
                size_text = bytes(view[pos:line_end]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ValueError(f"chunk size {size_text[:20]!r}") from None
                if size == 0:
                    ended = True  # trailers, if any, are not needed
                    break
                start = line_end + 2
                if len(inbox) < start + size + 2:
                    break
                self._body_bytes(view[start : start + size])
                pos = start + size + 2
        if ended:
            del inbox[:]
            self._end_body(None)
        elif pos:
            del inbox[:pos]

    def _body_bytes(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._length is not None:
            self._length -= len(data)
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
        if not self._response.done() and self._status is not None:
            self._response.set_result((self._status, self._reason, bytes(self._body)))
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
