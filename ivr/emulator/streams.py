"""The two audio streams of a participant (protocol section 5).

GET: a chunked response of raw s16le 8 kHz mono, 20 ms chunks, paced by the loop clock: the
far party's voice, silence otherwise. It ends cleanly when the leg ends; it is cut (connection
closed, no final chunk) on token revocation or a ``truncate_stream`` fault.

POST: a chunked request the emulator reads as it arrives; each chunk plays from its arrival
time or right after audio still queued from earlier chunks (a jitter buffer), which is what
``heard.wav`` reproduces.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ivr.pbx.models import ParticipantStatus

from .auth import Token
from .controller import TOKEN_KEY, Controller
from .media import FRAME_SAMPLES, RATE, HeardCursor
from .state import ApiError, Leg, StreamHandle

MAX_LAG_FRAMES = 25  # a reader blocked longer than 0.5 s skips ahead instead of bursting


def _require_media(leg: Leg, direction: str) -> None:
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
    _require_media(leg, "GET")
    call, pbx = leg.call, ctl.pbx
    loop = asyncio.get_running_loop()
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/octet-stream"})
    resp.enable_chunked_encoding()
    handle, token = _open(request, "get", leg)
    sent = 0
    try:
        await resp.prepare(request)
        pbx.log(call, "stream_opened", direction="get", dn=leg.dn.dn, participant=leg.id)
        pos = call.sample_at(loop.time())  # first sample of the next frame to send
        while handle.end_mode is None:
            now = loop.time()
            if call.stall_until > now:  # fault: send nothing, lose what is said meanwhile
                await asyncio.sleep(min(0.02, call.stall_until - now))
                pos = call.sample_at(loop.time())
                continue
            due = call.sample_at(now) - pos
            if due < FRAME_SAMPLES:
                await asyncio.sleep((FRAME_SAMPLES - due) / RATE)
                continue
            frames = due // FRAME_SAMPLES
            if frames > MAX_LAG_FRAMES:
                pos += (frames - 1) * FRAME_SAMPLES
                frames = 1
            count = frames * FRAME_SAMPLES
            data = bytes(count * 2) if call.held else call.voice.render(pos, count)
            pos += count
            for i in range(frames):  # one 320-byte chunk per 20 ms frame
                await resp.write(data[i * 2 * FRAME_SAMPLES : (i + 1) * 2 * FRAME_SAMPLES])
            sent += len(data)
        if handle.end_mode == "end":
            await resp.write_eof()
    except ConnectionError:
        # The client went away, or we cut the connection (abort): nothing more to send.
        handle.end_mode = handle.end_mode or "client"
    finally:
        _close(handle, token)
        pbx.log(call, "stream_closed", direction="get", dn=leg.dn.dn, participant=leg.id,
                bytes=sent, how=handle.end_mode or "error")
    # After an abort the transport is closed: aiohttp's final write_eof fails quietly.
    return resp


async def serve_post(request: web.Request, ctl: Controller, leg: Leg) -> web.StreamResponse:
    """Record what the IVR plays to the far party, with arrival timing, until EOF or leg end."""
    _require_media(leg, "POST")
    if request.content_length == 0:
        return web.Response(status=200)  # "a POST with Content-Length: 0 is closed at once"
    call, pbx = leg.call, ctl.pbx
    loop = asyncio.get_running_loop()
    handle, token = _open(request, "post", leg)
    cursor = HeardCursor()
    received = 0
    ended = loop.create_task(handle.ended.wait())
    pbx.log(call, "stream_opened", direction="post", dn=leg.dn.dn, participant=leg.id)
    try:
        while True:
            read = loop.create_task(request.content.readany())
            done, _ = await asyncio.wait({read, ended}, return_when=asyncio.FIRST_COMPLETED)
            if read not in done or handle.end_mode is not None:
                read.cancel()
                break
            try:
                chunk = read.result()
            except ConnectionError:  # the client went away mid-body
                handle.end_mode = "client"
                break
            if not chunk:
                break  # the client's zero chunk
            now = loop.time()
            call.arrivals.add(now - call.t0, len(chunk))
            if call.heard.add(cursor, chunk, call.sample_at(now)):
                pbx.log(call, "stray_wav_header", dn=leg.dn.dn)
            received += len(chunk)
    finally:
        ended.cancel()
        _close(handle, token)
        pbx.log(call, "stream_closed", direction="post", dn=leg.dn.dn, participant=leg.id,
                bytes=received, how=handle.end_mode or "eof")
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
