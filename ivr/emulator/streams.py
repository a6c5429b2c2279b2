"""The two audio streams of a participant (protocol section 5).

GET: a chunked response of raw s16le 8 kHz mono, 20 ms chunks, paced by the loop clock: the
far party's voice, silence otherwise. It ends cleanly when the leg ends; it is cut (connection
closed, no final chunk) on token revocation or a ``truncate_stream`` fault. Every open GET
stream of an event loop is driven by one shared timer (``GetPacer``, a ``GET_TICK`` grid) that
writes due chunks straight to the transports: a chunk leaves when its 20 ms have passed on
the call's timeline, at most ``GET_TICK`` late, never early.

POST: a chunked request the emulator reads as it arrives; each chunk plays from its arrival
time or right after audio still queued from earlier chunks (a jitter buffer), which is what
``heard.wav`` reproduces.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

from aiohttp import web

from ivr.pbx.models import DNType, ParticipantStatus

from .auth import Token
from .controller import TOKEN_KEY, Controller
from .media import FRAME_BYTES, FRAME_SAMPLES, RATE, HeardCursor
from .state import ApiError, Call, Leg, StreamHandle

log = logging.getLogger("ivr.emulator")

MAX_LAG_FRAMES = 25  # a reader blocked longer than 0.5 s skips ahead instead of bursting
GET_TICK = 0.005  # the shared GET timer's period (s): how late a chunk may leave
WRITE_HIGH = 64 * 1024  # bytes queued in a transport (client not reading): send nothing more until it drains
CHUNK_HEAD = b"%x\r\n" % FRAME_BYTES  # HTTP/1.1 chunk-size line of one 20 ms frame
SILENT_CHUNK = CHUNK_HEAD + bytes(FRAME_BYTES) + b"\r\n"


class GetStream:
    """One open GET stream as the pacer sees it: where it is on the call timeline."""

    __slots__ = ("handle", "call", "transport", "pos", "due_at", "sent")

    def __init__(self, handle: StreamHandle, call: Call, transport: asyncio.Transport, pos: int) -> None:
        self.handle = handle
        self.call = call
        self.transport = transport
        self.pos = pos  # first sample of the next frame to send
        self.due_at = 0.0  # loop time from which that frame is complete (the pacer skips us before)
        self.sent = 0  # audio bytes written (chunk framing not counted)
        self._set_due()

    def _set_due(self) -> None:
        # sample_at(t) rounds: the frame is due once (t - t0) * RATE >= pos + FRAME_SAMPLES - 0.5
        self.due_at = self.call.t0 + (self.pos + FRAME_SAMPLES - 0.5) / RATE

    def pump(self, now: float) -> None:
        """Write the frames due at loop time ``now``, one HTTP chunk per 20 ms frame."""
        transport, call = self.transport, self.call
        if self.handle.end_mode is not None:  # ended: the handler writes the final chunk, or not
            return
        if transport.is_closing():  # the client went away
            self.handle.end("client")
            return
        if call.stall_until > now:  # fault: send nothing, lose what is said meanwhile
            self.pos = call.sample_at(now)
            self.due_at = min(call.stall_until, now + FRAME_SAMPLES / RATE)
            return
        due = call.sample_at(now) - self.pos
        if due < FRAME_SAMPLES:
            self._set_due()
            return
        if transport.get_write_buffer_size() > WRITE_HIGH:
            return  # the client is not reading: try again next tick; the lag rule applies once it does
        frames = due // FRAME_SAMPLES
        if frames > MAX_LAG_FRAMES:
            self.pos += (frames - 1) * FRAME_SAMPLES
            frames = 1
        count = frames * FRAME_SAMPLES
        if call.held or not call.voice.speaks(self.pos, count):
            transport.write(SILENT_CHUNK if frames == 1 else SILENT_CHUNK * frames)
        else:
            data = call.voice.render(self.pos, count)
            transport.write(b"".join(
                CHUNK_HEAD + data[i : i + FRAME_BYTES] + b"\r\n" for i in range(0, len(data), FRAME_BYTES)
            ))
        self.pos += count
        self.sent += 2 * count
        self._set_due()


class GetPacer:
    """Drives every open GET stream of one event loop from one timer on a ``GET_TICK`` grid.

    One timer callback a tick instead of a sleeping task per stream: the emulator's CPU per
    call stays small next to the worker it serves (bench/bench_emulator.py)."""

    def __init__(self, tick: float = GET_TICK) -> None:
        self.tick = tick
        self.streams: dict[GetStream, None] = {}  # insertion-ordered set
        self._timer: asyncio.TimerHandle | None = None
        self._next = 0.0

    @property
    def running(self) -> bool:
        """Whether the timer is scheduled (only while some GET stream is open)."""
        return self._timer is not None

    def add(self, stream: GetStream) -> None:
        self.streams[stream] = None
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._next = loop.time() + self.tick
            self._timer = loop.call_at(self._next, self._run)

    def discard(self, stream: GetStream) -> None:
        self.streams.pop(stream, None)
        if not self.streams and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _run(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for stream in list(self.streams):
            if now < stream.due_at:
                continue
            try:
                stream.pump(now)
            except Exception:  # one broken stream must not stop the others
                log.exception("GET stream of call %s: cut after an error", stream.call.callid)
                stream.handle.end("abort")
        if not self.streams:
            self._timer = None
            return
        self._next += self.tick
        if self._next <= now:  # the loop was blocked: back onto the grid, no burst of ticks
            self._next += (int((now - self._next) / self.tick) + 1) * self.tick
        self._timer = loop.call_at(self._next, self._run)


_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GetPacer] = weakref.WeakKeyDictionary()


def get_pacer() -> GetPacer:
    """The running loop's GET pacer (one per loop, shared by every emulator on it)."""
    loop = asyncio.get_running_loop()
    pacer = _pacers.get(loop)
    if pacer is None:
        pacer = _pacers[loop] = GetPacer()
    return pacer


