"""``RestClient``: one method per Call Control endpoint and participant action.

Every request carries the Bearer token. A 401 drops the token, fetches a fresh one and
retries once. Transient failures are retried with capped exponential backoff + jitter, but
only when a retry cannot do an action twice:

* GETs are idempotent: retried on 429, 500, 502, 503, 504, connection failures and timeouts.
* POST actions (makecall, answer, routeto, ...) are retried only when the PBX surely did not
  process the request: 429 and 503 (rejected before handling) and connection refused (the
  request never left). A 502/504, a reset or a timeout may come after the PBX acted, so
  those are raised to the caller instead of risking a second call or transfer.
* ``routeto``, ``divert`` and ``transferto`` may answer only once the destination answered or
  every destination failed (3CX's ``RouteToAsync``): their time limit is the route's own
  ``timeout`` plus ``transfer_margin``. A failed delivery may come as an HTTP error status whose
  body is the usual result (``PbxError.body``): never retried, the PBX has acted on it.
* ``drop`` is idempotent (a second drop is a 404, which callers treat as done): retried like
  a GET, so a hang-up is not lost to a transient PBX error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, TypeAdapter, ValidationError
from yarl import URL

from .auth import TokenManager
from .backoff import Backoff
from .config import PbxConfig
from .errors import (
    AuthenticationError,
    PbxError,
    PbxUnreachableError,
    error_for_status,
    message_from_body,
)
from .models import (
    Action,
    ActionRequest,
    CallControlResultResponse,
    DeviceInfo,
    DNInfo,
    MakeCallRequest,
    ParticipantInfo,
)

log = logging.getLogger(__name__)

_RETRY_GET = frozenset({429, 500, 502, 503, 504})
_RETRY_POST = frozenset({429, 503})


def seg(value: str | int) -> str:
    """One URL path segment, percent-encoded (device ids contain ':', '@', ';', '/')."""
    return quote(str(value), safe="")


def participant_url_path(dn: str, participant_id: int) -> str:
    """``/callcontrol/{dn}/participants/{id}`` with the DN encoded."""
    return f"/callcontrol/{seg(dn)}/participants/{seg(participant_id)}"


class RestClient:
    """Typed access to ``/callcontrol``. Methods return the shared pydantic wire models."""

    def __init__(self, session: aiohttp.ClientSession, tokens: TokenManager, cfg: PbxConfig) -> None:
        self._session = session
        self._tokens = tokens
        self._cfg = cfg
        self.requests = 0  # HTTP requests sent (a metric)
        self.retries = 0  # of which retries after a transient failure

    # --- reads -----------------------------------------------------------------------------

    async def get_all(self) -> list[DNInfo]:
        """``GET /callcontrol``: the client's own DNs and monitored extensions."""
        return _parse(list[DNInfo], await self._get("/callcontrol"), "/callcontrol")

    async def get_dn(self, dn: str) -> DNInfo:
        """``GET /callcontrol/{dn}``."""
        path = f"/callcontrol/{seg(dn)}"
        return _parse(DNInfo, await self._get(path), path)

    async def get_devices(self, dn: str) -> list[DeviceInfo]:
        """``GET /callcontrol/{dn}/devices``."""
        path = f"/callcontrol/{seg(dn)}/devices"
        return _parse(list[DeviceInfo], await self._get(path), path)

    async def get_device(self, dn: str, device_id: str) -> DeviceInfo:
        """``GET /callcontrol/{dn}/devices/{device_id}`` (the id is URL-encoded)."""
        path = f"/callcontrol/{seg(dn)}/devices/{seg(device_id)}"
        return _parse(DeviceInfo, await self._get(path), path)

    async def get_participants(self, dn: str) -> list[ParticipantInfo]:
        """``GET /callcontrol/{dn}/participants``."""
        path = f"/callcontrol/{seg(dn)}/participants"
        return _parse(list[ParticipantInfo], await self._get(path), path)

    async def get_participant(self, dn: str, participant_id: int) -> ParticipantInfo:
        """``GET /callcontrol/{dn}/participants/{id}``; NotFoundError when it ended."""
        path = participant_url_path(dn, participant_id)
        return _parse(ParticipantInfo, await self._get(path), path)

    # --- calls -----------------------------------------------------------------------------

    async def makecall(
        self,
        dn: str,
        destination: str,
        *,
        reason: str | None = None,
        timeout: int | None = None,
        attacheddata: dict[str, str] | None = None,
    ) -> CallControlResultResponse:
        """``POST /callcontrol/{dn}/makecall``: call ``destination`` from ``dn``."""
        body = MakeCallRequest(
            destination=destination, reason=reason, timeout=timeout, attacheddata=attacheddata
        )
        return await self._post_result(f"/callcontrol/{seg(dn)}/makecall", body)

    async def device_makecall(
        self,
        dn: str,
        device_id: str,
        destination: str,
        *,
        reason: str | None = None,
        timeout: int | None = None,
        attacheddata: dict[str, str] | None = None,
    ) -> CallControlResultResponse:
        """``POST /callcontrol/{dn}/devices/{device_id}/makecall``: call from one device."""
        body = MakeCallRequest(
            destination=destination, reason=reason, timeout=timeout, attacheddata=attacheddata
        )
        path = f"/callcontrol/{seg(dn)}/devices/{seg(device_id)}/makecall"
        return await self._post_result(path, body)

    # --- participant actions -----------------------------------------------------------------

    async def answer(self, dn: str, participant_id: int) -> CallControlResultResponse:
        """Answer a ringing leg (direct_control devices and route points only, else 422)."""
        return await self.action(dn, participant_id, Action.ANSWER)

    async def drop(self, dn: str, participant_id: int) -> CallControlResultResponse:
        """End the leg. Retried like a GET: dropping twice is harmless (the second is a 404)."""
        path = f"{participant_url_path(dn, participant_id)}/{seg(Action.DROP)}"
        return await self._post_result(path, ActionRequest(), idempotent=True)

    async def divert(
        self,
        dn: str,
        participant_id: int,
        destination: str,
        reason: str | None = None,
        timeout: int | None = None,
    ) -> CallControlResultResponse:
        """Replace a ringing leg with ``destination``."""
        body = ActionRequest(destination=destination, reason=reason, timeout=timeout)
        return await self._offer(dn, participant_id, Action.DIVERT, body)

    async def routeto(
        self,
        dn: str,
        participant_id: int,
        destination: str,
        timeout: int | None = None,
        reason: str | None = None,
    ) -> CallControlResultResponse:
        """Offer the call to ``destination``; the leg stays until delivery succeeds or fails."""
        body = ActionRequest(destination=destination, reason=reason, timeout=timeout)
        return await self._offer(dn, participant_id, Action.ROUTETO, body)

    async def transferto(
        self,
        dn: str,
        participant_id: int,
        destination: str,
        reason: str | None = None,
        timeout: int | None = None,
    ) -> CallControlResultResponse:
        """Blind-transfer a connected leg to ``destination``."""
        body = ActionRequest(destination=destination, reason=reason, timeout=timeout)
        return await self._offer(dn, participant_id, Action.TRANSFERTO, body)

    def offer_time_limit(self, timeout: float | None) -> float:
        """How long a routeto/divert/transferto request may take: the ring time plus the margin."""
        cfg = self._cfg
        ring = cfg.transfer_default_ring if timeout is None else float(timeout)
        return max(cfg.request_timeout, ring + cfg.transfer_margin)

    async def _offer(self, dn: str, participant_id: int, action: str, body: ActionRequest) -> CallControlResultResponse:
        """A delivery: its result in every shape, a failure answered with an error status included
        (``ok`` false, the PBX's ``reason``); other errors raise."""
        path = f"{participant_url_path(dn, participant_id)}/{seg(action)}"
        try:
            return await self._post_result(path, body, time_limit=self.offer_time_limit(body.timeout))
        except PbxError as exc:
            verdict = delivery_result(exc)
            if verdict is None:
                raise
            return verdict

    async def attach_participant_data(
        self, dn: str, participant_id: int, data: dict[str, str]
    ) -> CallControlResultResponse:
        """Store string key/values on the leg."""
        bad = [k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise ValueError(f"attach_participant_data: keys and values must be str, bad keys {bad!r}")
        body = ActionRequest(attacheddata=data)
        return await self.action(dn, participant_id, Action.ATTACH_PARTICIPANT_DATA, body)

    async def action(
        self, dn: str, participant_id: int, action: str, body: ActionRequest | None = None
    ) -> CallControlResultResponse:
        """``POST /callcontrol/{dn}/participants/{id}/{action}`` with a JSON body (``{}`` if empty)."""
        path = f"{participant_url_path(dn, participant_id)}/{seg(action)}"
        return await self._post_result(path, body or ActionRequest())

    # --- plumbing ----------------------------------------------------------------------------

    async def _get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def _post_result(
        self, path: str, body: BaseModel, *, idempotent: bool = False, time_limit: float | None = None
    ) -> CallControlResultResponse:
        payload = body.model_dump(exclude_none=True)
        data = await self.request("POST", path, json_body=payload, idempotent=idempotent, time_limit=time_limit)
        if data is None:  # 200/204 with an empty body: accepted, nothing to report
            return CallControlResultResponse()
        return _parse(CallControlResultResponse, data, path, "POST")

    async def request(
        self, method: str, path: str, *, json_body: Any = None, idempotent: bool = False,
        time_limit: float | None = None,
    ) -> Any:
        """Send one request with auth and retries; return the decoded JSON (None if empty).

        ``idempotent`` POSTs (drop) are retried like GETs; ``time_limit`` replaces
        ``request_timeout`` for this request. Raises the :class:`PbxError` subclass matching
        the final failure, its ``body`` the decoded error body.
        """
        cfg = self._cfg
        url = cfg.url + path
        is_get = method == "GET" or idempotent
        retry_status = _RETRY_GET if is_get else _RETRY_POST
        backoff = Backoff(cfg.retry_initial, cfg.retry_max, cfg.reconnect_jitter)
        reauthed = False
        attempt = 0
        timeout = aiohttp.ClientTimeout(total=time_limit or cfg.request_timeout)
        while True:
            token = await self._tokens.token()
            headers = {"Authorization": f"Bearer {token}"}
            self.requests += 1
            try:
                async with self._session.request(
                    method,
                    URL(url, encoded=True),  # already percent-encoded: do not re-quote
                    json=json_body,
                    headers=headers,
                    timeout=timeout,
                    ssl=cfg.ssl_context(),
                ) as resp:
                    status = resp.status
                    raw = await resp.read()
                    retry_after = resp.headers.get("Retry-After")
                    reason = resp.reason or ""
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                refused = isinstance(exc, aiohttp.ClientConnectorError)
                err: PbxError = PbxUnreachableError(None, _describe(exc), method, url)
                if attempt < cfg.retry_attempts and (is_get or refused):
                    attempt += 1
                    await self._sleep(backoff.next(), err)
                    continue
                raise err from exc
            if 200 <= status < 300:
                return _decode(raw, method, url, status)
            message = message_from_body(raw, reason)
            if status == 401:
                if not reauthed:
                    reauthed = True  # refresh once, retry once
                    self._tokens.invalidate(token)
                    continue
                raise AuthenticationError(
                    status, message, method, url, pbx_url=cfg.url, client_id=cfg.client_id
                )
            err = error_for_status(status, message, method, url)
            err.body = _json_or_none(raw)
            verdict = isinstance(err.body, dict) and "finalstatus" in err.body  # the PBX acted: a result
            if status in retry_status and attempt < cfg.retry_attempts and not verdict:
                attempt += 1
                delay = backoff.next()
                if retry_after is not None and retry_after.strip().isdigit():
                    delay = min(cfg.retry_max, max(delay, float(retry_after)))
                await self._sleep(delay, err)
                continue
            raise err

    async def _sleep(self, delay: float, err: PbxError) -> None:
        self.retries += 1
        log.warning("%s; retrying in %.2f s", err, delay)
        await asyncio.sleep(delay)


def _decode(raw: bytes, method: str, url: str, status: int) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise PbxError(status, f"response is not JSON: {message_from_body(raw)}", method, url) from None


def delivery_result(exc: PbxError) -> CallControlResultResponse | None:
    """The delivery result an error answer carries (3CX answers a failed routeto with an error
    status and the usual result body), or None for a plain error."""
    body = exc.body
    if not isinstance(body, dict) or "finalstatus" not in body:
        return None
    try:
        verdict: CallControlResultResponse = _adapter(CallControlResultResponse).validate_python(body)
    except ValidationError:
        return None
    return verdict if not verdict.ok else None  # an error status never means "delivered"


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        return None


def _parse(kind: Any, data: Any, path: str, method: str = "GET") -> Any:
    try:
        return _adapter(kind).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise PbxError(200, f"unexpected response shape at {where}: {first['msg']}", method, path) from None


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(kind: Any) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        adapter = _ADAPTERS[kind] = TypeAdapter(kind)
    return adapter


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())
