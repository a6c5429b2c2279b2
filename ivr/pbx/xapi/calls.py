"""The PBX's active calls as last read (``GET /ActiveCalls``) and what a queue's counters are
made of: how many calls wait there and for how long the longest has waited.

3CX's Configuration API has no live queue counters (swagger.yaml has only ``Pbx.ActiveCall``
for calls in progress; its queue "statistics" are reports over past periods), so they are
counted from the active calls. What a real 3CX writes for a call waiting in a queue is not
documented: ``Status`` is a free string. The rule here follows what third-party queue monitors
report from real PBXs: ``Callee`` names the queue (``"810"`` or ``"810 Sales queue"``), and a
call that is ``Talking`` has reached an agent; every other status (``Routing``, ``Ringing``,
``Queued``, ...) counts as waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from .models import ActiveCall

__all__ = ["CallsSnapshot", "QueueCalls", "callee_number", "waits_at"]


def callee_number(call: ActiveCall) -> str:
    """The DN a call is at: ``Callee``'s first word (``"810 Sales queue"`` -> ``"810"``)."""
    words = (call.Callee or "").split()
    return words[0] if words else ""


def waits_at(call: ActiveCall, queue: str) -> bool:
    """The call is at queue ``queue`` and no agent talks to it yet."""
    return bool(queue) and callee_number(call) == queue and (call.Status or "").strip().casefold() != "talking"


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)  # the PBX writes UTC


@dataclass(frozen=True)
class QueueCalls:
    """A queue's live counters: calls ``waiting``, and seconds the longest of them has waited
    (None when none waits, or the PBX gave no times)."""

    waiting: int
    longest_wait_s: float | None


@dataclass(frozen=True)
class CallsSnapshot:
    """One read of ``/ActiveCalls``; ``fetched_at`` is wall-clock (time.time)."""

    calls: tuple[ActiveCall, ...]
    fetched_at: float
    # queue number -> (calls waiting there, the longest wait at the read): counted once per read
    _queues: dict[str, tuple[int, float | None]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for call in self.calls:
            number = callee_number(call)
            if not waits_at(call, number):
                continue
            count, longest = self._queues.get(number, (0, None))
            waited = self._waited(call)
            if waited is not None and (longest is None or waited > longest):
                longest = waited
            self._queues[number] = (count + 1, longest)

    def queue(self, number: str, now: float | None = None) -> QueueCalls:
        """Counters of queue ``number``; waits grow by the time since the read (``now``, wall clock)."""
        count, longest = self._queues.get(str(number).strip(), (0, None))
        if longest is None:
            return QueueCalls(count, None)
        since_read = max(0.0, (now if now is not None else self.fetched_at) - self.fetched_at)
        return QueueCalls(count, round(longest + since_read, 1))

    @staticmethod
    def _waited(call: ActiveCall) -> float | None:
        """Seconds in its present status by the PBX's own clock (``ServerNow`` - ``LastChangeStatus``,
        else - ``EstablishedAt``), so the two clocks need not agree."""
        since = next((t for t in (call.LastChangeStatus, call.EstablishedAt) if _set(t)), None)
        if since is None or call.ServerNow is None or not _set(call.ServerNow):
            return None
        return max(0.0, (_aware(call.ServerNow) - _aware(since)).total_seconds())


def _set(t: datetime | None) -> bool:
    """A real time: OData's default ``0001-01-01T00:00:00`` stands for none."""
    return t is not None and t.year > 1970
