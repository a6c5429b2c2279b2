"""The ``ivr dev`` server: emulator + worker + the softphone page, in one process.

Modelled on :mod:`ivr.simulate`: the worker talks to the emulator over loopback with the
real wire (HTTP, WebSocket, audio streams); the page plays the caller through the
emulator's caller API. Every page has one WebSocket (``/ws``), handled by
:class:`~ivr.dev.session.PageSession`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ivr.call import Call
from ivr.call.record import CallRecord
from ivr.emulator import Emulator, EmulatorConfig
from ivr.emulator.xapi import PbxDescription
from ivr.simulate import pin_call_clock
from ivr.validate import validate_paths
from ivr.worker.library import FlowLibrary
from ivr.worker.runner import Worker

from .live import follow_steps, json_safe
from .target import DevTarget, check_flows

log = logging.getLogger("ivr.dev")

STATIC = Path(__file__).resolve().parent / "static"
CLIENT_ID = "900"
EXTENSIONS = {dn: "answer" for dn in ("100", "101", "102", "103", "104", "105")}
DEFAULT_CALLER = "+4930123456"


class DevServer:
    """Serves the softphone page for ``target`` at ``url`` once started.

    ``emulator`` holds EmulatorConfig overrides (tests shorten ``ring_seconds``);
    ``reload_interval`` is how often the worker polls flow files for edits.
    """

    def __init__(
        self,
        target: DevTarget,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        speech: Any = None,
        reload_interval: float = 1.0,
        emulator: dict[str, Any] | None = None,
        allowed_hosts: Iterable[str] = (),
        at: datetime | None = None,
        pbx: PbxDescription | None = None,
    ) -> None:
        self.target = target
        # A PBX description (docs/pbx-config.md): its users are the extensions, and the worker
        # reads its configuration (flows' hours from the PBX, directory, presence) every 2 s, so
        # a change through the emulator's control endpoints shows on the next call.
        self.pbx = pbx
        self.at = at  # pin each call's clock (office hours) to this moment when it starts
        self.host, self.port = host, port
        # Names the page may be reached by (the Host header); anything else is refused, so a
        # hostile page cannot reach the server through a DNS name rebound to 127.0.0.1.
        self.allowed_hosts = {"localhost", "127.0.0.1", "::1", *(h.lower().strip("[]") for h in allowed_hosts)}
        if host not in ("", "0.0.0.0", "::"):
            self.allowed_hosts.add(host.lower().strip("[]"))
        self.speech = speech
        self.reload_interval = reload_interval
        self._secret = secrets.token_urlsafe(16)  # never logged; lives only in this process
        overrides = {"ring_seconds": 0.5, **(emulator or {})}
        self.emu = Emulator(
            EmulatorConfig(client_id=CLIENT_ID, client_secret=self._secret, route_point=target.route_point,
                           extensions=dict(pbx.extensions() if pbx is not None else EXTENSIONS)),
            pbx=pbx, **overrides,
        )
        self.worker: Worker | None = None
        self.calls: dict[int, Call] = {}  # emulator callid -> the worker's Call, once its flow starts
        self.sessions: set[Any] = set()  # open PageSessions, for reload broadcasts
        self.reloads: list[dict[str, Any]] = []  # every reload message, newest last (also for tests)
        self._stop = asyncio.Event()
        self._worker_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``http://host:port/`` of the page once started."""
        if self._runner is None:
            raise RuntimeError("DevServer.url: not started; await start() first")
        return f"http://{self.host}:{self.port}/"

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the flows, then start the emulator, the worker and the web server.

        Raises FlowLoadError (every error as file:line:col) if a flow is invalid at start."""
        check_flows(self.target)
        await self.emu.start("127.0.0.1", 0)
        try:
            config = self.target.worker_config(self.emu.url, CLIENT_ID, self._secret)
            if self.pbx is not None:
                config.xapi = config.xapi.model_copy(update={"enabled": True, "refresh_seconds": 2.0})
            worker = Worker(config, speech=self.speech, on_call_started=self._call_started,
                            reload_interval=self.reload_interval)
            # Our own library (same files) so reload results reach the page.
            worker.library = FlowLibrary([config.path(r.flow) for r in config.routes], on_reload=self._reloaded)
            self.worker = worker
            self._worker_task = asyncio.create_task(worker.run(self._stop), name="ivr-dev-worker")
            await _until_ready(worker, self._worker_task)
            self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        except BaseException:
            await self.stop()
            raise
        log.info("ivr dev: %s on %s (emulator %s)", self.target.source, self.url, self.emu.url)

    async def stop(self) -> None:
        """Close pages, hang up calls, stop the worker (short drain) and the emulator."""
        for session in list(self.sessions):
            await session.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        pbx = self.emu.controller.pbx
        for call in list(pbx.calls.values()):
            if call.state != "ended":
                pbx.end_call(call, by="caller")
        self._stop.set()
        if self._worker_task is not None:
            try:
                await asyncio.wait_for(self._worker_task, 10)
            except (TimeoutError, Exception) as exc:  # the worker failing must not block shutdown
                log.warning("worker stopped with %s", type(exc).__name__)
            self._worker_task = None
        await self.emu.stop()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[DevServer]:
        """``async with DevServer(target, port=0).running() as dev:`` start, yield, stop."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    # --- what sessions use ------------------------------------------------------------------

    def record_for(self, callid: int) -> CallRecord | None:
        """The worker's finished call record for an emulator call, or None while it runs."""
        if self.worker is None:
            return None
        return next((r for r in reversed(self.worker.completed) if r.call_id == str(callid)), None)

    def hello(self) -> dict[str, Any]:
        """The first message a page gets: what is served, and the latest reload result."""
        return {
            "type": "hello",
            "source": str(self.target.source),
            "flows": [str(p) for p in self.target.flow_paths],
            "route_point": self.target.route_point,
            "extensions": EXTENSIONS,
            "caller": DEFAULT_CALLER,
            "reload": self.reloads[-1] if self.reloads else None,
            "pbx": self.pbx_view(),
        }

    def pbx_view(self) -> dict[str, Any] | None:
        """The PBX description's people and departments as the page's PBX panel shows them
        (None without ``--pbx-config``): presence, phone, forced mode, and the choices."""
        if self.pbx is None:
            return None
        from ivr.emulator.xapi.store import PROFILE_NAMES
        from ivr.pbx.xapi import GroupHoursMode

        store = self.emu.xapi
        users = [{"number": u.get("Number"), "name": u.get("DisplayName") or u.get("Number"),
                  "presence": u.get("CurrentProfileName"), "registered": bool(u.get("IsRegistered")),
                  "listed": bool(u.get("Enabled", True)) and not u.get("HideInPhonebook")}
                 for u in store.users.values()]
        departments = [{"name": g.get("Name"), "forced": g.get("CurrentGroupHours") or GroupHoursMode.DEFAULT}
                       for g in store.groups.values()]
        return {"users": users, "departments": departments, "profiles": list(PROFILE_NAMES),
                "modes": list(GroupHoursMode.ALL)}

    async def change_pbx(self, msg: dict[str, Any]) -> None:
        """A page's change to the PBX (a user's presence or phone, a department's forced mode),
        as the emulator's control endpoints make it; the worker reads it at once and every page
        gets the new view. XapiError (a bad value) goes back to the page as an error."""
        if self.pbx is None:
            raise ValueError("no PBX description: start ivr dev with --pbx-config FILE")
        store = self.emu.xapi
        if "user" in msg:
            change: dict[str, Any] = {k: msg[k] for k in ("presence", "registered") if k in msg}
            store.set_presence(str(msg["user"]), change)
        elif "department" in msg:
            store.force(str(msg["department"]), {"mode": msg.get("forced")})
        else:
            raise ValueError("pbx: give 'user' (with presence or registered) or 'department' (with forced)")
        if self.worker is not None and self.worker.xapi is not None:
            await self.worker.xapi.refresh()
        self.broadcast({"type": "pbx", **(self.pbx_view() or {})})

    def refusal(self, host: str, origin: str | None) -> str | None:
        """Why a request with this ``Host`` and ``Origin`` is refused, or None.

        The Host must be an allowed name (DNS rebinding); an Origin, which browsers send with
        every WebSocket handshake, must be this server's own page: a page from anywhere else
        could otherwise place calls and read the live view. Clients that are not browsers
        send no Origin."""
        name = _hostname(host)
        if name not in self.allowed_hosts:
            return f"host {host[:80]!r} is not allowed (start ivr dev with --allow-host NAME to serve it)"
        if origin is None:
            return None
        parts = urlsplit(origin)
        try:
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or (parts.hostname or "") not in self.allowed_hosts or port != self.port:
            return f"origin {origin[:80]!r} is not this page"
        return None

    def broadcast(self, message: dict[str, Any]) -> None:
        for session in list(self.sessions):
            session.send_json(message)

    # --- callbacks --------------------------------------------------------------------------

    def _call_started(self, call: Call) -> None:
        if self.at is not None:
            pin_call_clock(call, self.at)
        follow_steps(call)  # the live view's trail: every step as it starts
        try:
            self.calls[int(call.call_id)] = call
        except ValueError:
            log.warning("call id %r is not an emulator call id", call.call_id)

    def _reloaded(self, path: Path, version_or_errors: str, ok: bool) -> None:
        """The worker's library reloaded ``path`` (ok) or found it invalid: tell every page."""
        try:
            diagnostics = [json_safe(vars(d)) | {"text": d.format()} for d in validate_paths([path])]
        except Exception as exc:  # validation must never break the reload watcher
            diagnostics = [{"text": f"{path}: validation failed: {exc}", "severity": "error"}]
        if not ok and not any(d.get("severity") == "error" for d in diagnostics):
            # The loader refused the file but the validator found nothing: show the loader's text.
            diagnostics += [{"text": line, "severity": "error"} for line in version_or_errors.splitlines()]
        message = {"type": "reload", "ok": ok, "file": str(path),
                   "version": version_or_errors if ok else None, "diagnostics": diagnostics}
        self.reloads.append(message)
        del self.reloads[:-50]
        self.broadcast(message)

    # --- HTTP -------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        from .session import PageSession

        async def index(_request: web.Request) -> web.FileResponse:
            return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

        async def ws(request: web.Request) -> web.WebSocketResponse:
            sock = web.WebSocketResponse(heartbeat=20, max_msg_size=16 * 2**20)
            await sock.prepare(request)
            await PageSession(self, sock).run()
            return sock

        @web.middleware
        async def same_origin_only(request: web.Request, handler: Any) -> web.StreamResponse:
            problem = self.refusal(request.headers.get("Host", ""), request.headers.get("Origin"))
            if problem is not None:
                log.warning("ivr dev: refused %s %s: %s", request.method, request.path, problem)
                return web.Response(status=403, text=problem + "\n")
            return await handler(request)

        app = web.Application(middlewares=[same_origin_only])
        app.router.add_get("/", index)
        app.router.add_get("/ws", ws)
        app.router.add_static("/static/", STATIC)
        return app


def _hostname(host: str) -> str:
    """``example.com:8080`` / ``[::1]:8080`` -> the name, lower case, without the port."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _until_ready(worker: Worker, task: asyncio.Task[None]) -> None:
    """Wait for the worker to be connected; raise its start-up error if it stopped instead."""
    ready = asyncio.ensure_future(worker.ready.wait())
    done, _ = await asyncio.wait({ready, task}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()
        raise RuntimeError("the worker stopped before it was ready")
    if not done:
        ready.cancel()
        raise TimeoutError("the worker did not connect to the emulator within 15 s")
