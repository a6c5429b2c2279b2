"""The Call Control REST endpoints (section 3 of the protocol), shared by HTTP and the socket.

``CallControlApi.dispatch`` maps (method, path segments, JSON body) to a wire model or raises
``ApiError``; the aiohttp handler adds body checks and the audio stream endpoints.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ivr.pbx.models import Action, ActionRequest, MakeCallRequest

from .controller import CTL, _one_line
from .state import ApiError
from .switch import Pbx

ATTACH_PARTY_DATA = "attach_party_data"
"""Data for the other party: listed by third-party V20 references, not by 3CX's examples;
accepted (stored apart from the leg's own data) so a client that sends it is not refused."""
ACTIONS = (*Action.ALL, ATTACH_PARTY_DATA)


def split_path(raw_path: str) -> list[str]:
    """``/callcontrol/800/devices/sip%3A800...`` -> ["800", "devices", "sip:800..."] (decoded)."""
    path = raw_path.split("?", 1)[0]
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] != "callcontrol":
        raise ApiError(404, f"path {path!r} is not under /callcontrol")
    return [unquote(p) for p in parts[1:]]


def to_json(value: Any) -> Any:
    """Wire models (or lists of them) as JSON-ready data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


class CallControlApi:
    """Every non-streaming /callcontrol endpoint."""

    def __init__(self, pbx: Pbx) -> None:
        self.pbx = pbx

    def dispatch(self, method: str, parts: list[str], body: dict[str, Any] | None = None) -> Any:
        pbx = self.pbx
        n = len(parts)
        where = "/callcontrol/" + "/".join(parts)
        if n == 0:
            self._method(method, "GET", where)
            return [dn.info() for dn in pbx.dns.values()]
        dn = pbx.get_dn(parts[0])
        if n == 1:
            self._method(method, "GET", where)
            return dn.info()
        kind = parts[1]
        if kind == "makecall" and n == 2:
            self._method(method, "POST", where)
            return pbx.makecall(dn, self._model(MakeCallRequest, body, where))
        if kind == "devices":
            if n == 2:
                self._method(method, "GET", where)
                return [d.info for d in dn.devices]
            device = dn.find_device(parts[2])
            if device is None:
                raise ApiError(404, f"device {parts[2]!r} not found on DN {dn.dn!r}")
            if n == 3:
                self._method(method, "GET", where)
                return device.info
            if n == 4 and parts[3] == "makecall":
                self._method(method, "POST", where)
                return pbx.makecall(dn, self._model(MakeCallRequest, body, where), device_id=parts[2])
        if kind == "participants":
            if n == 2:
                self._method(method, "GET", where)
                return [leg.info() for leg in dn.legs.values()]
            leg = pbx.get_leg(dn, parts[2])
            if n == 3:
                self._method(method, "GET", where)
                return leg.info()
            if n == 4:
                action = parts[3]
                if action not in ACTIONS:
                    raise ApiError(404, f"{where}: unknown action {action!r}")
                self._method(method, "POST", where)
                req = self._model(ActionRequest, body, where)
                if action == Action.ANSWER:
                    return pbx.answer(leg)
                if action == Action.DROP:
                    return pbx.drop(leg)
                if action == Action.ATTACH_PARTICIPANT_DATA:
                    return pbx.attach(leg, req)
                if action == ATTACH_PARTY_DATA:
                    return pbx.attach(leg, req, party=True)
                return pbx.offer(leg, action, req)
        raise ApiError(404, f"{where}: no such endpoint")

    @staticmethod
    def _method(got: str, want: str, where: str) -> None:
        if got != want:
            raise ApiError(405, f"{where}: method {got} not allowed, use {want}", error="method_not_allowed")

    @staticmethod
    def _model(model: type[BaseModel], body: dict[str, Any] | None, where: str) -> Any:
        try:
            return model.model_validate(body or {})
        except ValidationError as exc:
            raise ApiError(400, f"{where}: body field {_one_line(exc)}") from None


async def read_json_body(request: web.Request, where: str, accept_empty: bool = True) -> dict[str, Any]:
    """The JSON object body of an action/makecall POST, with the status a real server gives.

    An empty body (with or without Content-Type) is ``{}`` when ``accept_empty``: "the body
    can be empty" (3CX maintainer); a bodiless makecall still fails for its missing fields."""
    raw = await request.read()
    ctype = request.headers.get("Content-Type")
    if not raw:
        if accept_empty:
            return {}
        raise ApiError(400, f"{where}: body must be a JSON object ('{{}}' when there are no fields)")
    if ctype is None or "json" not in request.content_type:
        raise ApiError(415, f"{where}: Content-Type must be application/json, got {ctype!r}")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, f"{where}: body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"{where}: body must be a JSON object, got {type(body).__name__}")
    return body


async def callcontrol_handler(request: web.Request) -> web.StreamResponse:
    """aiohttp entry point for every /callcontrol path except the WebSocket."""
    from . import streams  # late import: streams needs this module's helpers

    ctl = request.app[CTL]
    parts = split_path(request.rel_url.raw_path)
    if len(parts) == 4 and parts[1] == "participants" and parts[3] == "stream":
        leg = ctl.pbx.get_leg(ctl.pbx.get_dn(parts[0]), parts[2])
        if request.method == "GET":
            return await streams.serve_get(request, ctl, leg)
        if request.method == "POST":
            return await streams.serve_post(request, ctl, leg)
        raise ApiError(405, f"{request.path}: method {request.method} not allowed", error="method_not_allowed")
    body = None
    if request.method == "POST":
        body = await read_json_body(request, request.path, ctl.config.accept_empty_action_body)
    result = await settled(CallControlApi(ctl.pbx).dispatch(request.method, parts, body))
    return web.json_response(to_json(result))


async def settled(result: Any) -> Any:
    """A dispatch result; a blocking offer's future is awaited (shielded: a client that gives
    up does not cancel the delivery) and its failure raised as the error answer."""
    if isinstance(result, asyncio.Future):
        result = await asyncio.shield(result)
        if isinstance(result, ApiError):
            raise result
    return result
