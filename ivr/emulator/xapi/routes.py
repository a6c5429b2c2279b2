"""``/xapi/v1/...``: the Configuration API over HTTP, and ``/_emulator/xapi/...`` to change a
user's presence or a department's forced mode during a test.

Paths are OData's: ``/Users``, ``/Users(5)``, ``/Users(Number='101')``, ``/Groups(3)/Members``.
Collections answer ``{"@odata.context": ..., "value": [...]}`` (``@odata.count`` with
``$count=true``), errors ``{"error": {"code", "message"}}``; create is 201 with the entity,
update and delete 204. The Bearer token is the Call Control one (same token store).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..auth import bearer
from ..controller import CTL
from .odata import ODataError, QueryOptions, parse_options
from .store import XapiError, XapiStore, wall_time

__all__ = ["STORE", "add_routes"]

STORE = web.AppKey("xapi_store", XapiStore)
Entity = dict[str, Any]

_PATH = re.compile(
    r"^(?P<set>[A-Za-z]+)(?:\((?P<key>(?:'(?:[^']|'')*'|[^)'])*)\))?(?:/(?P<nav>[A-Za-z.]+(?:\([^)]*\))?))?$"
)
_NUMBER_KEY = re.compile(r"^Number='((?:[^']|'')*)'$")
_NAVIGATION = {"Users": ("ForwardingProfiles",), "Groups": ("Members", "OfficeHolidays"), "Queues": ("Agents",),
               "RingGroups": ("Members",), "OfficeHours": ("OfficeHolidays",)}


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}/xapi/v1"


def _shape(entity: Entity, opts: QueryOptions, entity_set: str) -> Entity:
    """Navigation properties only when expanded, then ``$select``."""
    out = dict(entity)
    for nav in _NAVIGATION.get(entity_set, ()):
        if nav not in opts.expand:
            out.pop(nav, None)
    if opts.select:
        keep = set(opts.select) | set(opts.expand)
        out = {k: v for k, v in out.items() if k in keep}
    return out


def _collection(request: web.Request, entity_set: str, items: list[Entity], opts: QueryOptions) -> web.Response:
    page, total = opts.apply(items)
    body: Entity = {"@odata.context": f"{_base(request)}/$metadata#{entity_set}"}
    if opts.count:
        body["@odata.count"] = total
    body["value"] = [_shape(e, opts, entity_set) for e in page]
    return web.json_response(body)


def _entity(request: web.Request, entity_set: str, entity: Entity, opts: QueryOptions, status: int = 200) -> web.Response:
    body = {"@odata.context": f"{_base(request)}/$metadata#{entity_set}/$entity", **_shape(entity, opts, entity_set)}
    return web.json_response(body, status=status)


async def _json_body(request: web.Request) -> Entity:
    try:
        body = json.loads(await request.text() or "{}")
    except ValueError:
        raise XapiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise XapiError(400, "the body must be a JSON object")
    return body


class _Set:
    """One entity set: how to list, render, create, update and delete its entities."""

    def __init__(self, table: Callable[[XapiStore], dict[int, Entity]], render: Callable[[XapiStore, int], Entity],
                 create: Callable[[XapiStore, Entity], int] | None, update: Callable[[XapiStore, int, Entity], None] | None,
                 delete: Callable[[XapiStore, int], None] | None, by_number: bool = True) -> None:
        self.table, self.render, self.create, self.update, self.delete = table, render, create, update, delete
        self.by_number = by_number


def _del(table: str) -> Callable[[XapiStore, int], None]:
    return lambda s, i: getattr(s, table).pop(i)


_SETS: dict[str, _Set] = {
    "Users": _Set(lambda s: s.users, XapiStore.render_user, XapiStore.create_user, XapiStore.update_user,
                  XapiStore.delete_user),
    "Groups": _Set(lambda s: s.groups, XapiStore.render_group, XapiStore.create_group, XapiStore.update_group,
                   XapiStore.delete_group),
    "Queues": _Set(lambda s: s.queues, XapiStore.render_queue, XapiStore.create_queue, XapiStore.update_queue,
                   _del("queues")),
    "RingGroups": _Set(lambda s: s.ring_groups, XapiStore.render_ring_group, XapiStore.create_ring_group,
                       XapiStore.update_ring_group, _del("ring_groups")),
    "Holidays": _Set(lambda s: s.holidays, XapiStore.render_holiday, XapiStore.create_holiday,
                     XapiStore.update_holiday, XapiStore.delete_holiday, by_number=False),
}


def _find(store: XapiStore, name: str, es: _Set, key: str) -> int:
    table = es.table(store)
    if key.lstrip("-").isdigit():
        eid = int(key)
        if eid not in table:
            raise XapiError(404, f"{name}({eid}) not found")
        return eid
    m = _NUMBER_KEY.match(key)
    if m and es.by_number:
        number = m.group(1).replace("''", "'")
        for eid, e in table.items():
            if e.get("Number") == number:
                return eid
        raise XapiError(404, f"{name}(Number='{number}') not found")
    raise XapiError(400, f"{name}({key}): the key must be an Id or Number='...'")


def _party(store: XapiStore, number: str) -> str:
    """A DN as ActiveCalls names it: the number, then the user's or queue's name (``810 Sales queue``)."""
    name = store.name_of(number)
    return f"{number} {name}" if name else number


def _active_calls(request: web.Request) -> list[Entity]:
    """One entity per call the switch holds. A call waiting at a queue (agents ringing or not)
    is ``Routing`` with the queue as ``Callee`` and ``LastChangeStatus`` when it arrived there;
    once an agent answers it is ``Talking`` with the agent."""
    pbx = request.app[CTL].pbx
    store = request.app[STORE]
    now = asyncio.get_running_loop().time()
    server_now = wall_time(now, now)
    out = []
    for call in pbx.calls.values():
        if call.state == "ended":
            continue
        if call.waiting is not None:
            status = "Routing"
        else:
            status = {"connected": "Talking", "ringing": "Ringing", "dialing": "Routing"}.get(call.state, call.state)
        changed = call.t0 if call.status_at is None else call.status_at
        out.append({
            "Id": call.callid, "Caller": call.caller, "Callee": _party(store, call.location or call.to),
            "Status": status, "EstablishedAt": wall_time(call.t0, now), "LastChangeStatus": wall_time(changed, now),
            "ServerNow": server_now,
        })
    return out


def _system(request: web.Request, what: str) -> Entity:
    store = request.app[STORE]
    ctl = request.app[CTL]
    users = store.users.values()
    if what == "status":
        return {
            "Id": 0, "Version": store.version, "Activated": True, "LicenseActive": True, "ProductCode": "3CXENT",
            "FQDN": request.host, "CallsActive": len(_active_calls(request)), "ExtensionsTotal": len(store.users),
            "ExtensionsRegistered": sum(1 for u in users if u.get("IsRegistered")), "UserExtensions": len(store.users),
            "MaxSimCalls": 1000, "TrunksTotal": 0, "TrunksRegistered": 0, "HasNotRunningServices": False,
            "OS": "Linux", "AutoUpdateEnabled": False,
        }
    if what == "health":
        return {"Id": 0, "Firewall": True, "Phones": True, "Trunks": True, "CustomTemplatesCount": 0,
                "UnsupportedFirmwaresCount": 0}
    if what == "parameters":
        return {"Version": store.version, "FQDN": request.host, "GlobalLanguage": store.office_hours["SystemLanguage"],
                "IsMulticompanyMode": False, "IsHosted": False, "SipPort": 5060, "HttpsPort": 5001,
                "ProcessorCount": 2, "IsChatLogEnabled": False}
    return {"Activated": True, "LicenseActive": True, "ProductCode": "3CXENT", "MaxSimCalls": 1000,
            "Version": store.version, "CompanyName": "ivr3cx emulator", "LicenseKey": "EMULATOR",
            "ActiveModules": [], "Support": False, "ClientId": ctl.config.client_id}


async def xapi_handler(request: web.Request) -> web.StreamResponse:
    """Every ``/xapi/v1/...`` request."""
    ctl = request.app[CTL]
    down = ctl.xapi_down()
    if down is not None:  # the xapi_unavailable fault: this API is down, Call Control is not
        return web.json_response({"error": {"code": "", "message": "Service Unavailable (emulator fault)"}}, status=down)
    if ctl.tokens.validate(bearer(request.headers.get("Authorization"))) is None:
        return web.json_response({"error": {"code": "", "message": "Unauthorized"}}, status=401,
                                 headers={"WWW-Authenticate": "Bearer"})
    try:
        return await _dispatch(request)
    except (XapiError, ODataError) as exc:
        err = exc if isinstance(exc, XapiError) else XapiError(400, str(exc))
        return web.json_response(err.body(), status=err.status)
    finally:
        if request.method != "GET":  # a change to users or queues may let an agent take a waiting call
            ctl.pbx.queues.offer_soon()


async def _dispatch(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    method = request.method
    tail = request.match_info["tail"].strip("/")
    opts = parse_options(request.query) if method == "GET" else QueryOptions()
    version = {"X-3CX-Version": store.version}
    if tail == "Defs" or tail.startswith("Defs/"):
        if method != "GET":
            raise XapiError(405, f"{method} /Defs is not allowed")
        if tail in ("Defs", "Defs/Pbx.GetSystemParameters()"):
            entity = {"Id": 0} if tail == "Defs" else _system(request, "parameters")
            resp = _entity(request, "Defs", entity, opts)
            resp.headers.update(version)
            return resp
        raise XapiError(404, f"/{tail} is not served by the emulator")
    if tail in ("SystemStatus", "SystemStatus/Pbx.SystemHealthStatus()", "LicenseStatus"):
        if method != "GET":
            raise XapiError(405, f"{method} /{tail} is not allowed")
        what = {"SystemStatus": "status", "LicenseStatus": "license"}.get(tail, "health")
        return _entity(request, tail.split("/")[0], _system(request, what), opts)
    if tail == "OfficeHours":
        if method == "GET":
            return _entity(request, "OfficeHours", store.render_office_hours(), opts)
        if method == "PATCH":
            store.update_office_hours(await _json_body(request))
            return web.Response(status=204)
        raise XapiError(405, f"{method} /OfficeHours is not allowed")
    if tail == "ActiveCalls":
        if method != "GET":
            raise XapiError(405, f"{method} /ActiveCalls is not allowed")
        return _collection(request, "ActiveCalls", _active_calls(request), opts)
    m = _PATH.match(tail)
    if not m or m.group("set") not in _SETS:
        raise XapiError(404, f"/{tail} is not served by the emulator")
    name, key, nav = m.group("set"), m.group("key"), m.group("nav")
    es = _SETS[name]
    if key is None:
        if nav is not None:
            raise XapiError(404, f"/{tail} is not served by the emulator")
        if method == "GET":
            items = [es.render(store, eid) for eid in list(es.table(store))]
            return _collection(request, name, items, opts)
        if method == "POST" and es.create is not None:
            eid = es.create(store, await _json_body(request))
            entity = es.render(store, eid)
            resp = _entity(request, name, entity, QueryOptions(expand=_NAVIGATION.get(name, ())), status=201)
            resp.headers["Location"] = f"{_base(request)}/{name}({eid})"
            return resp
        raise XapiError(405, f"{method} /{name} is not allowed")
    eid = _find(store, name, es, key)
    if nav is not None:
        if method != "GET":
            raise XapiError(405, f"{method} /{tail} is not allowed")
        entity = es.render(store, eid)
        nav_name = nav.split("(")[0]
        related = entity.get(nav_name)
        if (nav_name in _NAVIGATION.get(name, ()) or (name, nav_name) == ("Users", "Groups")) and isinstance(related, list):
            return _collection(request, f"{name}({eid})/{nav_name}", related, opts)
        raise XapiError(404, f"/{tail} is not served by the emulator")
    if method == "GET":
        return _entity(request, name, es.render(store, eid), opts)
    if method == "PATCH" and es.update is not None:
        es.update(store, eid, await _json_body(request))
        return web.Response(status=204)
    if method == "DELETE" and es.delete is not None:
        es.delete(store, eid)
        return web.Response(status=204)
    raise XapiError(405, f"{method} /{tail} is not allowed")


# --- control endpoints ------------------------------------------------------------------------

async def _control(request: web.Request, action: Callable[[XapiStore, Entity], Entity]) -> web.Response:
    try:
        return web.json_response(action(request.app[STORE], await _json_body(request)))
    except XapiError as exc:
        return web.json_response({"error": exc.message}, status=exc.status)
    finally:
        request.app[CTL].pbx.queues.offer_soon()  # an agent logged in, came back, ...


async def set_user(request: web.Request) -> web.Response:
    """``PUT /_emulator/xapi/users/{number}`` ``{"presence", "registered", "queue_status", "hidden", "enabled"}``."""
    number = request.match_info["number"]
    return await _control(request, lambda s, body: s.set_presence(number, body))


async def set_department(request: web.Request) -> web.Response:
    """``PUT /_emulator/xapi/departments/{name}/forced`` ``{"mode": "ForceClosed", "until": ISO or null}``."""
    name = request.match_info["name"]
    return await _control(request, lambda s, body: s.force(name, body))


async def directory(request: web.Request) -> web.Response:
    """``GET /_emulator/xapi``: users, departments and queues as the API renders them."""
    s = request.app[STORE]
    return web.json_response({
        "users": [s.render_user(i) for i in s.users],
        "departments": [s.render_group(i) for i in s.groups],
        "queues": [s.render_queue(i) for i in s.queues],
        "ring_groups": [s.render_ring_group(i) for i in s.ring_groups],
        "office_hours": s.render_office_hours(),
    })


def add_routes(app: web.Application, store: XapiStore) -> None:
    app[STORE] = store
    app.router.add_route("*", "/xapi/v1/{tail:.*}", xapi_handler)
    app.router.add_get("/_emulator/xapi", directory)
    app.router.add_put("/_emulator/xapi/users/{number}", set_user)
    app.router.add_put("/_emulator/xapi/departments/{name}/forced", set_department)
