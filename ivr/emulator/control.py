"""The caller/control API under ``/_emulator/`` (no auth): place calls, press keys, speak,
hang up, inspect calls and queues, set extension behaviour, answer as the person at an
extension, inject faults. See docs/emulator.md.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import TRANSFER_SETTINGS, Behaviour
from .controller import CTL, _one_line
from .state import ApiError


class PlaceCallBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str = Field(alias="from", min_length=1)
    to: str | None = None
    name: str = ""
    did: str | None = None


class DtmfBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    digits: str
    interval_ms: float = 0


class BehaviourBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    behaviour: Behaviour


async def _json_object(request: web.Request, *, empty: bytes = b"{}", what: str = "a JSON object") -> dict[str, Any]:
    """The request's JSON body, which must be an object (``empty`` stands for no body)."""
    where = f"{request.method} {request.path}"
    try:
        data = json.loads(await request.read() or empty)
    except ValueError:
        raise ApiError(400, f"{where}: body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"{where}: body must be {what}")
    return data


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    data = await _json_object(request)
    where = f"{request.method} {request.path}"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, f"{where}: {_one_line(exc)}") from None


async def place_call(request: web.Request) -> web.Response:
    body = await _body(request, PlaceCallBody)
    call = request.app[CTL].place_call(body.from_, body.to, body.name, body.did)
    return web.json_response({"callid": call.callid}, status=201)


async def list_calls(request: web.Request) -> web.Response:
    return web.json_response(request.app[CTL].list_calls())


async def call_info(request: web.Request) -> web.Response:
    return web.json_response(request.app[CTL].call_info(request.match_info["callid"]))


async def dtmf(request: web.Request) -> web.Response:
    body = await _body(request, DtmfBody)
    await request.app[CTL].send_dtmf(request.match_info["callid"], body.digits, body.interval_ms)
    return web.json_response({"sent": len(body.digits)})


async def audio(request: web.Request) -> web.Response:
    data = await request.read()
    if not data:
        raise ApiError(400, f"POST {request.path}: body must be a sound file (WAV)")
    wait = request.query.get("wait", "0") not in ("0", "", "false", "no")
    start, end = await request.app[CTL].speak(request.match_info["callid"], data, wait=wait)
    return web.json_response({"start": start, "end": end, "seconds": round(end - start, 3), "spoken": wait})


async def hangup(request: web.Request) -> web.Response:
    request.app[CTL].hangup(request.match_info["callid"])
    return web.json_response({"ended": True})


async def heard_wav(request: web.Request) -> web.Response:
    wav = request.app[CTL].heard_wav(request.match_info["callid"])
    return web.Response(body=wav, content_type="audio/wav")


async def arrivals(request: web.Request) -> web.Response:
    return web.json_response(request.app[CTL].arrivals(request.match_info["callid"]))


async def list_extensions(request: web.Request) -> web.Response:
    pbx = request.app[CTL].pbx
    return web.json_response(
        {dn.dn: dn.behaviour for dn in pbx.dns.values() if dn.behaviour is not None}
    )


async def set_extension(request: web.Request) -> web.Response:
    body = await _body(request, BehaviourBody)
    dn = request.match_info["dn"]
    request.app[CTL].set_behaviour(dn, body.behaviour)
    return web.json_response({"dn": dn, "behaviour": body.behaviour})


async def pick_up(request: web.Request) -> web.Response:
    dn = request.match_info["dn"]
    call = request.app[CTL].pick_up(dn)
    return web.json_response({"dn": dn, "callid": call.callid})


async def list_queues(request: web.Request) -> web.Response:
    return web.json_response(request.app[CTL].queues())


async def get_settings(request: web.Request) -> web.Response:
    cfg = request.app[CTL].config
    return web.json_response({name: getattr(cfg, name) for name in TRANSFER_SETTINGS})


async def put_settings(request: web.Request) -> web.Response:
    data = await _json_object(request)
    request.app[CTL].update_settings(data)
    return await get_settings(request)


async def faults(request: web.Request) -> web.Response:
    data = await _json_object(request, empty=b"null", what="a JSON object with one fault")
    return web.json_response(await request.app[CTL].inject_fault(data))


async def health(request: web.Request) -> web.Response:
    cfg = request.app[CTL].config
    return web.json_response({"ok": True, "route_point": cfg.route_point, "extensions": list(cfg.extensions),
                              "queues": cfg.queues, "ivrs": cfg.ivrs,
                              "tokens_issued": request.app[CTL].tokens.issued})


def add_routes(app: web.Application) -> None:
    """Register every ``/_emulator/`` route."""
    r = app.router
    r.add_get("/_emulator/health", health)
    r.add_post("/_emulator/calls", place_call)
    r.add_get("/_emulator/calls", list_calls)
    r.add_get("/_emulator/calls/{callid}", call_info)
    r.add_post("/_emulator/calls/{callid}/dtmf", dtmf)
    r.add_post("/_emulator/calls/{callid}/audio", audio)
    r.add_post("/_emulator/calls/{callid}/hangup", hangup)
    r.add_get("/_emulator/calls/{callid}/heard.wav", heard_wav)
    r.add_get("/_emulator/calls/{callid}/arrivals", arrivals)
    r.add_get("/_emulator/extensions", list_extensions)
    r.add_put("/_emulator/extensions/{dn}", set_extension)
    r.add_post("/_emulator/extensions/{dn}/answer", pick_up)
    r.add_get("/_emulator/queues", list_queues)
    r.add_get("/_emulator/settings", get_settings)
    r.add_put("/_emulator/settings", put_settings)
    r.add_post("/_emulator/faults", faults)
