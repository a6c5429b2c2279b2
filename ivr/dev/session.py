"""One page's WebSocket: JSON control messages both ways, binary audio frames both ways.

Page -> server (text, JSON): ``{"type": "call", "caller": "+49...", "did": ""}``,
``{"type": "dtmf", "digits": "1"}``, ``{"type": "hangup"}``,
``{"type": "wav", "data": "<base64 of a WAV file>"}``. Page -> server (binary): microphone
audio, s16le 8 kHz mono (any length; 320 bytes = 20 ms is what the page sends).

Server -> page (text): ``hello``, ``call_started``, ``event`` (emulator log entries), ``live``
(changed fields: activity, vars, digits, transcript, new_steps, ...), ``record`` (the call
record when the IVR's part ends), ``call_ended``, ``stats``, ``reload``, ``error``.
Server -> page (binary): what the caller hears, 320-byte frames (20 ms), in real time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from ivr.emulator.state import ApiError
from ivr.emulator.xapi.store import XapiError

from .audio import FRAME_BYTES, HeardFollower, caller_says_live, pcm_from_bytes
from .live import LiveView, json_safe

if TYPE_CHECKING:
    from .server import DevServer


FRAME_S = 0.02
LIVE_EVERY_S = 0.1
STATS_EVERY_S = 1.0
RECORD_GRACE_S = 3.0  # after the emulator call ended, how long to wait for the worker's record
MAX_QUEUED = 250  # outgoing messages (5 s of audio): beyond this a slow page loses audio frames


class PageSession:
    """Serves one page: places its call, streams audio both ways, pushes the live view."""

    def __init__(self, server: DevServer, ws: web.WebSocketResponse) -> None:
        self.server = server
        self.ws = ws
        self.callid: int | None = None
        self.audio_bytes = 0  # heard audio sent to the page
        self.mic_bytes = 0  # microphone audio received from the page
        self.dropped_frames = 0
        self._out: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._follow: asyncio.Task[None] | None = None

    # --- output -----------------------------------------------------------------------------

    def send_json(self, message: dict[str, Any]) -> None:
        self._out.put_nowait(json.dumps(message, default=str))

    def _send_audio(self, frame: bytes) -> None:
        if self._out.qsize() > MAX_QUEUED:
            self.dropped_frames += 1
            return
        self.audio_bytes += len(frame)
        self._out.put_nowait(frame)

    async def _writer(self) -> None:
        # The only task that writes to the socket, so frames never interleave.
        while (item := await self._out.get()) is not None:
            if isinstance(item, bytes):
                await self.ws.send_bytes(item)
            else:
                await self.ws.send_str(item)

    # --- the session ------------------------------------------------------------------------

    async def run(self) -> None:
        """Until the page goes away: read its messages; then hang up its call."""
        self.server.sessions.add(self)
        writer = asyncio.create_task(self._writer(), name="ivr-dev-ws-writer")
        self.send_json(self.server.hello())
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._on_audio(msg.data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.server.sessions.discard(self)
            await self._hangup_quietly()
            if self._follow is not None:
                self._follow.cancel()
            self._out.put_nowait(None)
            writer.cancel()
            await asyncio.gather(writer, *(t for t in [self._follow] if t), return_exceptions=True)

    async def close(self) -> None:
        await self.ws.close()

    async def _on_text(self, text: str) -> None:
        try:
            msg = json.loads(text)
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                raise ValueError("expected a JSON object with a string 'type'")
            handler = getattr(self, f"_do_{msg['type']}", None)
            if handler is None:
                raise ValueError(f"unknown message type {msg['type']!r}")
            await handler(msg)
        except (ValueError, ApiError, XapiError) as exc:
            self.send_json({"type": "error", "message": f"{_kind(text)}: {exc}"})

    # --- commands ---------------------------------------------------------------------------

    async def _do_call(self, msg: dict[str, Any]) -> None:
        if self.callid is not None:
            raise ValueError(f"call {self.callid} is still active; hang up first")
        caller = str(msg.get("caller") or self.server.hello()["caller"]).strip()
        did = str(msg.get("did") or "").strip() or None
        emu = self.server.emu
        callid = await emu.place_call(caller, self.server.target.route_point, did=did)
        self.callid = callid
        self.send_json({"type": "call_started", "callid": callid, "caller": caller, "did": did})
        self._follow = asyncio.create_task(self._follow_call(callid), name=f"ivr-dev-follow-{callid}")

    async def _do_pbx(self, msg: dict[str, Any]) -> None:
        await self.server.change_pbx(msg)

    async def _do_dtmf(self, msg: dict[str, Any]) -> None:
        await self.server.emu.send_dtmf(self._active(), str(msg.get("digits", "")))

    async def _do_hangup(self, _msg: dict[str, Any]) -> None:
        await self.server.emu.hangup(self._active())

    async def _do_wav(self, msg: dict[str, Any]) -> None:
        try:
            data = base64.b64decode(str(msg.get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("'data' is not base64") from None
        start, end = await self.server.emu.speak(self._active(), data)
        self.send_json({"type": "wav_queued", "start": start, "end": end, "seconds": round(end - start, 3)})

    def _on_audio(self, data: bytes) -> None:
        self.mic_bytes += len(data)
        if self.callid is not None:
            caller_says_live(self.server.emu, self.callid, pcm_from_bytes(data))

    def _active(self) -> int:
        if self.callid is None:
            raise ValueError("no active call; press Call first")
        return self.callid

    async def _hangup_quietly(self) -> None:
        if self.callid is not None:
            try:
                await self.server.emu.hangup(self.callid)
            except ApiError:
                pass  # already ended

    # --- following the call -----------------------------------------------------------------

    async def _follow_call(self, callid: int) -> None:
        """Real-time audio every 20 ms; the live view every 100 ms; the record at the end."""
        server, loop = self.server, asyncio.get_running_loop()
        view, heard = LiveView(server.emu, callid), HeardFollower(server.emu, callid)
        record_sent = False
        ended_at: float | None = None
        tick = next_live = next_stats = loop.time()
        try:
            while True:
                now = loop.time()
                for frame in heard.due(now):
                    self._send_audio(frame)
                if now >= next_live:
                    next_live = now + LIVE_EVERY_S
                    if view.call is None:
                        view.call = server.calls.get(callid)
                    for message in view.poll():
                        self.send_json(message)
                    record = None if record_sent else server.record_for(callid)
                    if record is not None:
                        self.send_json({"type": "record", "callid": callid, "record": json_safe(record.to_dict())})
                        record_sent = True
                    if view.state == "ended":
                        ended_at = ended_at or now
                        if record_sent or now - ended_at > RECORD_GRACE_S:
                            break
                if now >= next_stats:
                    next_stats = now + STATS_EVERY_S
                    self._stats(callid, heard)
                tick += FRAME_S
                await asyncio.sleep(max(0.001, tick - loop.time()))
                if tick < loop.time() - 1:  # the loop stalled: do not try to catch up tick by tick
                    tick = loop.time()
        except ApiError as exc:  # the emulator forgot the call (more than 100 ended since)
            self.send_json({"type": "error", "message": f"call {callid}: {exc}"})
        finally:
            self._stats(callid, heard)
            self.send_json({"type": "call_ended", "callid": callid})
            if self.callid == callid:
                self.callid = None

    def _stats(self, callid: int, heard: HeardFollower) -> None:
        self.send_json({"type": "stats", "callid": callid, "audio_bytes": self.audio_bytes,
                        "mic_bytes": self.mic_bytes, "dropped_frames": self.dropped_frames,
                        "skipped_ms": heard.skipped_samples // 8, "frame_bytes": FRAME_BYTES})


def _kind(text: str) -> str:
    """The message type for an error line, or 'message' when it has none."""
    try:
        kind = json.loads(text).get("type")
        return f"message {kind!r}" if isinstance(kind, str) else "message"
    except (ValueError, AttributeError):
        return "message (not JSON)"
