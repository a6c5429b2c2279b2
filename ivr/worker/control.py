"""The owner's control API: how other processes get things done at the PBX without a token.

3CX allows one active token per client id, so a one-off tool (``ivr dial``, later campaigns)
must not fetch its own while a worker owns the client id (docs/ha.md). Instead it asks the
owner over this small HTTP API:

- ``GET /v1/status``: the worker's state (ready, draining, active calls).
- ``POST /v1/calls`` ``{"number", "flow", "route_point"?, "timeout"?}``: place an outbound call
  from the route point and run ``flow`` once it answers; answers the call record when the
  call has ended.
- ``POST /v1/campaigns`` (a :class:`~ivr.campaign.manager.CampaignSpec`): start a campaign in
  the worker; ``GET /v1/campaigns[/{id}]``: status; ``POST /v1/campaigns/{id}/pause|resume|stop``.

Every request carries ``Authorization: Bearer <token>``. The server binds to 127.0.0.1 unless
``control.host`` says otherwise (another address needs a configured token), over HTTPS with
``control.tls``. Local tools find it through a file next to the lease file (mode 0600: URL and
token), written when the worker owns the lease and removed when it stops; with a Redis cluster
the owner also advertises its URL (not its token) with the lease, for tools on other machines
(ivr/worker/reach.py finds it).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ivr.campaign.contacts import ContactListError
from ivr.campaign.manager import CampaignManager, CampaignSpec
from ivr.campaign.results import CampaignFileError
from ivr.campaign.window import WindowError
from ivr.cluster.lease import owner_label
from ivr.config import ConfigError, ControlSettings, WorkerConfig
from ivr.flow import FlowLoadError
from ivr.pbx.errors import PbxError

if TYPE_CHECKING:
    from ivr.worker.runner import Worker

log = logging.getLogger("ivr.worker.control")


@dataclass(frozen=True)
class ControlEndpoint:
    """Where a running owner's control API listens, the token it wants, and how a tool checks
    its certificate (``verify``: True, False, or a CA bundle path; for https URLs)."""

    url: str
    token: str
    verify: bool | str = True
    owner: str = ""  # host and pid of the process serving it, as the lease names its holder

    def __repr__(self) -> str:  # the token never reaches a log line
        return f"ControlEndpoint(url={self.url!r})"

    def session(self, timeout: aiohttp.ClientTimeout | None = None) -> aiohttp.ClientSession:
        """A client session that sends the token and checks the owner's certificate as configured."""
        check: ssl.SSLContext | bool = True
        if isinstance(self.verify, str):
            try:
                check = ssl.create_default_context(cafile=self.verify)
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "strerror", None) or " ".join(str(exc).split())
                raise ConfigError(f"control.verify_tls: cannot load the CA bundle {self.verify}: {reason}") from None
        elif not self.verify:
            check = False  # the user turned verification off (control.verify_tls: false)
        return aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"},
                                     connector=aiohttp.TCPConnector(ssl=check),
                                     timeout=timeout or aiohttp.ClientTimeout(total=None, sock_connect=10))


