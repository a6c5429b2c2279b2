"""``CampaignRunner``: drives a :class:`CampaignPlan` with a dialler, in one asyncio task.

The runner asks the plan who is due, places each call through a :class:`Dialer` (the worker's
outbound dialling, in this process), records every attempt's result in the plan, saves the
state after each change and appends a results row for each contact that is done. ``pause``
stops new calls (calls in progress go on), ``resume`` goes on, ``stop`` ends the run after the
calls in progress; the state file lets a stopped campaign resume later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .contacts import Contact
from .plan import DONE, CampaignPlan
from .results import ResultsCsv, StateFile

log = logging.getLogger("ivr.campaign")


@dataclass(frozen=True)
class DialResult:
    """How one attempt ended, as the campaign counts it."""

    result: str  # answered, machine, busy, no_answer, not_registered, failed
    detail: str = ""
    call_id: str | None = None
    outcome: str | None = None  # the flow's call outcome when answered
    variables: dict[str, Any] = field(default_factory=dict)


class Dialer(Protocol):
    async def dial(self, contact: Contact) -> DialResult:
        """Call the contact, run the campaign's flow if answered, and say how it ended."""
        ...


def utc_now() -> datetime:
    return datetime.now(UTC)


class CampaignRunner:
    def __init__(self, plan: CampaignPlan, dialer: Dialer, *, state: StateFile | None = None,
                 results: ResultsCsv | None = None, free_capacity: Callable[[], int] | None = None,
                 clock: Callable[[], datetime] = utc_now, on_change: Callable[[CampaignRunner], None] | None = None,
                 idle_poll: float = 1.0) -> None:
        self.plan = plan
        self.dialer = dialer
        self.state = state
        self.results = results
        self.free_capacity = free_capacity
        self.clock = clock
        self.on_change = on_change
        self.idle_poll = idle_poll  # re-check free capacity this often while waiting
        self.paused = False
        self.stopping = False
        self._wake = asyncio.Event()
        self._calls: set[asyncio.Task[None]] = set()

    # -- control --------------------------------------------------------------------------

    def pause(self) -> None:
        self.paused = True
        self._poke()

    def resume(self) -> None:
        self.paused = False
        self._poke()

    def stop(self) -> None:
        """No new calls; :meth:`run` returns once the calls in progress have ended."""
        self.stopping = True
        self._poke()

    def status(self) -> dict[str, Any]:
        state = "stopping" if self.stopping else "paused" if self.paused else "done" if self.plan.finished else "running"
        return {"state": state, "counts": self.plan.counts(), "contacts": len(self.plan.contacts)}

    def _poke(self) -> None:
        self._wake.set()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> dict[str, int]:
        """Run until every contact is done or :meth:`stop`; returns the final counts."""
        self._report_done()  # contacts final from an earlier run (or the do-not-call list)
        self._save()
        try:
            while not self.stopping and not self.plan.finished:
                if not self.paused:
                    self._start_due()
                await self._sleep_until_next()
            if self._calls:
                await asyncio.gather(*self._calls, return_exceptions=True)
        finally:
            for task in self._calls:
                task.cancel()
            self._save()
            close = getattr(self.state, "aclose", None)
            if close is not None:
                await close()  # a mirrored state sends its last value
        return self.plan.counts()

    def _start_due(self) -> None:
        while True:
            free = self.free_capacity() if self.free_capacity is not None else None
            contact = self.plan.next_due(self.clock(), free=free)
            if contact is None:
                return
            self.plan.started(contact, self.clock())
            self._save()
            task = asyncio.get_running_loop().create_task(self._attempt(contact), name=f"campaign-{contact.key}")
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
            self._changed()

    async def _attempt(self, contact: Contact) -> None:
        try:
            outcome = await self.dialer.dial(contact)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one contact's failure must not end the campaign
            log.warning("campaign: calling %s (line %d) failed: %s", contact.number, contact.line,
                        " ".join(str(exc).split()) or type(exc).__name__)
            outcome = DialResult("failed", f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:200])
        st = self.plan.ended(contact, outcome.result, self.clock(), detail=outcome.detail, call_id=outcome.call_id,
                             outcome=outcome.outcome, variables=outcome.variables)
        log.info("campaign: %s (line %d): %s%s", contact.number, contact.line, outcome.result,
                 f" ({outcome.detail})" if outcome.detail else "")
        if st.status == DONE:
            self._report(contact)
        self._save()
        self._changed()
        self._poke()

    async def _sleep_until_next(self) -> None:
        now = self.clock()
        wake = None if self.paused else self.plan.next_wake(now)
        if wake is None or wake <= now:
            # Nothing pending, or someone is due but there is no room (concurrency, or the
            # worker's free capacity): a call that ends pokes us; capacity is polled.
            timeout = self.idle_poll
        else:
            timeout = min((wake - now).total_seconds(), self.idle_poll)
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    # -- outputs ----------------------------------------------------------------------------

    def _report_done(self) -> None:
        for key, contact in self.plan.contacts.items():
            if self.plan.states[key].status == DONE:
                self._report(contact)

    def _report(self, contact: Contact) -> None:
        st = self.plan.states[contact.key]
        if st.reported:
            return
        if self.results is not None:
            self.results.append(contact, st)
        st.reported = True

    def _save(self) -> None:
        if self.state is not None:
            self.state.save(self.plan.to_json())

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)
