"""The worker's configuration file (``ivr.yaml``), as pydantic models.

Example::

    pbx:
      url: https://pbx.example.com:5001
      client_id: "900"
      client_secret_env: IVR_CLIENT_SECRET     # or client_secret_file: /etc/ivr/secret
      verify_tls: true                         # false, or a CA bundle path
    routes:
      - route_point: "800"
        flow: flows/main_menu.yaml
      - route_point: "800"
        did: "+4930555000"                     # optional: only calls to this DID
        flow: flows/vip.yaml
    overflow: "100"                            # where calls go while draining or when no route fits
    drain_timeout: 300

Relative paths are resolved against the config file's folder. The secret itself never
appears in the file: it comes from an environment variable or a file, and it is a
``SecretStr`` so it cannot leak through a repr or a log line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from ivr.pbx.config import PbxConfig, PbxOptions


class ConfigError(Exception):
    """A configuration problem; ``str()`` is one line that says what and where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PbxSettings(PbxOptions):
    """ivr.yaml's ``pbx:`` section: the client's options (:class:`~ivr.pbx.config.PbxOptions`,
    defined and bounded once there) and where the secret lives; :meth:`client_config` makes
    the client's :class:`~ivr.pbx.PbxConfig` from them."""

    client_secret: SecretStr | None = Field(
        default=None, description="Discouraged: prefer client_secret_env or client_secret_file"
    )
    client_secret_env: str | None = Field(default=None, description="Environment variable holding the secret")
    client_secret_file: str | None = Field(default=None, description="File holding the secret")

    def client_config(self, secret: SecretStr | str) -> PbxConfig:
        """The PBX client's settings: these options as they are, with ``secret``."""
        options = {name: getattr(self, name) for name in PbxOptions.model_fields}
        return PbxConfig(client_secret=secret, **options)

    def resolve_secret(self) -> SecretStr:
        """The client secret from wherever the config says it lives."""
        sources = [s for s in (self.client_secret, self.client_secret_env, self.client_secret_file) if s]
        if len(sources) != 1:
            raise ConfigError(
                "pbx: give exactly one of client_secret_env, client_secret_file or client_secret"
            )
        if self.client_secret is not None:
            return self.client_secret
        if self.client_secret_env:
            value = os.environ.get(self.client_secret_env)
            if not value:
                raise ConfigError(
                    f"pbx.client_secret_env: environment variable {self.client_secret_env} is not set"
                )
            return SecretStr(value)
        path = Path(self.client_secret_file or "")
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"pbx.client_secret_file: cannot read {path}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"pbx.client_secret_file: {path} is empty")
        return SecretStr(value)


class Route(_Strict):
    """Which flow answers calls arriving on a route point, optionally narrowed by DID or caller."""

    route_point: str
    flow: str
    did: str | None = Field(default=None, description="Only calls to this DID")
    caller: str | None = Field(default=None, description="Only callers whose number matches this regex")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters passed to the flow")

    @field_validator("route_point", "did", mode="before")
    @classmethod
    def _as_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v

    @field_validator("caller")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    def matches(self, route_point: str, did: str, caller: str) -> bool:
        if self.route_point != route_point:
            return False
        if self.did is not None and self.did != did:
            return False
        if self.caller is not None and not re.search(self.caller, caller or ""):
            return False
        return True


class SpeechSettings(_Strict):
    stt: str = "pocketsphinx"
    tts: str = "hibari"
    llm: str | None = None
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-adapter options, keyed by adapter name"
    )


class MetricsSettings(_Strict):
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, description="Serve /metrics, /healthz, /readyz here")


class TracingSettings(_Strict):
    """Optional OpenTelemetry spans per call and per flow step (ivr/worker/tracing.py)."""

    enabled: bool = False
    service_name: str = Field(default="ivr", min_length=1, description="service.name when OTEL_SERVICE_NAME is unset")
    caller_number: Literal["omit", "hash", "plain"] = Field(
        default="omit",
        description="Caller number on spans: omit (default), hash (HMAC-SHA256), or plain",
    )
    hash_key_env: str | None = Field(default=None, description="Environment variable with the key for caller_number: hash")


