"""``XapiClient``: typed reads of the 3CX Configuration API (``/xapi/v1``).

It shares the Call Control client's token manager: the PBX allows one active token per client
id, and a second manager would revoke the first one's token (and cut its calls' audio). Use
``XapiClient.sharing(pbx)`` next to a running ``PbxClient``, or ``XapiClient.standalone(cfg)``
when nothing else uses the client id. Requests go through the same ``RestClient`` plumbing:
401 refreshes the token once, transient failures of these GETs are retried with backoff.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError
from yarl import URL

from ..auth import TokenManager
from ..config import PbxConfig
from ..errors import (
    AuthenticationError,
    PbxError,
    PbxUnreachableError,
    error_for_status,
    message_from_body,
)
from ..rest import RestClient
from .models import (
    ActiveCall,
    Group,
    Holiday,
    OfficeHours,
    Queue,
    QueueAgent,
    RingGroup,
    RingGroupMember,
    User,
    UserGroup,
)
from .odata import Query, key

if TYPE_CHECKING:
    from ..client import PbxClient

__all__ = ["BASE", "XapiClient"]

BASE = "/xapi/v1"
M = TypeVar("M", bound=BaseModel)


class XapiClient:
    """Reads of one PBX's configuration; every method returns the typed models."""

    def __init__(self, session: aiohttp.ClientSession, tokens: TokenManager, cfg: PbxConfig, *, page_size: int = 100) -> None:
        if page_size < 1:
            raise ValueError(f"XapiClient: page_size must be >= 1, got {page_size}")
        self._session = session
        self._tokens = tokens
        self._cfg = cfg
        self._rest = RestClient(session, tokens, cfg)
        self.page_size = page_size

    @classmethod
    def sharing(cls, pbx: PbxClient, *, page_size: int = 100) -> XapiClient:
        """A client on ``pbx``'s HTTP session and token manager (one token for both APIs)."""
        return cls(pbx.session, pbx.tokens, pbx.cfg, page_size=page_size)

    @classmethod
    @contextlib.asynccontextmanager
    async def standalone(cls, cfg: PbxConfig, *, page_size: int = 100) -> AsyncIterator[XapiClient]:
        """A client with its own session and token manager, for a client id nothing else uses."""
        async with aiohttp.ClientSession() as session:
            tokens = TokenManager(session, cfg)
            try:
                yield cls(session, tokens, cfg, page_size=page_size)
            finally:
                await tokens.aclose()

    @property
    def tokens(self) -> TokenManager:
        return self._tokens

    @property
    def requests(self) -> int:
        """HTTP requests sent (a metric)."""
        return self._rest.requests

    # --- generic --------------------------------------------------------------------------

    async def get(self, path: str, query: Query | None = None) -> Any:
        """The decoded JSON of ``GET /xapi/v1{path}?{query}`` (path already encoded)."""
        qs = str(query) if query is not None else ""
        return await self._rest.request("GET", BASE + path + (f"?{qs}" if qs else ""))

    async def get_one(self, path: str, model: type[M], query: Query | None = None) -> M:
        """A single entity."""
        return _parse(model, await self.get(path, query), path)

    async def pages(self, path: str, model: type[M], query: Query | None = None) -> AsyncIterator[list[M]]:
        """A collection page by page (``$top``/``$skip`` of ``page_size``); a ``$top`` in
        ``query`` caps the total."""
        base = query or Query()
        limit = base.top
        skip = base.skip or 0
        got = 0
        while True:
            want = self.page_size if limit is None else min(self.page_size, limit - got)
            if want <= 0:
                return
            data = await self.get(path, base.replace(top=want, skip=skip))
            items = _collection(data, path)
            page = [_parse(model, item, path) for item in items]
            if page:
                yield page
            got += len(page)
            skip += len(page)
            if len(page) < want:
                return

    async def list_all(self, path: str, model: type[M], query: Query | None = None) -> list[M]:
        """A whole collection (every page)."""
        out: list[M] = []
        async for page in self.pages(path, model, query):
            out.extend(page)
        return out

    async def count(self, path: str, query: Query | None = None) -> int:
        """``@odata.count`` of a collection (with the query's ``$filter``), one request."""
        data = await self.get(path, (query or Query()).replace(top=0, count=True, skip=None))
        if not isinstance(data, dict) or not isinstance(data.get("@odata.count"), int):
            raise PbxError(200, "the answer has no @odata.count", "GET", BASE + path)
        return int(data["@odata.count"])

    async def version(self) -> str:
        """The PBX's version, from the ``X-3CX-Version`` header of ``GET /Defs?$select=Id``."""
        cfg = self._cfg
        url = cfg.url + BASE + "/Defs?%24select=Id"
        for attempt in range(2):
            token = await self._tokens.token()
            try:
                async with self._session.get(
                    URL(url, encoded=True), headers={"Authorization": f"Bearer {token}"},
                    timeout=aiohttp.ClientTimeout(total=cfg.request_timeout), ssl=cfg.ssl_context(),
                ) as resp:
                    body = await resp.read()
                    if resp.status == 401 and attempt == 0:
                        self._tokens.invalidate(token)
                        continue
                    if resp.status == 401:
                        raise AuthenticationError(401, message_from_body(body), "GET", url,
                                                  pbx_url=cfg.url, client_id=cfg.client_id)
                    if resp.status >= 300:
                        raise error_for_status(resp.status, message_from_body(body, resp.reason or ""), "GET", url)
                    return resp.headers.get("X-3CX-Version", "")
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise PbxUnreachableError(None, " ".join(str(exc).split()) or type(exc).__name__, "GET", url) from exc
        raise AssertionError("unreachable")

    # --- entities -------------------------------------------------------------------------

    async def office_hours(self) -> OfficeHours:
        """``GET /OfficeHours``: the system's hours, break time, holidays and time zone
        (``OfficeHolidays`` is a navigation property: expanded here)."""
        return await self.get_one("/OfficeHours", OfficeHours, Query(expand=("OfficeHolidays",)))

    async def holidays(self, query: Query | None = None) -> list[Holiday]:
        return await self.list_all("/Holidays", Holiday, query)

    async def groups(self, query: Query | None = None) -> list[Group]:
        """Departments (``$expand=Members,OfficeHolidays`` to have their members and own holidays)."""
        return await self.list_all("/Groups", Group, query)

    async def group(self, group_id: int, query: Query | None = None) -> Group:
        return await self.get_one(f"/Groups({int(group_id)})", Group, query)

    async def group_members(self, group_id: int, query: Query | None = None) -> list[UserGroup]:
        return await self.list_all(f"/Groups({int(group_id)})/Members", UserGroup, query)

    async def users(self, query: Query | None = None) -> list[User]:
        return await self.list_all("/Users", User, query)

    async def user(self, user_id: int, query: Query | None = None) -> User:
        return await self.get_one(f"/Users({int(user_id)})", User, query)

    async def user_by_number(self, number: str, query: Query | None = None) -> User:
        """``GET /Users(Number='...')``; NotFoundError if there is none."""
        return await self.get_one(f"/Users(Number={key(number)})", User, query)

    async def user_groups(self, user_id: int) -> list[UserGroup]:
        return await self.list_all(f"/Users({int(user_id)})/Groups", UserGroup)

    async def queues(self, query: Query | None = None) -> list[Queue]:
        """Queues (``$expand=Agents`` to have their agents)."""
        return await self.list_all("/Queues", Queue, query)

    async def queue_by_number(self, number: str, query: Query | None = None) -> Queue:
        return await self.get_one(f"/Queues(Number={key(number)})", Queue, query)

    async def queue_agents(self, queue_id: int, query: Query | None = None) -> list[QueueAgent]:
        return await self.list_all(f"/Queues({int(queue_id)})/Agents", QueueAgent, query)

    async def ring_groups(self, query: Query | None = None) -> list[RingGroup]:
        return await self.list_all("/RingGroups", RingGroup, query)

    async def ring_group_members(self, ring_group_id: int) -> list[RingGroupMember]:
        return await self.list_all(f"/RingGroups({int(ring_group_id)})/Members", RingGroupMember)

    async def active_calls(self, query: Query | None = None) -> list[ActiveCall]:
        return await self.list_all("/ActiveCalls", ActiveCall, query)


def _collection(data: Any, path: str) -> list[Any]:
    if not isinstance(data, dict) or not isinstance(data.get("value"), list):
        raise PbxError(200, "expected a collection ({'value': [...]})", "GET", BASE + path)
    return list(data["value"])




def _parse(model: type[M], data: Any, path: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise PbxError(200, f"unexpected {model.__name__} at {where}: {first['msg']}", "GET", BASE + path) from None
