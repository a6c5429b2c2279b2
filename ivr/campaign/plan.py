"""What a campaign does next, as plain data (sans-I/O): who to call now, when to wake up,
what an attempt's result means for the contact. Time comes in as an aware ``datetime``.

Rules:

- at most ``concurrency`` attempts at once (and never more than the caller says are free),
  and at most ``rate`` new calls a second;
- a contact is called only inside the calling window, in its own time zone;
- numbers on the do-not-call list are never called (result ``do_not_call``);
- a retryable result (``busy``, ``no_answer``, ``failed``, and ``machine`` if asked) calls the
  contact again after that result's delay, up to ``retries`` more times; a contact's attempts
  never overlap;
- the state (every contact's attempts and result) is a JSON value: a campaign stopped and
  started again carries on without calling anyone twice. A contact whose attempt was in flight
  when the process died is not called again: its result is ``interrupted``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from .contacts import Contact, normalise
from .window import CallingWindow

# Results of one attempt. "answered": someone (or the flow) took the call; "machine": the flow
# found an answering machine; the rest are why nobody answered.
AttemptResult = Literal["answered", "machine", "busy", "no_answer", "not_registered", "failed"]
RETRYABLE: tuple[str, ...] = ("busy", "no_answer", "failed", "not_registered", "machine")
FINAL_ONLY = ("do_not_call", "interrupted")  # results no attempt of this run produced

PENDING, DIALLING, DONE = "pending", "dialling", "done"


@dataclass(frozen=True)
class CampaignSettings:
    concurrency: int = 5
    rate: float = 1.0  # new calls per second
    window: CallingWindow = field(default_factory=CallingWindow)
    timezone: str = "UTC"  # for contacts without one
    retries: int = 2
    retry_on: tuple[str, ...] = ("busy", "no_answer", "failed", "not_registered")
    retry_delay: Mapping[str, float] = field(default_factory=lambda: {
        "busy": 300.0, "no_answer": 1800.0, "failed": 600.0, "not_registered": 1800.0, "machine": 3600.0})

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0 calls a second, got {self.rate}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        unknown = [r for r in self.retry_on if r not in RETRYABLE]
        if unknown:
            raise ValueError(f"cannot retry on {', '.join(unknown)} (retryable: {', '.join(RETRYABLE)})")

    def delay(self, result: str) -> timedelta:
        return timedelta(seconds=float(self.retry_delay.get(result, 600.0)))


@dataclass
class Attempt:
    started: str  # ISO 8601
    result: str | None = None
    detail: str = ""
    ended: str | None = None
    call_id: str | None = None


@dataclass
class ContactState:
    status: str = PENDING
    attempts: list[Attempt] = field(default_factory=list)
    next_at: str | None = None  # ISO 8601: not before
    result: str | None = None  # the final result once done
    outcome: str | None = None  # the last answered call's flow outcome
    variables: dict[str, Any] = field(default_factory=dict)  # what the flow set, last answered call
    reported: bool = False  # its result row is written

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "attempts": [a.__dict__ for a in self.attempts], "next_at": self.next_at,
                "result": self.result, "outcome": self.outcome, "variables": self.variables, "reported": self.reported}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContactState:
        return cls(status=str(data.get("status", PENDING)), attempts=[Attempt(**a) for a in data.get("attempts", [])],
                   next_at=data.get("next_at"), result=data.get("result"), outcome=data.get("outcome"),
                   variables=dict(data.get("variables") or {}), reported=bool(data.get("reported")))


class CampaignPlan:
    """Decides, from the contacts and their states, what to do at a given instant."""

    def __init__(self, contacts: Iterable[Contact], settings: CampaignSettings, *,
                 do_not_call: frozenset[str] = frozenset(), state: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.contacts = {c.key: c for c in contacts}
        self.states: dict[str, ContactState] = {}
        saved = (state or {}).get("contacts", {})
        for key, contact in self.contacts.items():
            st = ContactState.from_json(saved[key]) if key in saved else ContactState()
            if st.status == DIALLING:  # in flight when the last run stopped: it may have rung
                st.status, st.result = DONE, "interrupted"
                if st.attempts and st.attempts[-1].result is None:
                    st.attempts[-1].result, st.attempts[-1].detail = "interrupted", "the campaign stopped during the call"
            if st.status == PENDING and normalise(contact.number) in do_not_call:
                st.status, st.result = DONE, "do_not_call"
            self.states[key] = st
        self._last_start: datetime | None = None

    # -- questions ------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return sum(1 for s in self.states.values() if s.status == DIALLING)

    @property
    def finished(self) -> bool:
        return all(s.status == DONE for s in self.states.values())

    def counts(self) -> dict[str, int]:
        """Contacts by status, and finished ones by result (for progress and metrics)."""
        out: dict[str, int] = {PENDING: 0, DIALLING: 0, DONE: 0}
        for st in self.states.values():
            out[st.status] += 1
            if st.status == DONE and st.result:
                out[st.result] = out.get(st.result, 0) + 1
        return out

    def _zone(self, contact: Contact) -> str:
        return contact.timezone or self.settings.timezone

    def _ready_at(self, contact: Contact, st: ContactState, now: datetime) -> datetime | None:
        """When this pending contact may be called (now or later); None if never."""
        earliest = max(now, datetime.fromisoformat(st.next_at)) if st.next_at else now
        return self.settings.window.next_open(earliest, self._zone(contact))

    def next_due(self, now: datetime, *, free: int | None = None) -> Contact | None:
        """The next contact to call now (list order), or None; marks nothing: call
        :meth:`started` when its call is placed, then ask again."""
        room = self.settings.concurrency - self.in_flight
        if free is not None:
            room = min(room, free)
        if room <= 0:
            return None
        # At most `rate` new calls a second: one start per 1/rate, never a burst.
        if self._last_start is not None and now - self._last_start < timedelta(seconds=1 / self.settings.rate):
            return None
        for key, contact in self.contacts.items():
            st = self.states[key]
            if st.status == PENDING:
                ready = self._ready_at(contact, st, now)
                if ready is not None and ready <= now:
                    return contact
        return None

    def next_wake(self, now: datetime) -> datetime | None:
        """When :meth:`next_due` may next return someone (None: nothing is pending)."""
        soonest: datetime | None = None
        for key, contact in self.contacts.items():
            st = self.states[key]
            if st.status != PENDING:
                continue
            ready = self._ready_at(contact, st, now)
            if ready is None:
                continue
            if self._last_start is not None:
                ready = max(ready, self._last_start + timedelta(seconds=1 / self.settings.rate))
            soonest = ready if soonest is None else min(soonest, ready)
        return soonest

    # -- changes --------------------------------------------------------------------------

    def started(self, contact: Contact, now: datetime) -> None:
        st = self.states[contact.key]
        if st.status != PENDING:
            raise ValueError(f"contact {contact.number} (line {contact.line}) is {st.status}, not pending")
        st.status = DIALLING
        st.attempts.append(Attempt(started=now.isoformat()))
        self._last_start = now

    def ended(self, contact: Contact, result: str, now: datetime, *, detail: str = "", call_id: str | None = None,
              outcome: str | None = None, variables: Mapping[str, Any] | None = None) -> ContactState:
        """An attempt ended with ``result``: schedule a retry or make the result final."""
        st = self.states[contact.key]
        if st.status != DIALLING or not st.attempts:
            raise ValueError(f"contact {contact.number} (line {contact.line}) has no attempt in flight")
        attempt = st.attempts[-1]
        attempt.result, attempt.detail, attempt.ended, attempt.call_id = result, detail, now.isoformat(), call_id
        if outcome is not None:
            st.outcome = outcome
        if variables:
            st.variables = dict(variables)
        retries_left = self.settings.retries - (len(st.attempts) - 1)
        if result in self.settings.retry_on and retries_left > 0:
            st.status = PENDING
            st.next_at = (now + self.settings.delay(result)).isoformat()
        else:
            st.status, st.result = DONE, result
        return st

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "contacts": {k: s.to_json() for k, s in self.states.items()}}