def resolve_token(settings: ControlSettings) -> str | None:
    """The configured token (environment variable or file), or None to make one up."""
    if settings.token_env:
        value = os.environ.get(settings.token_env, "").strip()
        if not value:
            raise ConfigError(f"control.token_env: environment variable {settings.token_env} is not set")
        return value
    if settings.token_file:
        try:
            value = Path(settings.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"control.token_file: cannot read {settings.token_file}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"control.token_file: {settings.token_file} is empty")
        return value
    return None


def endpoint_file(lease_path: Path) -> Path:
    """The file beside the lease file where the owner publishes its control endpoint."""
    return lease_path.with_name(lease_path.name.removesuffix(".lock") + ".control.json")


def publish(path: Path, endpoint: ControlEndpoint) -> None:
    """Write the endpoint (URL and token) readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"url": endpoint.url, "token": endpoint.token, "owner": endpoint.owner}, out)
    os.replace(tmp, path)


def read_published(path: Path) -> ControlEndpoint | None:
    """The endpoint a running owner published, or None."""
    try:
        data = json.loads(path.read_text())
        return ControlEndpoint(url=str(data["url"]), token=str(data["token"]), owner=str(data.get("owner") or ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class DialRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: str = Field(min_length=1, max_length=64)
    flow: str = Field(min_length=1)
    route_point: str | None = None
    timeout: float = Field(default=60.0, gt=0, le=600)


def control_app(worker: Worker, token: str, campaigns: CampaignManager | None = None) -> web.Application:
    """The aiohttp application; every route wants the bearer ``token``."""
    manager = campaigns if campaigns is not None else CampaignManager(worker)

    @web.middleware
    async def authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return web.json_response({"error": "unauthorized"}, status=401)
        return await handler(request)

    async def status(_request: web.Request) -> web.Response:
        return web.json_response({"ready": worker.ready.is_set(), "draining": worker.draining,
                                  "active_calls": len(worker.calls)})

    async def place_call(request: web.Request) -> web.Response:
        try:
            body = DialRequest.model_validate(json.loads(await request.read() or b"null"))
        except (ValueError, ValidationError) as exc:
            message = " ".join(str(exc).split())[:300]
            return web.json_response({"error": f"POST /v1/calls: {message}"}, status=400)
        if not worker.ready.is_set() or worker.draining:
            return web.json_response({"error": "the worker is not taking calls now"}, status=503)
        try:
            record = await worker.dial(body.number, body.flow, route_point=body.route_point, timeout=body.timeout)
        except (FlowLoadError, ConfigError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except PbxError as exc:
            return web.json_response({"error": str(exc)}, status=502)
        return web.Response(text=record.to_json(), content_type="application/json")

    async def start_campaign(request: web.Request) -> web.Response:
        try:
            spec = CampaignSpec.model_validate(json.loads(await request.read() or b"null"))
        except (ValueError, ValidationError) as exc:
            return web.json_response({"error": f"POST /v1/campaigns: {' '.join(str(exc).split())[:300]}"}, status=400)
        if not worker.ready.is_set() or worker.draining:
            return web.json_response({"error": "the worker is not taking calls now"}, status=503)
        try:
            campaign_id = await manager.start(spec)
        except (ContactListError, WindowError, CampaignFileError, FlowLoadError, ValueError) as exc:
            return web.json_response({"error": " ".join(str(exc).split())[:500]}, status=400)
        return web.json_response(manager.status(campaign_id), status=201)

    def campaign_id(request: web.Request) -> str:
        cid = request.match_info["id"]
        if cid not in manager.runners:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no campaign {cid!r}"}), content_type="application/json")
        return cid

    async def campaign_status(request: web.Request) -> web.Response:
        return web.json_response(manager.status(campaign_id(request)))

    async def list_campaigns(_request: web.Request) -> web.Response:
        return web.json_response([manager.status(cid) for cid in manager.runners])

    async def control_campaign(request: web.Request) -> web.Response:
        cid = campaign_id(request)
        action = request.match_info["action"]
        runner = manager.runners[cid]
        {"pause": runner.pause, "resume": runner.resume, "stop": runner.stop}[action]()
        return web.json_response(manager.status(cid))

    app = web.Application(middlewares=[authenticate], client_max_size=64 * 1024)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/calls", place_call)
    app.router.add_post("/v1/campaigns", start_campaign)
    app.router.add_get("/v1/campaigns", list_campaigns)
    app.router.add_get("/v1/campaigns/{id}", campaign_status)
    app.router.add_post(r"/v1/campaigns/{id}/{action:pause|resume|stop}", control_campaign)
    return app


def server_tls(config: WorkerConfig) -> ssl.SSLContext | None:
    """The HTTPS context of ``control.tls``, or None for plain HTTP; a one-line ConfigError for
    a certificate or key that cannot be loaded."""
    tls = config.control.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert, key = config.path(tls.cert), config.path(tls.key)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or " ".join(str(exc).split())
        raise ConfigError(f"control.tls: cannot load the certificate {cert} with the key {key}: {reason}") from None
    return context


def advertised_url(settings: ControlSettings, scheme: str, host: str, port: int) -> str:
    """The URL the owner gives tools on other machines: ``control.url``, else the bound
    address (this machine's name when bound to all addresses)."""
    if settings.url:
        return settings.url.rstrip("/")
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


class ControlServer:
    """Serves the control API while the worker owns the client id, and publishes where."""

    def __init__(self, worker: Worker, config: WorkerConfig, publish_at: Path | None,
                 campaigns: CampaignManager | None = None) -> None:
        self.settings = config.control
        self.campaigns = campaigns if campaigns is not None else CampaignManager(worker)
        worker.metrics.campaigns = self.campaigns
        self.token = resolve_token(self.settings) or secrets.token_urlsafe(32)
        self.worker = worker
        self.publish_at = publish_at
        self.tls = server_tls(config)  # before the lease: a bad certificate is a start-up error
        self.endpoint: ControlEndpoint | None = None
        self.url: str | None = None  # what tools on other machines are told (advertised with a Redis lease)
        self._runner: web.AppRunner | None = None

    async def start(self) -> ControlEndpoint:
        runner = web.AppRunner(control_app(self.worker, self.token, self.campaigns), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port, ssl_context=self.tls)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"control: cannot listen on {self.settings.host}:{self.settings.port}: "
                              f"{exc.strerror or exc}") from None
        self._runner = runner
        host, port = runner.addresses[0][:2]
        scheme = "https" if self.tls is not None else "http"
        shown = f"[{host}]" if ":" in str(host) else host
        self.endpoint = ControlEndpoint(url=f"{scheme}://{shown}:{port}", token=self.token, owner=owner_label())
        self.url = advertised_url(self.settings, scheme, str(host), int(port))
        if self.publish_at is not None:
            publish(self.publish_at, self.endpoint)
        log.info("control API on %s", self.url)
        return self.endpoint

    async def stop(self) -> None:
        await self.campaigns.stop_all()
        if self.publish_at is not None and self.endpoint is not None:
            current = read_published(self.publish_at)
            if current is not None and current.url == self.endpoint.url:
                self.publish_at.unlink(missing_ok=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
