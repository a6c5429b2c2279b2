"""``PbxConfig``: where the PBX is, the API client's credentials, and the client's timings."""

from __future__ import annotations

import functools
import ssl
from typing import Any, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class PbxOptions(BaseModel):
    """What an operator chooses for a connection: where the PBX is, which API client, and the
    client's media and load bounds. ``ivr.yaml``'s ``pbx:`` section is these fields plus where
    the secret lives (``ivr.config.PbxSettings``); :class:`PbxConfig` adds the secret and the
    library's own timings. One definition, one set of bounds, for both.
    """

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Base URL of the PBX (or the emulator), http:// or https://, e.g. "
                     "https://pbx.example.com:5001")
    client_id: str
    verify_tls: bool | str = Field(default=True, description="true, false, or a CA bundle path")
    transfer_margin: float = Field(
        default=15.0, gt=0, le=600,
        description="routeto/divert/transferto may answer only when the destination answered or failed: their "
        "time limit is the route's own timeout plus this margin (and never below request_timeout)",
    )
    # 80 ms in batches of 40 ms: each send leaves 40 ms of slack at the PBX, as 60 ms in frames of
    # 20 ms did, with half the sends (the worker's CPU: -20%); barge-in takes up to 20 ms longer.
    outbound_lead_ms: int = Field(80, ge=20, le=500,
                                  description="outbound audio kept ahead of real time (bounds barge-in)")
    outbound_batch_frames: int = Field(
        2, ge=1, le=10, description="20 ms frames sent per pacer wake-up (fewer wake-ups, less slack in the lead)"
    )
    outbound_tick_ms: int = Field(
        5, ge=0, le=20,
        description="the media timer's grid: pacers send and inbound streams are polled on a shared grid of this "
        "step (one timer for all streams; a frame leaves up to this much later, never earlier); 0: pacers use one "
        "timer per stream per frame",
    )
    inbound_block_ms: int = Field(
        40, ge=0, le=200,
        description="caller audio is read and analysed in blocks of about this much (0: every chunk as it comes); "
        "adds up to this much to DTMF/speech detection, saves CPU per call",
    )
    # Bounds against a misbehaving or hostile peer (docs/deploy.md, "Limits").
    event_max_bytes: int = Field(
        1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024,
        description="largest event-socket message accepted (bytes); a larger one drops the socket (it reconnects "
        "and resyncs)",
    )
    rest_max_connections: int = Field(
        100, ge=2, le=10000,
        description="REST connections open at once at most (audio streams have their own sockets)",
    )
    participant_fetches: int = Field(
        16, ge=1, le=1000,
        description="participant GETs (after Upsert events) in flight at once; more wait their turn",
    )

    @model_validator(mode="after")
    def _fetches_leave_room(self) -> Self:
        if self.participant_fetches >= self.rest_max_connections:
            raise ValueError(
                f"participant_fetches ({self.participant_fetches}) must be below rest_max_connections "
                f"({self.rest_max_connections}): a flood of Upserts must leave connections for call actions"
            )
        return self

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an http:// or https:// URL naming a host, got {v!r}")
        return v.strip().rstrip("/")

    @field_validator("client_id", mode="before")
    @classmethod
    def _client_id_as_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v  # client_id: 900 in YAML

    @field_validator("client_id")
    @classmethod
    def _check_client_id(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("client_id must not be empty")
        return v.strip()


class PbxConfig(PbxOptions):
    """Settings of one connection to a 3CX V20 Call Control API.

    ``client_secret`` is a :class:`~pydantic.SecretStr`: it never appears in ``repr`` or logs.
    ``verify_tls`` is ``True`` (system CAs), ``False`` (no verification) or a CA bundle path.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_secret: SecretStr
    request_timeout: float = Field(10.0, gt=0, description="seconds for one REST request")
    transfer_default_ring: float = Field(
        default=60.0, gt=0, description="the ring time assumed for a routeto/divert/transferto sent without a timeout (s)"
    )
    reconnect_initial: float = Field(0.5, gt=0, description="first event-socket reconnect delay (s)")
    reconnect_max: float = Field(30.0, gt=0, description="reconnect delay cap (s)")
    reconnect_jitter: float = Field(0.2, ge=0, lt=1, description="random +- fraction of each delay")
    retry_attempts: int = Field(4, ge=0, description="REST retries after the first attempt")
    retry_initial: float = Field(0.2, gt=0, description="first REST retry delay (s)")
    retry_max: float = Field(5.0, gt=0, description="REST retry delay cap (s)")
    ping_interval: float = Field(5.0, gt=0, description="event-socket ping period (s)")
    media_timeout: float = Field(10.0, gt=0, description="how long a stream waits for media (424)")
    token_refresh_margin: float = Field(60.0, ge=0, description="refresh this early (at most 10%)")

    @model_validator(mode="after")
    def _check_backoff(self) -> PbxConfig:
        if self.reconnect_initial > self.reconnect_max:
            raise ValueError(
                f"reconnect_initial ({self.reconnect_initial}) must not exceed reconnect_max ({self.reconnect_max})"
            )
        if self.retry_initial > self.retry_max:
            raise ValueError(f"retry_initial ({self.retry_initial}) must not exceed retry_max ({self.retry_max})")
        return self

    @property
    def ws_url(self) -> str:
        """The event socket URL: ws(s)://host[:port]/callcontrol/ws."""
        scheme, rest = self.url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/callcontrol/ws"

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS setting for aiohttp and websockets (``True`` means library default).

        One context per setting for the whole process: every call opens two TLS streams, and
        a context of its own would load and keep the CA certificates again each time."""
        if self.verify_tls is True:
            return True
        return client_tls_context(self.verify_tls)


@functools.lru_cache(maxsize=16)
def client_tls_context(verify: bool | str) -> ssl.SSLContext:
    """A client TLS context: system CAs (True), no verification (False) or a CA bundle path."""
    if verify is True:
        return ssl.create_default_context()
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=verify)
