"""The HTTP/1.1 response parser without I/O: fed bytes, in any split, it finds the head and
the body (Content-Length, chunked, until the connection ends) and refuses what is not HTTP."""

from __future__ import annotations

import pytest

from ivr.pbx.http11 import (
    MAX_CHUNK_BYTES,
    MAX_HEAD_BYTES,
    ProtocolError,
    ResponseParser,
)


class Seen:
    """A parser with its callbacks recorded."""

    def __init__(self) -> None:
        self.heads: list[tuple[int, str]] = []
        self.pieces: list[bytes] = []
        self.parser = ResponseParser(lambda status, reason: self.heads.append((status, reason)),
                                     lambda data: self.pieces.append(bytes(data)))

    def feed(self, data: bytes, step: int = 0) -> bool:
        """Feed ``data`` whole, or ``step`` bytes at a time (as TCP may deliver it)."""
        done = False
        for i in range(0, len(data), step or len(data) or 1):
            done = self.parser.feed(bytearray(data[i : i + (step or len(data))]))
        return done


@pytest.mark.parametrize("step", [0, 1, 7])
def test_content_length_body_and_nothing_past_it(step: int) -> None:
    seen = Seen()
    assert seen.feed(b"HTTP/1.1 424 Failed Dependency\r\nContent-Length: 7\r\n\r\nno leg!extra", step)
    assert seen.heads == [(424, "Failed Dependency")]
    assert b"".join(seen.pieces) == b"no leg!"  # the bytes past Content-Length are not body
    assert seen.parser.complete and seen.parser.feed(bytearray(b"more")) is True
    assert b"".join(seen.pieces) == b"no leg!"


def test_an_empty_body_is_complete_with_the_head() -> None:
    seen = Seen()
    assert seen.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert seen.heads == [(200, "OK")] and seen.pieces == []


@pytest.mark.parametrize("step", [0, 1, 5])
def test_interim_answers_are_skipped_and_chunks_come_whole_with_extensions_and_trailers(step: int) -> None:
    body = b'{"message": "token expired"}'
    data = (b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x;ext=1\r\n%s\r\n" % (10, body[:10]) + b"%x\r\n%s\r\n" % (len(body) - 10, body[10:])
            + b"0\r\nX-Trailer: 1\r\n\r\n")
    seen = Seen()
    assert seen.feed(data, step)
    assert seen.heads == [(401, "Unauthorized")]  # the 100 is not the answer
    assert seen.pieces == [body[:10], body[10:]]  # chunk by chunk, never a part of one


def test_chunks_in_one_read_are_handed_on_one_by_one() -> None:
    seen = Seen()
    assert not seen.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert seen.heads == [(200, "OK")] and seen.parser.chunked
    assert seen.feed(b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n")
    assert seen.pieces == [b"ab", b"cde"]


def test_a_chunk_cut_short_is_not_body_and_the_response_was_cut() -> None:
    seen = Seen()
    frames = b"".join(b"140\r\n" + bytes([i]) * 320 + b"\r\n" for i in range(3))
    assert not seen.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + frames + b"140\r\n" + b"\x09" * 100)
    assert seen.pieces == [bytes([i]) * 320 for i in range(3)]
    assert seen.parser.eof() is False  # the connection ended mid-body: cut, not complete


def test_a_body_until_the_connection_ends() -> None:
    seen = Seen()
    assert not seen.feed(b"HTTP/1.0 500 Internal Server Error\r\n\r\nxx")
    assert not seen.feed(b"yyy")
    assert seen.pieces == [b"xx", b"yyy"]
    assert seen.parser.eof() is True and seen.parser.complete


def test_a_connection_that_ends_before_the_head_or_the_length_is_a_cut() -> None:
    seen = Seen()
    assert not seen.feed(b"HTTP/1.1 200 OK\r\nContent-")
    assert seen.parser.eof() is False and seen.heads == []
    seen = Seen()
    assert not seen.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc")
    assert seen.parser.eof() is False and seen.pieces == [b"abc"]


@pytest.mark.parametrize(("data", "message"), [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "status line 'SSH-2.0-OpenSSH'"),
    (b"HTTP/1.1 OK\r\n\r\n", "status line 'HTTP/1.1 OK'"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length '-1'"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size b'zz'"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", "chunk size -5"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (MAX_CHUNK_BYTES + 1),
     f"chunk size {MAX_CHUNK_BYTES + 1}"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000, "chunk-size line too long"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"x" * MAX_HEAD_BYTES, "response head too large"),
])
def test_what_is_not_http_is_refused_saying_what(data: bytes, message: str) -> None:
    seen = Seen()
    with pytest.raises(ProtocolError) as info:
        seen.feed(data)
    assert str(info.value).startswith(message)
    assert seen.pieces == []


def test_a_failing_consumer_fails_the_feed() -> None:
    def broken(data: memoryview) -> None:
        raise ValueError("consumer bug")

    parser = ResponseParser(lambda status, reason: None, broken)
    with pytest.raises(ValueError, match="consumer bug") as info:
        parser.feed(bytearray(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"))
    assert not isinstance(info.value, ProtocolError)  # the consumer's error, not a bad response
