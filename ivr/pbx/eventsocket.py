"""``EventStream``: the ``/callcontrol/ws`` event socket, kept open for the client's life.

Each (re)connect fetches a token first (a stale one gets 401 forever), opens the socket,
and only THEN resyncs with ``GET /callcontrol``, so nothing that happens in between is
missed. ``sequence`` must grow by one per message; a gap means events were lost and
triggers another resync. A malformed message is logged and skipped. Lost connections are
retried with capped exponential backoff + jitter, forever, until the task is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pydantic import ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

from .auth import TokenManager
from .backoff import Backoff
from .config import PbxConfig
from .errors import AuthenticationError, PbxError
from .models import WsMessage

log = logging.getLogger(__name__)


class EventStream:
    """Runs the socket; calls ``resync()`` after each open or gap, ``handle(msg)`` per message.

    ``ready`` resolves after the first successful resync, or fails with
    :class:`AuthenticationError` if the credentials are rejected before that.
    """

    def __init__(
        self,
        cfg: PbxConfig,
        tokens: TokenManager,
        *,
        resync: Callable[[], Awaitable[None]],
        handle: Callable[[WsMessage], Awaitable[None]],
        on_connected: Callable[[], None] = lambda: None,
        on_disconnected: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._cfg = cfg
        self._tokens = tokens
        self._resync = resync
        self._handle = handle
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.is_connected = False
        self._fresh_401 = True
        self._synced_at: float | None = None  # loop time of the last successful resync
        self._stale_since: float | None = None  # a resync failed at this loop time: retry later
        # metrics
        self.connects = 0
        self.resyncs = 0
        self.synced_sessions = 0  # sessions that got through their opening resync
        self.gaps = 0
        self.malformed = 0

    async def run(self) -> None:
        """Connect, resync, dispatch; reconnect on any loss. Runs until cancelled."""
        cfg = self._cfg
        backoff = Backoff(cfg.reconnect_initial, cfg.reconnect_max, cfg.reconnect_jitter)
        while True:
            retry_now = False
            try:
                reason = await self._session_once(backoff)
            except AuthenticationError as exc:
                if not self.ready.done():
                    self.ready.set_exception(exc)
                    return
                reason = str(exc)
                log.error("event socket: %s", reason)
            except _Unauthorized as exc:
                reason = str(exc)
                # One immediate retry with a fresh token; repeated 401s back off.
                retry_now = self._fresh_401
                self._fresh_401 = False
            except PbxError as exc:
                reason = str(exc)
            except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
                reason = f"{cfg.ws_url}: {' '.join((str(exc) or type(exc).__name__).split())}"
            if self.is_connected:
                self.is_connected = False
                self._on_disconnected(reason)
            if retry_now:
                log.warning("event socket: %s; retrying with a fresh token", reason)
                continue
            # Events sent while we are away are lost for good (DTMF is not in the resync), so a
            # session that had been up a while is reconnected at once; a flapping one backs off.
            loop = asyncio.get_running_loop()
            if self._synced_at is not None and loop.time() - self._synced_at >= cfg.reconnect_initial:
                self._synced_at = None
                log.warning("event socket lost (%s); reconnecting now", reason)
                continue
            delay = backoff.next()
            log.warning("event socket lost (%s); reconnecting in %.2f s", reason, delay)
            await asyncio.sleep(delay)

    async def _session_once(self, backoff: Backoff) -> str:
        """One connection's life; returns why it ended (raises on failure to connect)."""
        cfg = self._cfg
        token = await self._tokens.token()
        secure = cfg.ws_url.startswith("wss://")
        try:
            ws_cm = connect(
                cfg.ws_url,
                additional_headers={"Authorization": f"Bearer {token}"},
                ping_interval=cfg.ping_interval,
                ping_timeout=cfg.ping_interval * 2,
                open_timeout=cfg.request_timeout,
                close_timeout=2,
                proxy=None,  # like the aiohttp session: no proxy from the environment
                max_size=cfg.event_max_bytes,  # a larger message closes the socket (1009) and we reconnect
                **({"ssl": cfg.ssl_context()} if secure else {}),
            )
            ws = await ws_cm
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401:
                self._tokens.invalidate(token)
                raise _Unauthorized(f"{cfg.ws_url}: upgrade rejected with HTTP 401") from None
            raise PbxError(status, "WebSocket upgrade rejected", "GET", cfg.ws_url) from None
        try:
            self.connects += 1
            self.is_connected = True
            self._fresh_401 = True
            self._on_connected()
            log.info("event socket connected to %s", cfg.ws_url)
            await self._do_resync()  # socket open FIRST, then the snapshot
            self._synced_at = asyncio.get_running_loop().time()
            self.synced_sessions += 1
            backoff.reset()
            if not self.ready.done():
                self.ready.set_result(None)
            last_seq: int | None = None
            self._stale_since = None
            async for raw in ws:
                msg = self._parse(raw)
                if msg is None:
                    continue
                if last_seq is not None and msg.sequence != last_seq + 1:
                    self.gaps += 1
                    log.warning(
                        "event socket: sequence jumped from %d to %d; resyncing",
                        last_seq,
                        msg.sequence,
                    )
                    await self._resync_in_session()
                elif self._stale_since is not None:
                    await self._resync_in_session(retry_after=1.0)
                last_seq = msg.sequence
                try:
                    await self._handle(msg)
                except PbxError as exc:
                    # The entity GET failed even after retries: the mirror may be stale.
                    log.warning("event %s not applied (%s); resyncing", msg.event.entity, exc)
                    await self._resync_in_session()
                except Exception:  # a bug in a handler must not kill the socket
                    log.exception("event socket: handler failed on %s", msg.event.entity)
            code = ws.close_code
            return f"closed by the server (code {code})"
        finally:
            await ws.close()

    async def _do_resync(self) -> None:
        self.resyncs += 1
        await self._resync()

    async def _resync_in_session(self, retry_after: float = 0.0) -> None:
        """Resync while the socket is up. If the PBX fails the snapshot, keep the socket (its
        events, DTMF above all, would be lost while reconnecting) and try again on a later
        event, at most once per ``retry_after`` seconds."""
        now = asyncio.get_running_loop().time()
        if self._stale_since is not None and now - self._stale_since < retry_after:
            return
        try:
            await self._do_resync()
            self._stale_since = None
        except PbxError as exc:
            self._stale_since = asyncio.get_running_loop().time()
            log.warning("event socket: resync failed (%s); retrying on a later event", exc)

    def mark_stale(self) -> None:
        """The mirror may be out of date (an entity GET failed): resync on the next event."""
        if self._stale_since is None:
            self._stale_since = float("-inf")

    def _parse(self, raw: str | bytes) -> WsMessage | None:
        try:
            return WsMessage.model_validate_json(raw)
        except (ValidationError, ValueError) as exc:
            self.malformed += 1
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            log.warning("event socket: skipped malformed message %.120r: %s", text, first)
            return None


class _Unauthorized(Exception):
    """The upgrade got 401: the token was dropped, retry with a fresh one."""
