"""The aiohttp application and the ``Emulator`` object tests and the CLI start.

One port serves the token endpoint, /callcontrol (REST, streams, WebSocket) and /_emulator/.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
from aiohttp import web

from ivr.pbx.models import AuthErrorBody, TokenResponse

from . import control
from .auth import bearer
from .config import EmulatorConfig
from .controller import CTL, TOKEN_KEY, Controller
from .rest import callcontrol_handler
from .state import ApiError
from .ws import ws_handler
from .xapi import (
    PbxDescription,
    XapiStore,
    add_xapi_routes,
    default_description,
    with_extensions,
)

log = logging.getLogger("ivr.emulator")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _unauthorized() -> web.Response:
    return web.json_response(
        AuthErrorBody().model_dump(mode="json"), status=401, headers={"WWW-Authenticate": "Bearer"}
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``ApiError`` -> a JSON error answer with its status."""
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response(exc.body(), status=exc.status)


@web.middleware
async def callcontrol_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Injected failures, then the Bearer check, for every /callcontrol path."""
    path = request.path
    if path != "/callcontrol" and not path.startswith("/callcontrol/"):
        return await handler(request)
    ctl = request.app[CTL]
    if path != "/callcontrol/ws":
        status = ctl.fail_next.take()
        if status is not None:
            return web.json_response(
                {"error": "injected_fault", "error_description": f"fail_next fault: {request.method} {path}"},
                status=status,
            )
    token = ctl.tokens.validate(bearer(request.headers.get("Authorization")))
    if token is None:
        return _unauthorized()
    request[TOKEN_KEY] = token
    return await handler(request)


async def token_handler(request: web.Request) -> web.Response:
    """``POST /connect/token``: client credentials, form-urlencoded or multipart."""
    ctl = request.app[CTL]
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return web.json_response(
            {"error": "invalid_request",
             "error_description": f"/connect/token: body must be a form, got Content-Type {request.content_type!r}"},
            status=400,
        )
    form = await request.post()
    grant = form.get("grant_type")
    if grant is not None and grant != "client_credentials":
        return web.json_response(
            {"error": "unsupported_grant_type",
             "error_description": f"/connect/token: grant_type {str(grant)!r} is not client_credentials"},
            status=400,
        )
    client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
    cfg = ctl.config
    ok = hmac.compare_digest(client_id.encode(), cfg.client_id.encode()) & hmac.compare_digest(
        secret.encode(), cfg.client_secret.encode()
    )
    if not ok:
        log.info("token refused for client_id %r", client_id)  # never the secret
        return _unauthorized()
    tok = ctl.tokens.issue(client_id)
    # expires_in says 60 like real servers, although the JWT lives token_lifetime seconds.
    body = TokenResponse(token_type="Bearer", expires_in=60, access_token=tok.value, refresh_token=None)
    return web.json_response(body.model_dump(mode="json"))


def build_app(ctl: Controller, xapi: XapiStore | None = None) -> web.Application:
    """The aiohttp application serving every route of the emulator (``/xapi/v1`` from
    ``xapi``, else from the configured extensions alone)."""
    app = web.Application(middlewares=[errors_middleware, callcontrol_middleware], client_max_size=64 * 2**20)
    app[CTL] = ctl
    app.router.add_post("/connect/token", token_handler)
    app.router.add_get("/callcontrol/ws", ws_handler)
    app.router.add_route("*", "/callcontrol", callcontrol_handler)
    app.router.add_route("*", "/callcontrol/{tail:.*}", callcontrol_handler)
    control.add_routes(app)
    if xapi is None:
        xapi = XapiStore(default_description(ctl.config), reserved=lambda: [ctl.config.route_point])
    ctl.pbx.queues.plan_of = xapi.queue_plan  # a queue's agents and limits: the one model both APIs serve
    add_xapi_routes(app, xapi)
    return app


class Emulator:
    """A local 3CX V20 speaking the Call Control wire, plus a caller API.

    >>> async with Emulator(EmulatorConfig()).running() as emu:   # doctest: +SKIP
    ...     callid = await emu.place_call("+4930123456")
    """

    def __init__(self, config: EmulatorConfig | None = None, *, pbx: PbxDescription | None = None,
                 **overrides: Any) -> None:
        base = config or EmulatorConfig()
        if pbx is not None and "extensions" not in base.model_fields_set and "extensions" not in overrides:
            # one PBX model: the description's users are the Call Control extensions
            overrides = {"extensions": pbx.extensions(), **overrides}
        if pbx is not None:  # ... and its queues are Call Control queue DNs (Wqueue)
            listed = list(overrides.get("queues", base.queues))
            more = [q.number for q in pbx.queues if q.number not in listed]
            if more:
                overrides = {**overrides, "queues": listed + more}
        # overrides are validated like the config itself (a typo raises, not ignored)
        self.config = EmulatorConfig.model_validate({**base.model_dump(), **overrides}) if overrides else base
        self.controller = Controller(self.config)
        # ... and every extension is a user (a bare one when the description does not name it)
        self.pbx_description = with_extensions(pbx, self.config) if pbx is not None else default_description(self.config)
        self.xapi = XapiStore(self.pbx_description, reserved=lambda: [self.config.route_point])
        self.app = build_app(self.controller, self.xapi)
        self._runner: web.AppRunner | None = None
        self._repeat: asyncio.Task[None] | None = None
        self.host = ""
        self.port = 0
        self._tls = False

    @property
    def url(self) -> str:
        """``http://host:port`` (``https://`` with TLS) once started."""
        if self._runner is None:
            raise RuntimeError("Emulator.url: the emulator is not running; await start() first")
        return f"{'https' if self._tls else 'http'}://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on host:port (0 picks a free port; see ``.port``); with ``ssl_context``,
        HTTPS and WSS as a real 3CX serves them."""
        if self._runner is not None:
            raise RuntimeError("Emulator.start: already running")
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        self._tls = ssl_context is not None
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        self._runner = runner
        sockname = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        self.host, self.port = host, sockname[1]
        if self.config.repeat_upserts:
            self._repeat = asyncio.get_running_loop().create_task(self._repeat_upserts())

    async def stop(self) -> None:
        """End all calls, close sockets and stop listening."""
        if self._runner is None:
            return
        if self._repeat:
            self._repeat.cancel()
        pbx = self.controller.pbx
        for call in list(pbx.calls.values()):
            pbx.end_call(call, by="shutdown")
        for ws in list(self.controller.sockets):
            await ws.close(code=1001, message=b"emulator stopping")
        runner, self._runner = self._runner, None
        await runner.cleanup()

    @contextlib.asynccontextmanager
    async def running(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Emulator]:
        """``async with Emulator(cfg).running() as emu:`` start, yield, stop."""
        await self.start(host, port)
        try:
            yield self
        finally:
            await self.stop()

    async def _repeat_upserts(self) -> None:
        pbx = self.controller.pbx
        while True:
            # No timer while no participant exists: an idle emulator sleeps (on a virtual
            # clock, a test waiting for a call does not spin through repeat rounds).
            await pbx.has_legs.wait()
            await asyncio.sleep(self.config.repeat_interval)
            pbx.repeat_upserts()

    # --- caller API (mirrors /_emulator/) -----------------------------------------------------

    async def place_call(self, from_: str, to: str | None = None, name: str = "", did: str | None = None) -> int:
        """An external call to ``to`` (default: the route point; or an extension, which rings,
        a queue or an IVR); returns its callid."""
        return self.controller.place_call(from_, to, name, did).callid

    async def send_dtmf(self, callid: int, digits: str, interval_ms: float = 0) -> None:
        """One DTMFstring event per digit; returns when all are sent."""
        await self.controller.send_dtmf(callid, digits, interval_ms)

    async def speak(self, callid: int, audio: bytes | np.ndarray, wait: bool = False) -> tuple[float, float]:
        """The caller says ``audio`` (WAV bytes or 8 kHz mono samples); see ``Controller.speak``."""
        return await self.controller.speak(callid, audio, wait)

    async def hangup(self, callid: int) -> None:
        """The caller hangs up."""
        self.controller.hangup(callid)

    async def pick_up(self, dn: str) -> int:
        """The person at extension ``dn`` answers the call ringing there (an agent takes a
        queue's call); returns its callid. ApiError 409 when nothing rings there."""
        return self.controller.pick_up(dn).callid

    def queues(self) -> dict[str, list[dict[str, Any]]]:
        """The same JSON as ``GET /_emulator/queues``: each queue's waiting calls, oldest first."""
        return self.controller.queues()

    def call_info(self, callid: int) -> dict[str, Any]:
        """The same JSON as ``GET /_emulator/calls/{callid}``."""
        return self.controller.call_info(callid)

    def heard_pcm(self, callid: int) -> np.ndarray:
        """What the IVR played to the caller since call start, timing preserved (int16, 8 kHz)."""
        return self.controller.heard_pcm(callid)

    def set_behaviour(self, dn: str, behaviour: str) -> None:
        """Make an extension answer, be busy, not answer or not be registered."""
        self.controller.set_behaviour(dn, behaviour)

    def set_transfer_shape(self, **settings: Any) -> None:
        """Change ``transfer_answer`` / ``transfer_failure`` / ``transfer_error_status`` while running."""
        self.controller.update_settings(settings)

    async def inject_fault(self, fault: dict[str, Any]) -> dict[str, Any]:
        """Same bodies as ``POST /_emulator/faults``."""
        return await self.controller.inject_fault(fault)