def _require_media(leg: Leg, direction: str, any_leg: bool = False) -> None:
    if not any_leg and leg.dn.type != DNType.ROUTE_POINT:
        # A monitored DN's ordinary call is not the application's to hear or play to: real
        # PBXs answer 424 ("apart from recordings there is no official way", 3CX maintainer).
        raise ApiError(
            424,
            f"{direction} stream of participant {leg.id} on DN {leg.dn.dn!r} ({leg.dn.type}): "
            "audio streams are only for the application's route point",
        )
    if leg.status != ParticipantStatus.CONNECTED:
        raise ApiError(
            424,
            f"{direction} stream of participant {leg.id} on DN {leg.dn.dn!r}: no media yet (leg is {leg.status})",
        )


def _open(request: web.Request, kind: str, leg: Leg) -> tuple[StreamHandle, Token | None]:
    def abort() -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    handle = StreamHandle(kind, leg, abort)
    leg.streams.add(handle)
    token: Token | None = request.get(TOKEN_KEY)
    if token is not None:
        token.on_revoke.add(handle.cut_by_revocation)
    return handle, token


def _close(handle: StreamHandle, token: Token | None) -> None:
    handle.leg.streams.discard(handle)
    if token is not None:
        token.on_revoke.discard(handle.cut_by_revocation)


async def serve_get(request: web.Request, ctl: Controller, leg: Leg) -> web.StreamResponse:
    """Stream the far party's voice to the IVR in real time until the leg ends."""
    _require_media(leg, "GET", ctl.config.media_on_any_leg)
    call, pbx = leg.call, ctl.pbx
    loop = asyncio.get_running_loop()
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/octet-stream"})
    resp.enable_chunked_encoding()
    handle, token = _open(request, "get", leg)
    stream: GetStream | None = None
    pacer = get_pacer()
    try:
        await resp.prepare(request)  # headers are on the wire; chunks go straight to the transport
        pbx.log(call, "stream_opened", direction="get", dn=leg.dn.dn, participant=leg.id)
        transport = request.transport
        if transport is None:  # the client went away before the first chunk
            handle.end_mode = "client"
        else:
            stream = GetStream(handle, call, transport, call.sample_at(loop.time()))
            pacer.add(stream)
            await handle.ended.wait()  # the pacer writes nothing more once the stream has ended
            if handle.end_mode == "end":
                await resp.write_eof()
    except ConnectionError:
        # The client went away, or we cut the connection (abort): nothing more to send.
        handle.end_mode = handle.end_mode or "client"
    finally:
        if stream is not None:
            pacer.discard(stream)
        _close(handle, token)
        pbx.log(call, "stream_closed", direction="get", dn=leg.dn.dn, participant=leg.id,
                bytes=stream.sent if stream else 0, how=handle.end_mode or "error")
    # After an abort the transport is closed: aiohttp's final write_eof fails quietly.
    return resp