class ClusterSettings(_Strict):
    """One owner per API client id (docs/ha.md): where the lease lives.

    Without ``redis_url`` the lease is a lock file on this machine: a second worker with the
    same PBX and client id waits as a standby. With it, standbys on any machine wait.
    """

    redis_url: str | None = Field(default=None, description="redis://host:port/db: keep the lease in Redis")
    redis_url_env: str | None = Field(default=None,
                                      description="Environment variable holding the Redis URL (when it has a password)")
    lease_ttl: float = Field(default=3.0, ge=0.5, le=60, description="Seconds before a dead owner's Redis lease expires")
    lease_dir: str | None = Field(default=None,
                                  description="Folder of the local lease file ($XDG_RUNTIME_DIR or the temp folder)")
    key_prefix: str = Field(default="ivr3cx", min_length=1, description="Prefix of the Redis keys")
    handover: bool = Field(default=True, description="On SIGTERM with a standby waiting (Redis), hand the calls "
                           "in progress over instead of draining them")
    local_checkpoints: bool = Field(default=True, description="Without Redis, keep each call's position in a "
                                    "folder beside the lease file, so a standby on this machine resumes the calls "
                                    "(false: in memory only)")

    @model_validator(mode="after")
    def _one_url(self) -> ClusterSettings:
        if self.redis_url and self.redis_url_env:
            raise ValueError("give redis_url or redis_url_env, not both")
        for url in (self.redis_url,):
            if url is not None and not re.match(r"^(redis|rediss|unix)://", url):
                raise ValueError(f"redis_url must start with redis://, rediss:// or unix://, got {url.split('@')[-1]!r}")
        return self

    def resolve_redis_url(self) -> str | None:
        """The Redis URL from the file or the environment; None for a local lease."""
        if self.redis_url_env:
            value = os.environ.get(self.redis_url_env)
            if not value:
                raise ConfigError(f"cluster.redis_url_env: environment variable {self.redis_url_env} is not set")
            return value
        return self.redis_url


class XapiSettings(_Strict):
    """The PBX's Configuration API (docs/xapi.md): read in the background on the Call Control
    token (the API client needs "XAPI access" too, and an Enterprise licence)."""

    enabled: bool = False
    refresh_seconds: float = Field(default=30.0, ge=1, description="how often the configuration is read again")
    retry_seconds: float = Field(default=5.0, gt=0, description="how soon after a failed read to try again")
    calls_seconds: float = Field(default=5.0, ge=0,
                                 description="how often the active calls (queues' waiting counts) are read; 0: never")


class ControlTls(_Strict):
    """The owner serves its control API over HTTPS with this certificate and key (PEM files)."""

    cert: str = Field(description="Certificate chain (PEM), relative to the config file")
    key: str = Field(description="Private key (PEM), relative to the config file")


class ControlSettings(_Strict):
    """The owner's control API (ivr/worker/control.py): ``ivr dial`` and ``ivr campaign`` go through it.

    With a Redis cluster the owner publishes its URL (never its token) under the lease's key
    space, so tools on other machines find it; they send the token this file configures.
    """

    enabled: bool = True
    host: str = Field(default="127.0.0.1", description="Bind address; keep it on loopback unless you need it remote")
    port: int = Field(default=0, ge=0, le=65535, description="0: any free port, published for local tools")
    token_env: str | None = Field(default=None, description="Environment variable with the bearer token (default: a random one)")
    token_file: str | None = Field(default=None, description="File with the bearer token")
    tls: ControlTls | None = Field(default=None, description="Serve HTTPS with this certificate and key")
    url: str | None = Field(default=None, description="The URL other machines reach the owner at (default: from "
                            "host and port; this machine's name when bound to all addresses)")
    verify_tls: bool | str = Field(default=True, description="Tools check the owner's certificate: true, false, "
                                   "or a CA bundle path")

    @model_validator(mode="after")
    def _one_token(self) -> ControlSettings:
        if self.token_env and self.token_file:
            raise ValueError("give token_env or token_file, not both")
        if self.enabled and not is_loopback(self.host) and not (self.token_env or self.token_file):
            raise ValueError(f"host {self.host} is not a loopback address: give token_env or token_file, the token "
                             "remote tools must send")
        if self.url is not None and not re.match(r"^https?://[^/\s]+$", self.url.rstrip("/")):
            raise ValueError(f"url must be http(s)://host:port, got {self.url!r}")
        return self


def is_loopback(host: str) -> bool:
    """True for an address (or ``localhost``) that only this machine can reach."""
    import ipaddress

    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any address


class WorkerConfig(_Strict):
    pbx: PbxSettings
    routes: list[Route] = Field(min_length=1)
    overflow: str | None = Field(default=None, description="Destination for calls the worker cannot take")
    drain_timeout: float = Field(default=300.0, gt=0)
    max_calls: int = Field(default=1000, ge=1)
    records: str | None = Field(default="var/calls.jsonl", description="Call records (JSON lines)")
    recordings_dir: str = "var/recordings"
    audio_dirs: list[str] = Field(default_factory=lambda: ["audio"])
    speech: SpeechSettings = Field(default_factory=SpeechSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    xapi: XapiSettings = Field(default_factory=XapiSettings)
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _routes_unique(self) -> WorkerConfig:
        seen = set()
        for route in self.routes:
            key = (route.route_point, route.did, route.caller)
            if key in seen:
                raise ValueError(f"two routes for route point {route.route_point} with the same filters")
            seen.add(key)
        return self

    def path(self, value: str) -> Path:
        """A path from the config, resolved against the config file's folder."""
        p = Path(value)
        return p if p.is_absolute() else (self.base_dir / p)

    def route_for(self, route_point: str, did: str, caller: str) -> Route | None:
        """The most specific matching route: DID and caller filters win over a bare route point."""
        candidates = [r for r in self.routes if r.matches(route_point, did, caller)]
        candidates.sort(key=lambda r: (r.did is None, r.caller is None))
        return candidates[0] if candidates else None

    @property
    def route_points(self) -> list[str]:
        return sorted({r.route_point for r in self.routes})
