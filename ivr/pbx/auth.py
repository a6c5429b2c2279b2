"""``TokenManager``: one OAuth2 client-credentials token per client, refreshed before expiry.

3CX may revoke the previous token as soon as a new one is issued (cutting open audio
streams), so the manager keeps exactly one token, fetches a new one only when it is about to
expire or a request proved it invalid, and never fetches twice for the same reason:
concurrent ``await token()`` calls share one request (single flight), and ``invalidate(t)``
only drops ``t`` if it is still the current token, so many requests failing with 401 on the
same token cause a single refresh.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp

from .config import PbxConfig
from .errors import AuthenticationError, FencedError, PbxUnreachableError, error_for_status, message_from_body
from .models import TokenResponse

log = logging.getLogger(__name__)

DEFAULT_LIFETIME = 3600.0

# A token the server rejects long before it expires was revoked, most likely because another
# process fetched one with the same client id. This many revocations within the window mean
# another process really is using our client id (one could be an admin's action).
CONFLICT_REVOCATIONS = 3
CONFLICT_WINDOW_S = 120.0


def jwt_lifetime(token: str) -> float | None:
    """Seconds the JWT ``token`` lives, from its payload (not verified); None if unknown.

    ``exp - iat`` when both are present (immune to clock skew), else ``exp - now``.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims: Any = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("exp"), (int, float)):
        return None
    iat = claims.get("iat")
    if isinstance(iat, (int, float)) and claims["exp"] > iat:
        return float(claims["exp"] - iat)
    return float(claims["exp"] - time.time())


class TokenManager:
    """Fetches and caches the Bearer token of one API client.

    ``refreshes`` counts tokens fetched and ``revocations`` tokens the server rejected before
    they expired (metrics). ``conflict`` is true while revocations come so often that another
    process must be using the same client id; ``on_conflict`` is called when it starts.
    """

    def __init__(self, session: aiohttp.ClientSession, cfg: PbxConfig) -> None:
        self._session = session
        self._cfg = cfg
        self._token: str | None = None
        self._refresh_at = 0.0  # loop time after which the token is renewed
        self._inflight: asyncio.Task[str] | None = None
        self._fenced: str | None = None  # why this process may fetch no more tokens
        self._revoked_at: deque[float] = deque(maxlen=CONFLICT_REVOCATIONS)
        self.refreshes = 0
        self.revocations = 0
        self.on_conflict: Callable[[], None] | None = None

    @property
    def conflict(self) -> bool:
        """Another process seems to use our client id: recent tokens were revoked again and again."""
        if len(self._revoked_at) < CONFLICT_REVOCATIONS:
            return False
        return asyncio.get_running_loop().time() - self._revoked_at[0] <= CONFLICT_WINDOW_S

    def fence(self, why: str) -> None:
        """Fetch no token any more (this process lost its lease): requests fail with FencedError."""
        self._fenced = why
        self._token = None

    @property
    def current(self) -> str | None:
        """The cached token, without fetching (None when there is none)."""
        return self._token

    async def token(self) -> str:
        """A valid token: the cached one, or a fresh one fetched once for all waiters.

        Concurrent callers share one request and its outcome (token or exception); a caller
        that is cancelled does not cancel the fetch for the others.
        """
        loop = asyncio.get_running_loop()
        if self._token is not None and loop.time() < self._refresh_at:
            return self._token
        if self._fenced is not None:
            raise FencedError(None, f"no new token for client id {self._cfg.client_id}: {self._fenced}")
        if self._inflight is None:
            self._inflight = loop.create_task(self._fetch())
            self._inflight.add_done_callback(self._fetch_done)
        return await asyncio.shield(self._inflight)

    def _fetch_done(self, task: asyncio.Task[str]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()  # mark retrieved: the waiters (if any) re-raise it

    async def aclose(self) -> None:
        """Cancel a fetch in flight (on client shutdown)."""
        task = self._inflight
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def invalidate(self, token: str) -> None:
        """A request with ``token`` got 401: drop it, unless it was already replaced."""
        if token != self._token:
            return
        self._token = None
        loop = asyncio.get_running_loop()
        if loop.time() >= self._refresh_at:
            log.info("3CX token rejected by the server; will fetch a new one")
            return
        # Rejected before it expired: revoked, most likely by a newer token for our client id.
        self.revocations += 1
        was_conflict = self.conflict
        self._revoked_at.append(loop.time())
        if self.conflict and not was_conflict:
            log.error("another process is using client id %s: its tokens were revoked %d times within %.0f s. "
                      "3CX allows one active token per client id; run one worker per client id, "
                      "with standbys (docs/ha.md)", self._cfg.client_id, CONFLICT_REVOCATIONS, CONFLICT_WINDOW_S)
            if self.on_conflict is not None:
                self.on_conflict()
        else:
            log.warning("3CX token for client id %s revoked before it expired; will fetch a new one",
                        self._cfg.client_id)

    async def _fetch(self) -> str:
        cfg = self._cfg
        url = f"{cfg.url}/connect/token"
        form = {
            "client_id": cfg.client_id,
            "client_secret": cfg.client_secret.get_secret_value(),
            "grant_type": "client_credentials",
        }
        timeout = aiohttp.ClientTimeout(total=cfg.request_timeout)
        try:
            async with self._session.post(
                url, data=form, timeout=timeout, ssl=cfg.ssl_context()
            ) as resp:
                body = await resp.read()
                status = resp.status
                reason = resp.reason or ""
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PbxUnreachableError(None, _describe(exc), "POST", url) from exc
        if status in (400, 401):
            # Some servers answer 400 to bad credentials.
            raise AuthenticationError(
                status,
                message_from_body(body, reason),
                "POST",
                url,
                pbx_url=cfg.url,
                client_id=cfg.client_id,
            )
        if status != 200:
            raise error_for_status(status, message_from_body(body, reason), "POST", url)
        try:
            parsed = TokenResponse.model_validate_json(body)
        except ValueError as exc:
            raise AuthenticationError(
                status, "token response is not valid JSON with access_token", "POST", url,
                pbx_url=cfg.url, client_id=cfg.client_id,
            ) from exc
        # expires_in is 60 on real servers for a 3600 s token: never trust it.
        lifetime = jwt_lifetime(parsed.access_token) or DEFAULT_LIFETIME
        margin = min(cfg.token_refresh_margin, lifetime * 0.1)
        self._token = parsed.access_token
        self._refresh_at = asyncio.get_running_loop().time() + max(0.0, lifetime - margin)
        self.refreshes += 1
        log.info("3CX token issued for client id %s, lifetime %.0f s", cfg.client_id, lifetime)
        return parsed.access_token


def _describe(exc: BaseException) -> str:
    """A one-line description of a connection failure."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())
