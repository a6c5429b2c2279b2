"""``ChunkedUpload``: one HTTP/1.1 request whose chunked body is written frame by frame.

The outbound audio stream is one POST that lives as long as the call and carries a 320-byte
chunk every 20 ms. A general HTTP client's streamed body costs a task wake-up, an async
generator hop and a drain check per chunk; with hundreds of calls that was a fifth of the
worker's CPU. Here :meth:`ChunkedUpload.write` frames the chunk and hands it to the
transport synchronously, so the pacer can send straight from the shared timer.

Only what the stream needs: the request head goes out with the first chunk (an idle stream
costs the PBX nothing), the response (which may arrive early: 401, 424) is parsed by
Content-Length, chunked encoding or connection close, and its body is capped.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from urllib.parse import urlsplit

MAX_RESPONSE_BYTES = 64 * 1024  # an error message, never audio: cap what is kept


class ChunkedUpload(asyncio.Protocol):
    """A connected HTTP/1.1 request with ``Transfer-Encoding: chunked``; use :meth:`open`."""

    def __init__(self, head: bytes) -> None:
        self._head: bytes | None = head  # sent with the first chunk
        self._transport: asyncio.Transport | None = None
        self._inbox = bytearray()
        self._status: int | None = None
        self._reason = ""
        self._length: int | None = None  # Content-Length of the response body
        self._chunked = False
        self._body = bytearray()
        self._finished = False  # the zero chunk was written
        self._response: asyncio.Future[tuple[int, str, bytes]] = asyncio.get_running_loop().create_future()
        self.closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        headers: dict[str, str],
        *,
        ssl: ssl_module.SSLContext | bool,
        timeout: float,
        method: str = "POST",
    ) -> ChunkedUpload:
        """Connect to ``url``'s host (TLS for https) within ``timeout`` seconds.

        Raises ``OSError`` or ``asyncio.TimeoutError`` (unreachable, refused, TLS failure)."""
        parts = urlsplit(url)
        secure = parts.scheme == "https"
        host = parts.hostname or ""
        port = parts.port or (443 if secure else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines += ["Transfer-Encoding: chunked", "", ""]
        proto = cls("\r\n".join(lines).encode("latin-1"))
        loop = asyncio.get_running_loop()
        tls = (ssl if ssl is not True else ssl_module.create_default_context()) if secure else None
        await asyncio.wait_for(
            loop.create_connection(lambda: proto, host, port, ssl=tls or None), timeout
        )
        return proto

    # --- writing ------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send one chunk now (the request head goes with the first). Nothing if closed."""
        transport = self._transport
        if self.closed or self._finished or transport is None or not data:
            return
        frame = b"%X\r\n%b\r\n" % (len(data), data)
        if self._head is not None:
            frame, self._head = self._head + frame, None
        transport.write(frame)

    def finish(self) -> None:
        """End the body with the zero chunk (only if the request was started at all)."""
        if self._head is None and not self._finished and not self.closed and self._transport is not None:
            self._finished = True
            self._transport.write(b"0\r\n\r\n")

    @property
    def started(self) -> bool:
        """The request head has gone out (the PBX knows of this request)."""
        return self._head is None

    @property
    def backlog(self) -> int:
        """Bytes written but not yet accepted by the kernel (the peer is not reading)."""
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    async def response(self) -> tuple[int, str, bytes]:
        """Wait for the whole response: ``(status, reason, body)``. Raises ``ConnectionError``
        if the connection closes first (the stream was cut)."""
        return await asyncio.shield(self._response)

    def close(self) -> None:
        """Close the connection (no zero chunk)."""
        if self._transport is not None:
            self._transport.close()

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._response.done():
            return
        if self._status is not None and self._length is None and not self._chunked:
            self._respond()  # a body delimited by the connection's end
        else:
            self._response.set_exception(ConnectionError(str(exc) if exc else "connection closed by the server"))

    def data_received(self, data: bytes) -> None:
        if self._response.done():
            return  # anything after the response is ignored
        self._inbox += data
        try:
            self._parse()
        except ValueError as exc:
            self._response.set_exception(ConnectionError(f"bad HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost completes the response

    def _parse(self) -> None:
        if self._status is None:
            end = self._inbox.find(b"\r\n\r\n")
            if end < 0:
                if len(self._inbox) > MAX_RESPONSE_BYTES:
                    raise ValueError("response head too large")
                return
            head = bytes(self._inbox[:end]).decode("latin-1").split("\r\n")
            del self._inbox[: end + 4]
            parts = head[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise ValueError(f"status line {head[0][:80]!r}")
            status = int(parts[1])
            if 100 <= status < 200:  # interim (100 Continue): the real answer follows
                self._parse()
                return
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
            self._parse_chunks()
        elif self._length is not None:
            self._keep(self._inbox)
            self._inbox.clear()
            if len(self._body) >= self._length or self._body_capped:
                self._respond()
        else:
            self._keep(self._inbox)
            self._inbox.clear()

    def _parse_chunks(self) -> None:
        while True:
            line_end = self._inbox.find(b"\r\n")
            if line_end < 0:
                return
            size_text = bytes(self._inbox[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ValueError(f"chunk size {size_text[:20]!r}") from None
            if size == 0:
                self._respond()  # trailers, if any, are not needed
                return
            if len(self._inbox) < line_end + 2 + size + 2:
                return
            start = line_end + 2
            self._keep(self._inbox[start : start + size])
            del self._inbox[: start + size + 2]

    @property
    def _body_capped(self) -> bool:
        return len(self._body) >= MAX_RESPONSE_BYTES

    def _keep(self, data: bytes | bytearray) -> None:
        room = MAX_RESPONSE_BYTES - len(self._body)
        if room > 0:
            self._body += data[:room]

    def _respond(self) -> None:
        if not self._response.done():
            assert self._status is not None
            self._response.set_result((self._status, self._reason, bytes(self._body)))
