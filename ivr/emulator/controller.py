"""The emulator's core object: PBX, tokens, event sockets and faults, plus the caller API.

Both the HTTP control API (``control.py``) and the in-process Python API (``Emulator``)
call these methods, so the two cannot behave differently.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from aiohttp import web

from ivr.pbx.models import DNType

from .auth import Token, TokenStore
from .config import TRANSFER_SETTINGS, EmulatorConfig
from .events import EventBus
from .faults import FailNextCounter, FaultRequest
from .media import RATE, decode_audio, encode_wav, to_int16
from .state import ApiError, Call
from .switch import DTMF_DIGITS, Pbx


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class Controller:
    """Owns the emulated PBX and everything that acts on it from outside the wire."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.bus = EventBus()
        self.pbx = Pbx(config, self.bus)
        self.tokens = TokenStore(config.token_lifetime, config.revoke_previous_tokens, _loop_time)
        self.fail_next = FailNextCounter()
        self.sockets: set[web.WebSocketResponse] = set()
        self.xapi_down_until = 0.0  # loop time: /xapi/v1 answers xapi_down_status until then
        self.xapi_down_status = 503

    # --- the caller ("the outside world") ---------------------------------------------------

    def place_call(self, from_: str, to: str | None = None, name: str = "", did: str | None = None) -> Call:
        """An external caller dials one of our DNs (default: the route point)."""
        return self.pbx.inbound(from_, to, name, did)

    async def send_dtmf(self, callid: int | str, digits: str, interval_ms: float = 0) -> None:
        """One DTMFstring event per digit, ``interval_ms`` apart; returns when all are sent."""
        call = self.pbx.get_call(callid)
        bad = [d for d in digits if d not in DTMF_DIGITS]
        if not digits or bad:
            raise ApiError(400, f"dtmf: digits {digits!r} must be non-empty and only 0-9 * # A-D")
        if interval_ms < 0 or interval_ms > 10_000:
            raise ApiError(400, f"dtmf: interval_ms {interval_ms} must be within 0..10000")
        for i, digit in enumerate(digits):
            if i and interval_ms:
                await asyncio.sleep(interval_ms / 1000)
            self.pbx.dtmf_digit(call, digit)

    async def speak(self, callid: int | str, audio: bytes | np.ndarray, wait: bool = False) -> tuple[float, float]:
        """The far party says ``audio`` (WAV bytes, or 8 kHz mono int16/float samples).

        Returns (start, end) in seconds since call start; with ``wait`` returns once spoken.
        """
        call = self.pbx.get_call(callid)
        if isinstance(audio, (bytes, bytearray)):
            try:
                pcm = decode_audio(bytes(audio))
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
        else:
            pcm = _as_pcm(audio)
        start, end = self.pbx.speak(call, pcm)
        if wait:
            delay = call.t0 + end - _loop_time()
            if delay > 0:
                await asyncio.sleep(delay)
        return start, end

    def hangup(self, callid: int | str) -> None:
        """The far party hangs up."""
        self.pbx.hangup(self.pbx.get_call(callid))

    def pick_up(self, dn: str) -> Call:
        """The person at extension ``dn`` answers the call ringing there (a queue's call too)."""
        return self.pbx.pick_up_at(dn)

    def xapi_down(self) -> int | None:
        """The status /xapi/v1 answers now while an ``xapi_unavailable`` fault lasts, else None."""
        return self.xapi_down_status if _loop_time() < self.xapi_down_until else None

    # --- inspection -------------------------------------------------------------------------

    def call_info(self, callid: int | str) -> dict[str, Any]:
        """State, parties, attached data and the log of one call (JSON-ready)."""
        call = self.pbx.get_call(callid)
        now = _loop_time()
        attached: dict[str, Any] = {}
        for entry in call.log:
            if entry["event"] == "attached":
                attached.update(entry["data"])
        offer = call.offer
        return {
            "callid": call.callid,
            "direction": call.direction,
            "state": call.state,
            "from": call.caller,
            "to": call.to,
            "name": call.far.name,
            "did": call.far.did,
            "far_party": {"number": call.far.caller_id, "name": call.far.name, "type": call.far.dn_type},
            "location": call.location,
            "held": call.held,
            "offer": {"action": offer.kind, "destination": offer.destination} if offer else None,
            "queue": self._queue_info(call, now),
            "duration": round((call.ended_at or now) - call.t0, 3),
            "participants": [leg.info().model_dump(mode="json") for leg in call.legs.values()],
            "attached_data": attached,
            "heard_seconds": round(call.heard.duration_samples() / RATE, 3),
            "log": list(call.log),
        }

    @staticmethod
    def _queue_info(call: Call, now: float) -> dict[str, Any] | None:
        waiting = call.waiting
        if waiting is None:
            return None
        return {"dn": waiting.queue.dn, "position": waiting.queue.waiting.index(waiting) + 1,
                "waited": round(now - waiting.since, 3), "ringing": [leg.dn.dn for leg in waiting.ringing]}

    def queues(self) -> dict[str, list[dict[str, Any]]]:
        """Every queue DN with the calls waiting there, oldest first."""
        now = _loop_time()
        return {dn.dn: [{"callid": w.call.callid, "from": w.call.caller, "waited": round(now - w.since, 3),
                         "ringing": [leg.dn.dn for leg in w.ringing]} for w in dn.waiting]
                for dn in self.pbx.dns.values() if dn.type == DNType.QUEUE}

    def list_calls(self) -> list[dict[str, Any]]:
        """A short summary of every known call, oldest first."""
        return [
            {"callid": c.callid, "direction": c.direction, "state": c.state, "from": c.caller, "to": c.to,
             "location": c.location}
            for c in self.pbx.calls.values()
        ]

    def heard_pcm(self, callid: int | str) -> np.ndarray:
        """Everything the IVR played to the far party since call start (int16, 8 kHz)."""
        return self.pbx.get_call(callid).heard.render()

    def arrivals(self, callid: int | str) -> dict[str, Any]:
        """When each chunk of the IVR's audio arrived (seconds since call start) and its size."""
        return self.pbx.get_call(callid).arrivals.as_json()

    def heard_wav(self, callid: int | str) -> bytes:
        return encode_wav(self.heard_pcm(callid))

    def set_behaviour(self, dn: str, behaviour: str) -> None:
        self.pbx.set_behaviour(dn, behaviour)

    def update_settings(self, changes: dict[str, Any]) -> None:
        """Change the transfer shape while running (``TRANSFER_SETTINGS`` only), validated like the config."""
        unknown = sorted(set(changes) - set(TRANSFER_SETTINGS))
        if unknown:
            raise ApiError(400, f"settings: {unknown[0]!r} cannot be changed; one of {', '.join(TRANSFER_SETTINGS)}")
        try:
            checked = EmulatorConfig.model_validate({**self.config.model_dump(), **changes})
        except ValueError as exc:
            raise ApiError(400, f"settings: {_one_line(exc)}") from None
        for name in changes:
            setattr(self.config, name, getattr(checked, name))  # the PBX shares this config object

    # --- faults -----------------------------------------------------------------------------

    async def inject_fault(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply one fault (see ``FaultRequest``); returns ``{"fault", "affected"}``."""
        try:
            req = FaultRequest.model_validate(body)
            kind = req.kind()
        except ValueError as exc:
            raise ApiError(400, _one_line(exc)) from None
        affected = 0
        if kind == "close_event_sockets":
            sockets = list(self.sockets)
            for ws in sockets:
                await ws.close(code=1001, message=b"fault injection: close_event_sockets")
            affected = len(sockets)
        elif kind == "revoke_tokens":
            affected = self.tokens.revoke_all()
        elif kind == "fail_next" and req.fail_next:
            self.fail_next.arm(req.fail_next.count, req.fail_next.status)
            affected = req.fail_next.count
        elif kind == "stall_stream" and req.stall_stream:
            call = self.pbx.get_call(req.stall_stream.callid)
            call.stall_until = _loop_time() + req.stall_stream.seconds
            affected = len(call.streams("get"))
            self.pbx.log(call, "fault", fault="stall_stream", seconds=req.stall_stream.seconds)
        elif kind == "truncate_stream" and req.truncate_stream:
            call = self.pbx.get_call(req.truncate_stream.callid)
            streams = call.streams("get")
            for stream in streams:
                stream.end("abort")
            affected = len(streams)
            self.pbx.log(call, "fault", fault="truncate_stream", streams=affected)
        elif kind == "xapi_unavailable" and req.xapi_unavailable:
            self.xapi_down_until = _loop_time() + req.xapi_unavailable.seconds
            self.xapi_down_status = req.xapi_unavailable.status
        return {"fault": kind, "affected": affected}


def _as_pcm(audio: np.ndarray) -> np.ndarray:
    try:
        return to_int16(audio)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _one_line(exc: Exception) -> str:
    """A pydantic error (or any) as one line naming the field."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "body"
        return f"{loc}: {first.get('msg', 'invalid')}"
    return str(exc).splitlines()[0]


CTL = web.AppKey("ivr_emulator_controller", Controller)
"""Where the aiohttp application keeps its ``Controller``."""

# Where a request keeps its validated token (RequestKey exists from aiohttp 3.13 on).
TOKEN_KEY: Any = web.RequestKey("ivr_emulator_token", Token) if hasattr(web, "RequestKey") else "ivr_emulator_token"
