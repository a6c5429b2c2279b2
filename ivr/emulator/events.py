"""Fan-out of WebSocket events to every connected event socket."""

from __future__ import annotations

import asyncio

from ivr.pbx.models import EventType, WsEvent, participant_path


class Subscriber:
    """One event socket's queue. ``overflowed`` is set when the socket cannot keep up."""

    MAX_QUEUED = 10_000

    def __init__(self) -> None:
        self.queue: asyncio.Queue[WsEvent] = asyncio.Queue(self.MAX_QUEUED)
        self.overflowed = asyncio.Event()

    def put(self, event: WsEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # A stuck client: closing its socket makes it reconnect and resync,
            # which is better than unbounded memory or silently lost events.
            self.overflowed.set()


class EventBus:
    """Publishes ``WsEvent``s to all subscribers (each event socket is one)."""

    def __init__(self) -> None:
        self._subs: set[Subscriber] = set()
        self.published = 0

    def subscribe(self) -> Subscriber:
        sub = Subscriber()
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    def publish(self, event: WsEvent) -> None:
        self.published += 1
        for sub in list(self._subs):
            sub.put(event)

    def upsert(self, dn: str, participant_id: int) -> None:
        self.publish(WsEvent(event_type=EventType.UPSERT, entity=participant_path(dn, participant_id)))

    def remove(self, dn: str, participant_id: int) -> None:
        self.publish(WsEvent(event_type=EventType.REMOVE, entity=participant_path(dn, participant_id)))

    def dtmf(self, dn: str, participant_id: int, digit: str) -> None:
        self.publish(
            WsEvent(
                event_type=EventType.DTMF_STRING,
                entity=participant_path(dn, participant_id),
                attached_data={"dtmf_input": digit},
            )
        )
