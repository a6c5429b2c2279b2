"""Typed events for consumers of the client, and the fan-out that delivers them.

``PbxClient.events()`` returns a :class:`Subscription`: an async iterator over its own
queue, so several consumers each see every event, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .models import ParticipantInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParticipantUpdated:
    """A participant appeared (``previous is None``) or changed."""

    dn: str
    participant: ParticipantInfo
    previous: ParticipantInfo | None = None


@dataclass(frozen=True)
class ParticipantRemoved:
    """A participant ended. ``last`` is its last known state, if it was known."""

    dn: str
    participant_id: int
    last: ParticipantInfo | None = None


@dataclass(frozen=True)
class DtmfReceived:
    """The remote party of ``participant_id`` pressed one digit."""

    dn: str
    participant_id: int
    digits: str


@dataclass(frozen=True)
class Resynced:
    """The state mirror was rebuilt from a full ``GET /callcontrol``."""


@dataclass(frozen=True)
class Connected:
    """The event socket is open (before the resync that follows)."""


@dataclass(frozen=True)
class Disconnected:
    """The event socket was lost; the client is reconnecting."""

    reason: str


PbxEvent = ParticipantUpdated | ParticipantRemoved | DtmfReceived | Resynced | Connected | Disconnected

_CLOSED = object()


class Subscription:
    """One consumer's view of the event stream: ``async for event in subscription``.

    The queue is bounded: a consumer that falls ``maxsize`` events behind loses the oldest
    ones (logged) rather than growing memory without limit.
    """

    def __init__(self, hub: EventHub, maxsize: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize)
        self.dropped = 0

    def _put(self, item: object) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("event subscriber too slow: %d events dropped", self.dropped)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> PbxEvent:
        item = await self._queue.get()
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # stay closed for later calls
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

    async def get(self, timeout: float | None = None) -> PbxEvent:
        """The next event; ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def next(
        self,
        kind: type | tuple[type, ...] | None = None,
        *,
        where: Callable[[Any], bool] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The next event that is a ``kind`` and satisfies ``where``, skipping the others.

        ``asyncio.TimeoutError`` after ``timeout`` seconds in total.
        """

        async def find() -> Any:
            async for event in self:
                if (kind is None or isinstance(event, kind)) and (where is None or where(event)):
                    return event
            raise RuntimeError("event subscription closed while waiting")

        return await asyncio.wait_for(find(), timeout)

    def close(self) -> None:
        """Stop receiving; iteration ends after events already queued."""
        self._hub._unsubscribe(self)
        self._put(_CLOSED)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """Delivers each published event to every current subscriber."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._subs: list[Subscription] = []
        self._maxsize = maxsize

    def subscribe(self) -> Subscription:
        """A new subscription; it receives events published from now on."""
        sub = Subscription(self, self._maxsize)
        self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, event: PbxEvent) -> None:
        """Queue ``event`` for every subscriber (never blocks)."""
        for sub in list(self._subs):
            sub._put(event)

    def close(self) -> None:
        """End every subscription."""
        for sub in list(self._subs):
            sub.close()
