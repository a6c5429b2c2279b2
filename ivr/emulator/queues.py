"""Calls waiting at the emulated PBX's queues, and offered to the queues' agents.

A call that reaches a queue DN (dialled straight, or delivered there by routeto / transferto /
divert) is taken by the queue at once: its leg on the queue's DN is Connected and the caller
hears silence (the emulator plays no music on hold). Calls wait oldest first. The oldest call of
a queue rings every agent who may take it now, all at once (ring all): an agent the
configuration says is enabled, registered, logged in to queues and not Away / Out of office
(:class:`QueuePlan`, read from the Configuration API's store: the same model ``/xapi/v1``
serves), whose extension is free (no leg at all) and neither busy nor unregistered. The first
agent to answer gets the call: the queue's leg and the other agents' ringing legs go, and the
next call rings the agents still free. After the queue's ``RingTimeout`` without an answer the
agents stop ringing and the next round rings them again. A call leaves its queue when an agent
answers, when the caller hangs up, or when the API client moves it elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ivr.pbx.models import DNType, ParticipantStatus

from .state import Call, Dn, Leg, Waiting

if TYPE_CHECKING:
    from .switch import Pbx

__all__ = ["QueueDesk", "QueuePlan"]

CONNECTED, RINGING = ParticipantStatus.CONNECTED, ParticipantStatus.RINGING


@dataclass(frozen=True)
class QueuePlan:
    """What the configuration says about a queue now."""

    agents: tuple[str, ...] = ()  # agents that may take a call now, in the queue's order
    ring_timeout: float = 0.0  # seconds one round rings the agents; 0: until one answers
    max_callers: int = 0  # calls that may wait at once; 0: no limit


class QueueDesk:
    """Every queue's waiting calls and the agents ringing for them."""

    def __init__(self, pbx: Pbx) -> None:
        self.pbx = pbx
        self.plan_of: Callable[[str], QueuePlan] = lambda dn: QueuePlan()
        self._offer_pending = False

    # --- a call arrives, leaves ---------------------------------------------------------------

    def full(self, queue: Dn) -> bool:
        """No more calls may wait at ``queue`` (its ``MaxCallersInQueue`` are waiting)."""
        limit = self.plan_of(queue.dn).max_callers
        return limit > 0 and len(queue.waiting) >= limit

    def enter(self, leg: Leg) -> None:
        """``leg``, Connected on a queue's DN, holds a call that now waits there."""
        call, queue = leg.call, leg.dn
        waiting = Waiting(call=call, queue=queue, leg=leg, since=self.pbx.now())
        call.waiting = waiting
        call.status_at = waiting.since
        queue.waiting.append(waiting)
        self.pbx.log(call, "queued", queue=queue.dn, position=len(queue.waiting))
        self.offer(queue)

    def leave(self, call: Call) -> None:
        """``call`` no longer waits (it ended, or its leg at the queue went elsewhere)."""
        waiting = call.waiting
        if waiting is None:
            return
        call.waiting = None
        waiting.queue.waiting.remove(waiting)
        self._stop_ringing(waiting)
        self.pbx.log(call, "left_queue", queue=waiting.queue.dn)
        self.offer_soon()

    # --- agents -------------------------------------------------------------------------------

    def ringing_for(self, leg: Leg) -> Waiting | None:
        """The waiting call ``leg`` rings an agent for, if it is such a leg."""
        waiting = leg.call.waiting
        return waiting if waiting is not None and leg in waiting.ringing else None

    def offer(self, queue: Dn) -> None:
        """Ring the oldest call at ``queue`` at every agent who may take it now and is not ringing."""
        if not queue.waiting:
            return
        head = queue.waiting[0]
        plan = self.plan_of(queue.dn)
        ringing_at = {leg.dn.dn for leg in head.ringing}
        for number in plan.agents:
            ext = self.pbx.dns.get(number)
            if ext is None or ext.type != DNType.EXTENSION or number in ringing_at or number in head.declined:
                continue
            if ext.behaviour not in ("answer", "no_answer") or ext.legs:  # busy, unregistered, on a call
                continue
            leg = self.pbx.new_leg(head.call, ext, RINGING, replace(head.call.far),
                                   on_behalf_of=(queue.dn, queue.type))
            head.ringing.append(leg)
            self.pbx.log(head.call, "agent_ringing", queue=queue.dn, agent=number)
            if ext.behaviour == "answer":  # the person picks up after ring_seconds
                asyncio.get_running_loop().call_later(self.pbx.config.ring_seconds, self._person_answers, leg)
        if head.ringing and head.round_timer is None and plan.ring_timeout > 0:
            head.round_timer = asyncio.get_running_loop().call_later(plan.ring_timeout, self._round_over, head)

    def offer_soon(self) -> None:
        """Offer every queue's oldest call again once the current change is done (an agent's
        extension became free, the configuration changed)."""
        if not self._offer_pending:
            self._offer_pending = True
            asyncio.get_running_loop().call_soon(self._offer_all)

    def behaviour_changed(self, ext: Dn) -> None:
        """``ext`` answers by itself now: a queue's call ringing there is picked up after ``ring_seconds``."""
        if ext.behaviour != "answer":
            return
        for leg in list(ext.legs.values()):
            if self.ringing_for(leg) is not None:
                asyncio.get_running_loop().call_later(self.pbx.config.ring_seconds, self._person_answers, leg)

    def answer(self, leg: Leg, by: str) -> None:
        """The agent whose ``leg`` rings takes the call: it leaves the queue."""
        waiting = self.ringing_for(leg)
        if waiting is None:
            return
        call = leg.call
        waiting.ringing.remove(leg)
        call.waiting = None
        waiting.queue.waiting.remove(waiting)
        self._stop_ringing(waiting)
        self.pbx.remove_leg(waiting.leg)  # the agent's leg replaces the queue's (Remove first)
        self.pbx.set_status(leg, CONNECTED)
        call.holder, call.location, call.state = leg, leg.dn.dn, "connected"
        call.status_at = self.pbx.now()
        self.pbx.log(call, "answered", dn=leg.dn.dn, device=leg.device_id, by=by, queue=waiting.queue.dn,
                     waited=round(call.status_at - waiting.since, 3))
        self.offer(waiting.queue)

    def decline(self, leg: Leg) -> None:
        """The agent rejects the call ringing at ``leg``: it is not rung again this round."""
        waiting = self.ringing_for(leg)
        if waiting is None:
            return
        waiting.ringing.remove(leg)
        waiting.declined.add(leg.dn.dn)
        self.pbx.log(leg.call, "agent_declined", queue=waiting.queue.dn, agent=leg.dn.dn)
        self.pbx.remove_leg(leg)

    # --- internals ----------------------------------------------------------------------------

    def _offer_all(self) -> None:
        self._offer_pending = False
        for dn in list(self.pbx.dns.values()):
            if dn.waiting:
                self.offer(dn)

    def _person_answers(self, leg: Leg) -> None:
        if not leg.gone and leg.status == RINGING and leg.dn.behaviour == "answer":
            self.answer(leg, by="user")

    def _round_over(self, waiting: Waiting) -> None:
        waiting.round_timer = None
        if waiting.call.waiting is not waiting:
            return
        if waiting.ringing:
            self.pbx.log(waiting.call, "agents_no_answer", queue=waiting.queue.dn,
                         agents=[leg.dn.dn for leg in waiting.ringing])
        self._stop_ringing(waiting)
        waiting.declined.clear()
        self.offer(waiting.queue)

    def _stop_ringing(self, waiting: Waiting) -> None:
        if waiting.round_timer is not None:
            waiting.round_timer.cancel()
            waiting.round_timer = None
        legs, waiting.ringing = waiting.ringing, []
        for leg in legs:
            self.pbx.remove_leg(leg)
