"""``ResponseParser``: one HTTP/1.1 response, parsed from the bytes it is fed (sans-I/O).

As h11 does, it owns no socket and no clock: the connection hands it what it reads
(:meth:`ResponseParser.feed`) and that the peer closed (:meth:`ResponseParser.eof`). It finds
the status line and headers (skipping interim 1xx answers) and the body, delimited by
Content-Length, chunked encoding or the connection's end. Unlike h11 it reports by callbacks
rather than event objects: an audio stream is 50 chunks a second per call, and an event
object per chunk would be an allocation each. Chunks are handed on whole (a chunk cut short
by a dropped connection is not body) and as views of the input, without a copy.
"""

from __future__ import annotations

from collections.abc import Callable

MAX_HEAD_BYTES = 64 * 1024  # a status line and headers, never more
MAX_CHUNK_BYTES = 1 << 20  # one chunk is kept until whole: bound what a server can make us hold
MAX_CHUNK_LINE = 1024  # a chunk-size line, extensions included


class ProtocolError(ValueError):
    """The bytes are not an HTTP/1.1 response; the message says what was wrong."""


class ResponseParser:
    """Parses one response: ``on_head(status, reason)`` once the head is in, then
    ``on_body(data)`` per piece of body (a memoryview valid only during the call: copy what
    you keep). An exception raised by a callback propagates out of :meth:`feed`."""

    __slots__ = ("_inbox", "_length", "_on_body", "_on_head", "chunked", "complete", "reason", "status")

    def __init__(self, on_head: Callable[[int, str], None], on_body: Callable[[memoryview], None]) -> None:
        self._on_head = on_head
        self._on_body = on_body
        self._inbox = bytearray()  # received, not parsed yet
        self.status: int | None = None  # of the final response (not a 1xx)
        self.reason = ""
        self._length: int | None = None  # body bytes still to come (Content-Length)
        self.chunked = False
        self.complete = False  # the body has ended; later bytes are not part of this response

    def feed(self, data: bytes | bytearray) -> bool:
        """Parse ``data`` (a bytearray is taken over as it is: do not reuse it). Returns True
        once the response is complete; bytes fed after that are ignored. Raises
        :class:`ProtocolError` on a malformed response."""
        if self.complete or not data:
            return self.complete
        if self._inbox:
            self._inbox += data
        elif isinstance(data, bytearray):  # the usual case (reads end on whole chunks): no copy
            self._inbox = data
        else:
            self._inbox = bytearray(data)
        if self.status is None and not self._parse_head():
            return False
        if self.chunked:
            self._parse_chunks()
        else:
            self._parse_plain()
        return self.complete

    def eof(self) -> bool:
        """The connection closed. True if that ends the response whole (a body delimited by the
        connection's end, or one complete already); False if it was cut short."""
        if not self.complete and self.status is not None and self._length is None and not self.chunked:
            self.complete = True
        return self.complete

    # --- the head -------------------------------------------------------------------------------

    def _parse_head(self) -> bool:
        inbox = self._inbox
        while True:
            end = inbox.find(b"\r\n\r\n")
            if end < 0:
                if len(inbox) > MAX_HEAD_BYTES:
                    raise ProtocolError("response head too large")
                return False
            head = bytes(inbox[:end]).decode("latin-1").split("\r\n")
            del inbox[: end + 4]
            parts = head[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise ProtocolError(f"status line {head[0][:80]!r}")
            status = int(parts[1])
            if not 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
                break
        length = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                if not value.isdigit():
                    raise ProtocolError(f"Content-Length {value[:20]!r}")
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                self.chunked = True
        self._length = None if self.chunked else length
        self.status, self.reason = status, parts[2] if len(parts) > 2 else ""
        self._on_head(status, self.reason)
        return True

    # --- the body -------------------------------------------------------------------------------

    def _parse_plain(self) -> None:
        """A body by Content-Length (nothing past it is body) or until the connection ends."""
        inbox = self._inbox
        length = self._length
        if length is not None and len(inbox) >= length:
            self.complete = True
            if length:
                with memoryview(inbox) as view:
                    self._on_body(view[:length])
            self._inbox = bytearray()
            return
        self._inbox = bytearray()
        if inbox:
            if length is not None:
                self._length = length - len(inbox)
            with memoryview(inbox) as view:
                self._on_body(view)

    def _parse_chunks(self) -> None:
        inbox = self._inbox
        pos = 0
        with memoryview(inbox) as view:  # each chunk handed on without a copy of its own
            while True:
                line_end = inbox.find(b"\r\n", pos)
                if line_end < 0:
                    if len(inbox) - pos > MAX_CHUNK_LINE:
                        raise ProtocolError("chunk-size line too long")
                    break
                try:
                    size = int(inbox[pos:line_end], 16)
                except ValueError:  # with extensions (";name=value"), or not a size at all
                    size = _chunk_size(bytes(inbox[pos:line_end]))
                if not 0 < size <= MAX_CHUNK_BYTES:
                    if size == 0:
                        self.complete = True  # trailers, if any, are not needed
                        break
                    raise ProtocolError(f"chunk size {size} (at most {MAX_CHUNK_BYTES})")
                start = line_end + 2
                if len(inbox) < start + size + 2:
                    break
                self._on_body(view[start : start + size])
                pos = start + size + 2
        if self.complete:
            del inbox[:]
        elif pos:
            del inbox[:pos]


def _chunk_size(line: bytes) -> int:
    text = line.split(b";", 1)[0].strip()
    try:
        return int(text, 16)
    except ValueError:
        raise ProtocolError(f"chunk size {text[:20]!r}") from None