class _BodyTap(asyncio.Protocol):
    """Stands in for aiohttp's protocol on a POST connection while the body streams in.

    Everything is passed on to aiohttp unchanged (it parses the chunked body into the
    request's reader); right after each received packet ``on_data`` takes the new body bytes
    without waiting for them, so a chunk costs no task wake-up, and its arrival time is the
    packet's."""

    def __init__(self, inner: asyncio.BaseProtocol, on_data: Callable[[], None]) -> None:
        self.inner = inner
        self.on_data = on_data

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)  # type: ignore[attr-defined]
        self.on_data()

    def eof_received(self) -> bool | None:
        keep_open = self.inner.eof_received()  # type: ignore[attr-defined]
        self.on_data()
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)
        self.on_data()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def _untap(transport: asyncio.Transport, tap: _BodyTap) -> None:
    """Give the connection back to aiohttp's protocol, if it is still open.

    A closed connection needs nothing back: it receives nothing more, and a closed SSL
    transport has let go of its protocol (``get_protocol()`` raises there)."""
    if transport.is_closing():
        return
    if transport.get_protocol() is tap:
        transport.set_protocol(tap.inner)


async def serve_post(request: web.Request, ctl: Controller, leg: Leg) -> web.StreamResponse:
    """Record what the IVR plays to the far party, with arrival timing, until EOF or leg end."""
    _require_media(leg, "POST", ctl.config.media_on_any_leg)
    if request.content_length == 0:
        return web.Response(status=200)  # "a POST with Content-Length: 0 is closed at once"
    call, pbx = leg.call, ctl.pbx
    loop = asyncio.get_running_loop()
    content = request.content
    transport = request.transport
    handle, token = _open(request, "post", leg)
    done: asyncio.Future[None] = loop.create_future()  # the body ended, or the leg, or the client
    cursor = HeardCursor()
    received = 0

    def take() -> None:
        """Record the body bytes that arrived since the last call (aiohttp has parsed them)."""
        nonlocal received
        if done.done():
            return
        try:
            chunk = content.read_nowait()
        except ConnectionError:  # the client went away mid-body (or we aborted it)
            handle.end_mode = handle.end_mode or "client"
            done.set_result(None)
            return
        except Exception as exc:  # a malformed body: fail the request as a read would
            done.set_exception(exc)
            return
        if chunk:
            now = loop.time()
            call.arrivals.add(now - call.t0, len(chunk))
            if call.heard.add(cursor, chunk, call.sample_at(now)):
                pbx.log(call, "stray_wav_header", dn=leg.dn.dn)
            received += len(chunk)
        if content.at_eof():  # the client's zero chunk
            done.set_result(None)

    def leg_ended() -> None:
        if not done.done():
            done.set_result(None)

    handle.on_end = leg_ended
    tap: _BodyTap | None = None
    pbx.log(call, "stream_opened", direction="post", dn=leg.dn.dn, participant=leg.id)
    try:
        if transport is None:
            handle.end_mode = "client"
        else:
            tap = _BodyTap(transport.get_protocol(), take)
            transport.set_protocol(tap)  # type: ignore[arg-type]
            take()  # body bytes that came with the headers
            await done
    finally:
        handle.on_end = None
        _close(handle, token)
        pbx.log(call, "stream_closed", direction="post", dn=leg.dn.dn, participant=leg.id,
                bytes=received, how=handle.end_mode or "eof")
        if tap is not None and transport is not None:
            _untap(transport, tap)
    resp = web.Response(status=200)
    if handle.end_mode == "abort":
        return resp  # the transport is closed: aiohttp cannot send it, and says nothing
    if not request.content.is_eof():
        # The leg ended while the client was still sending: answer, then close the
        # connection instead of draining the rest of an endless body.
        await resp.prepare(request)
        await resp.write_eof()
        request.protocol.force_close()
    return resp
