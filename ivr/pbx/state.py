"""``PbxState``: the client's live mirror of DNs, devices and participants.

It is fed by full snapshots (``GET /callcontrol`` after every (re)connect) and by single
entities (the GET that follows an Upsert, or a Remove). Every change yields typed events;
a repeated Upsert that changes nothing yields none. A snapshot is diffed against the
mirror, so what changed while the socket was down still becomes events.

No I/O here: the client does the HTTP and hands the results in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .events import ParticipantRemoved, ParticipantUpdated, PbxEvent, Resynced
from .models import DeviceInfo, DNInfo, DNType, ParticipantInfo

T = TypeVar("T")


@dataclass
class _Dn:
    dn: str
    type: str = DNType.NONE
    devices: dict[str, DeviceInfo] = field(default_factory=dict)
    participants: dict[int, ParticipantInfo] = field(default_factory=dict)

    def info(self) -> DNInfo:
        return DNInfo(
            dn=self.dn,
            type=self.type,
            devices=list(self.devices.values()),
            participants=list(self.participants.values()),
        )


class PbxState:
    """The mirror. ``publish`` receives every event the mirror produces."""

    def __init__(self, publish: Callable[[PbxEvent], None] | None = None) -> None:
        self._dns: dict[str, _Dn] = {}
        self._publish = publish or (lambda event: None)
        self._changed = asyncio.Event()
        self.synced = False  # True after the first snapshot

    # --- queries ---------------------------------------------------------------------------

    @property
    def dns(self) -> dict[str, DNInfo]:
        """A snapshot of every known DN, keyed by DN number/name."""
        return {name: d.info() for name, d in self._dns.items()}

    def dn(self, dn: str) -> DNInfo | None:
        """One DN, or None."""
        d = self._dns.get(dn)
        return d.info() if d else None

    def route_points(self) -> list[DNInfo]:
        """The DNs of type ``Wroutepoint`` (the IVR's own)."""
        return [d.info() for d in self._dns.values() if d.type == DNType.ROUTE_POINT]

    def participant(self, dn: str, participant_id: int) -> ParticipantInfo | None:
        """The participant's last known state, or None."""
        d = self._dns.get(dn)
        return d.participants.get(participant_id) if d else None

    def participants(self, dn: str) -> list[ParticipantInfo]:
        """All known participants on ``dn``."""
        d = self._dns.get(dn)
        return list(d.participants.values()) if d else []

    def device(self, dn: str, device_id: str) -> DeviceInfo | None:
        """One device, or None."""
        d = self._dns.get(dn)
        return d.devices.get(device_id) if d else None

    # --- waiting ---------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[PbxState], T | None], timeout: float | None) -> T:
        """Wait until ``predicate(state)`` is truthy and return its value.

        Raises ``asyncio.TimeoutError`` after ``timeout`` seconds (None: wait forever).
        """

        async def loop() -> T:
            while True:
                value = predicate(self)
                if value:
                    return value
                await self._changed.wait()

        return await asyncio.wait_for(loop(), timeout)

    async def wait_status(
        self, dn: str, participant_id: int, status: str, timeout: float | None
    ) -> ParticipantInfo:
        """Wait until the participant exists with ``status``; return it."""

        def check(state: PbxState) -> ParticipantInfo | None:
            p = state.participant(dn, participant_id)
            return p if p is not None and p.status == status else None

        return await self.wait_for(check, timeout)

    async def wait_gone(self, dn: str, participant_id: int, timeout: float | None) -> None:
        """Wait until the participant is not in the mirror."""
        await self.wait_for(lambda s: s.participant(dn, participant_id) is None, timeout)

    def _notify(self) -> None:
        # Wake every waiter, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    # --- updates ---------------------------------------------------------------------------

    def apply_snapshot(self, snapshot: list[DNInfo]) -> list[PbxEvent]:
        """Replace the mirror with a full ``GET /callcontrol``; return the differences."""
        events: list[PbxEvent] = []
        new: dict[str, _Dn] = {}
        for info in snapshot:
            d = _Dn(info.dn, info.type)
            d.devices = {dev.device_id: dev for dev in info.devices}
            d.participants = {p.id: p for p in info.participants}
            new[info.dn] = d
        for name, d in new.items():
            old = self._dns.get(name)
            old_parts = old.participants if old else {}
            for pid, p in d.participants.items():
                prev = old_parts.get(pid)
                if prev != p:
                    events.append(ParticipantUpdated(name, p, prev))
        for name, old in self._dns.items():
            kept = new[name].participants if name in new else {}
            for pid, p in old.participants.items():
                if pid not in kept:
                    events.append(ParticipantRemoved(name, pid, p))
        self._dns = new
        self.synced = True
        events.append(Resynced())
        self._emit(events)
        return events

    def upsert_participant(self, dn: str, participant: ParticipantInfo) -> list[PbxEvent]:
        """Merge a participant fetched after an Upsert; no event if nothing changed."""
        d = self._dns.setdefault(dn, _Dn(dn))
        prev = d.participants.get(participant.id)
        if prev == participant:
            return []
        d.participants[participant.id] = participant
        events: list[PbxEvent] = [ParticipantUpdated(dn, participant, prev)]
        self._emit(events)
        return events

    def remove_participant(self, dn: str, participant_id: int) -> list[PbxEvent]:
        """Forget a participant (Remove event, or 404 on the Upsert GET)."""
        d = self._dns.get(dn)
        last = d.participants.pop(participant_id, None) if d else None
        if last is None:
            return []
        events: list[PbxEvent] = [ParticipantRemoved(dn, participant_id, last)]
        self._emit(events)
        return events

    def upsert_dn(self, info: DNInfo) -> list[PbxEvent]:
        """Merge one DN (Upsert of ``/callcontrol/{dn}``): its type, devices and participants."""
        d = self._dns.setdefault(info.dn, _Dn(info.dn, info.type))
        d.type = info.type
        d.devices = {dev.device_id: dev for dev in info.devices}
        events: list[PbxEvent] = []
        fresh = {p.id: p for p in info.participants}
        for pid in [pid for pid in d.participants if pid not in fresh]:
            events.append(ParticipantRemoved(info.dn, pid, d.participants.pop(pid)))
        for pid, p in fresh.items():
            prev = d.participants.get(pid)
            if prev != p:
                d.participants[pid] = p
                events.append(ParticipantUpdated(info.dn, p, prev))
        self._emit(events, force_notify=True)
        return events

    def upsert_device(self, dn: str, device: DeviceInfo) -> None:
        """Merge a device."""
        d = self._dns.setdefault(dn, _Dn(dn))
        if d.devices.get(device.device_id) != device:
            d.devices[device.device_id] = device
            self._notify()

    def remove_device(self, dn: str, device_id: str) -> None:
        """Forget a device."""
        d = self._dns.get(dn)
        if d and d.devices.pop(device_id, None) is not None:
            self._notify()

    def _emit(self, events: list[Any], force_notify: bool = False) -> None:
        for event in events:
            self._publish(event)
        if events or force_notify:
            self._notify()
