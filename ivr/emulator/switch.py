"""The emulated PBX's behaviour: calls arrive, ring, get routed, transferred, dropped.

Every change to a leg is published on the event bus (Upsert/Remove) and written to the
call's log. Offers (routeto/transferto/divert/makecall) ring in a task on the loop clock.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ivr.pbx.models import (
    ActionRequest,
    CallControlResultResponse,
    DeviceInfo,
    DNType,
    FinalStatus,
    MakeCallRequest,
    ParticipantInfo,
    ParticipantStatus,
)

from .config import BEHAVIOURS, EmulatorConfig
from .events import EventBus
from .media import RATE, decode_audio
from .queues import QueueDesk
from .state import ApiError, Call, Device, Dn, Leg, Offer, Party, Ringing, device_id_for

CONNECTED, RINGING, DIALING = ParticipantStatus.CONNECTED, ParticipantStatus.RINGING, ParticipantStatus.DIALING
DTMF_DIGITS = set("0123456789*#ABCD")
USER_AGENTS = {"desk": "Emulated Desk Phone", "app": "3CX App (emulated)", "web": "3CX Web Client (emulated)",
               DNType.ROUTE_POINT: "3CX Route Point", DNType.QUEUE: "3CX Queue", DNType.IVR: "3CX IVR"}
MAX_ENDED_CALLS = 100  # ended calls kept for inspection (with their heard audio)


def _result(leg: ParticipantInfo | None, text: str, *, failed: str | None = None) -> CallControlResultResponse:
    if failed:
        return CallControlResultResponse(
            finalstatus=FinalStatus.FAILED, reason=failed, reasontext=text, result=leg
        )
    return CallControlResultResponse(
        finalstatus=FinalStatus.SUCCESS, reason="NotSpecified", reasontext=text, result=leg
    )


class Pbx:
    """The switch: DNs, calls and every state change, publishing events as they happen."""

    def __init__(self, config: EmulatorConfig, bus: EventBus) -> None:
        self.config = config
        self.bus = bus
        self._answer_pcm: dict[str, np.ndarray] = {}  # answer_audio files, decoded once
        host = config.host_address
        rp = config.route_point

        def system_dn(dn: str, dn_type: str) -> Dn:
            info = DeviceInfo(dn=dn, device_id=device_id_for(dn, host), user_agent=USER_AGENTS[dn_type])
            return Dn(dn=dn, type=dn_type, devices=[Device(info)])

        self.route_point = system_dn(rp, DNType.ROUTE_POINT)
        self.dns: dict[str, Dn] = {rp: self.route_point}
        for ext, behaviour in config.extensions.items():
            devices = [
                Device(DeviceInfo(dn=ext, device_id=device_id_for(ext, host, i), user_agent=USER_AGENTS[d.kind]),
                       direct_control=d.direct_control)
                for i, d in enumerate(config.devices_of(ext))
            ]
            self.dns[ext] = Dn(dn=ext, type=DNType.EXTENSION, devices=devices, behaviour=behaviour)
        for dns, dn_type in ((config.queues, DNType.QUEUE), (config.ivrs, DNType.IVR)):
            for dn in dns:
                self.dns[dn] = system_dn(dn, dn_type)
        self.calls: dict[int, Call] = {}
        self.legs: dict[int, Leg] = {}
        self._participant_ids = itertools.count(1)
        self._leg_ids = itertools.count(10001)  # distinct ranges catch id mix-ups in clients
        self._call_ids = itertools.count(1001)
        self._external = re.compile(rf"^\+?\d{{{config.external_min_digits},}}$")
        self.has_legs = asyncio.Event()  # set while any participant exists (Upserts repeat then)
        self.queues = QueueDesk(self)  # calls waiting at queue DNs, offered to their agents

    # --- clock and log ----------------------------------------------------------------------

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    def log(self, call: Call, event: str, **fields: Any) -> None:
        call.log.append({"t": round(self.now() - call.t0, 3), "event": event, **fields})

    # --- lookups (raise ApiError with the HTTP status) ---------------------------------------

    def get_dn(self, dn: str) -> Dn:
        found = self.dns.get(dn)
        if found is None:
            raise ApiError(404, f"DN {dn!r} not found")
        return found

    def get_leg(self, dn: Dn, participant_id: str) -> Leg:
        try:
            pid = int(participant_id)
        except ValueError:
            raise ApiError(404, f"participant {participant_id!r} on DN {dn.dn!r}: not a participant id") from None
        leg = self.legs.get(pid)
        if leg is None:
            raise ApiError(404, f"participant {pid} on DN {dn.dn!r} not found")
        if leg.dn is not dn:
            raise ApiError(403, f"participant {pid} is not controlled by DN {dn.dn!r}")
        return leg

    def get_call(self, callid: int | str) -> Call:
        try:
            call = self.calls.get(int(callid))
        except ValueError:
            call = None
        if call is None:
            raise ApiError(404, f"call {callid!r} not found")
        return call

    def set_behaviour(self, dn: str, behaviour: str) -> None:
        ext = self.dns.get(dn)
        if ext is None or ext.type != DNType.EXTENSION:
            raise ApiError(404, f"extension {dn!r} not found")
        if behaviour not in BEHAVIOURS:
            raise ApiError(400, f"behaviour {behaviour!r}: must be one of {', '.join(BEHAVIOURS)}")
        ext.behaviour = behaviour
        self.queues.behaviour_changed(ext)
        self.queues.offer_soon()  # an agent may take queue calls now (or no longer)

    # --- leg bookkeeping --------------------------------------------------------------------

    def new_leg(self, call: Call, dn: Dn, status: str, party: Party, device: Device | None = None,
                **kw: Any) -> Leg:
        device = device or dn.devices[0]
        leg = Leg(
            id=next(self._participant_ids),
            legid=next(self._leg_ids),
            dn=dn,
            call=call,
            status=status,
            party=party,
            device_id=device.info.device_id,
            direct_control=device.direct_control,
            **kw,
        )
        dn.legs[leg.id] = leg
        call.legs[leg.id] = leg
        self.legs[leg.id] = leg
        self.has_legs.set()
        self.bus.upsert(dn.dn, leg.id)
        return leg

    def set_status(self, leg: Leg, status: str) -> None:
        leg.status = status
        self.bus.upsert(leg.dn.dn, leg.id)

    def remove_leg(self, leg: Leg) -> None:
        if leg.gone:
            return
        waiting = leg.call.waiting
        if waiting is not None and waiting.leg is leg:  # its leg at the queue went elsewhere
            self.queues.leave(leg.call)
        leg.gone = True
        leg.dn.legs.pop(leg.id, None)
        leg.call.legs.pop(leg.id, None)
        self.legs.pop(leg.id, None)
        if not self.legs:
            self.has_legs.clear()
        for stream in list(leg.streams):
            stream.end("end")
        self.bus.remove(leg.dn.dn, leg.id)
        if leg.dn.type == DNType.EXTENSION:  # a free extension may be an agent a queue waits for
            self.queues.offer_soon()

    def _store(self, call: Call) -> None:
        self.calls[call.callid] = call
        ended = [c for c in self.calls.values() if c.state == "ended"]
        for old in ended[: max(0, len(ended) - MAX_ENDED_CALLS)]:
            del self.calls[old.callid]

    # --- calls from the outside world -------------------------------------------------------

    def inbound(self, caller: str, to: str | None = None, name: str = "", did: str | None = None) -> Call:
        """An external caller dials one of our DNs (control API ``POST /_emulator/calls``): the
        route point (default) or an IVR, an extension (it rings) or a queue (the call waits there)."""
        to = to or self.route_point.dn
        if not caller:
            raise ApiError(400, "calls: 'from' (the caller's number) is required")
        dest = self.dns.get(to)
        if dest is None:
            raise ApiError(400, f"calls: 'to' {to!r} is none of this PBX's DNs (route point, extensions, queues, IVRs)")
        if did is None:
            did = to if self.config.inbound_did == "to" else ""  # real PBXs: empty unless a DID was dialled
        far = Party(name=name or "", dn=caller, caller_id=caller, did=did, dn_type=DNType.EXTERNAL_LINE)
        call = Call(callid=next(self._call_ids), t0=self.now(), direction="inbound", far=far, caller=caller, to=to)
        self._store(call)
        self.log(call, "created", direction="inbound", **{"from": caller, "to": to, "name": far.name, "did": far.did})
        call.location = dest.dn
        if dest.type == DNType.EXTENSION:
            self._ring_extension(call, dest)
            return call
        if dest.type == DNType.QUEUE:
            self._to_queue(call, dest, far)
            return call
        status = self.config.inbound_status
        call.holder = self.new_leg(call, dest, status, far)
        if status == CONNECTED:
            call.state = "connected"
            self.log(call, "answered", dn=dest.dn, by="pbx")
        return call

    def _to_queue(self, call: Call, queue: Dn, far: Party) -> None:
        """A call dialled straight to a queue: the queue takes it at once, or it is full (busy)."""
        if self.queues.full(queue):
            self.log(call, "rejected", dn=queue.dn, result="busy")
            self.end_call(call, by="busy")
            return
        call.holder = self.new_leg(call, queue, CONNECTED, far)
        call.state = "connected"
        self.log(call, "answered", dn=queue.dn, by="pbx")
        self.queues.enter(call.holder)

    def pick_up_at(self, dn: str) -> Call:
        """The person at extension ``dn`` picks up the call ringing there (control API ``POST
        /_emulator/extensions/{dn}/answer``): a queue's call offered to this agent, a call
        straight to the extension, or an offer (routeto/transferto/divert) to it."""
        ext = self.dns.get(dn)
        if ext is None or ext.type != DNType.EXTENSION:
            raise ApiError(404, f"extension {dn!r} not found")
        for leg in list(ext.legs.values()):
            if leg.status != RINGING:
                continue
            call = leg.call
            if self.queues.ringing_for(leg) is not None:
                self.queues.answer(leg, by="user")
            elif self._ringing_here(leg):
                self._pick_up(leg, by="user")
            elif call.offer is not None and call.offer.target is leg:
                self._finish_offer(call.offer, "answered")
            else:
                continue
            return call
        raise ApiError(409, f"extension {dn!r}: no call is ringing there")

    # --- calls straight to an extension -----------------------------------------------------

    def _ring_extension(self, call: Call, ext: Dn) -> None:
        """Ring every device of ``ext`` (one Ringing leg each) until one answers: the person
        at the extension (its behaviour) or the API client (``answer`` on a device with direct
        control). A busy extension rejects the call at once; no answer ends it after
        ``no_answer_timeout``."""
        if ext.behaviour == "busy":
            self.log(call, "rejected", dn=ext.dn, result="busy")
            self.end_call(call, by="busy")
            return
        legs = [self.new_leg(call, ext, RINGING, replace(call.far), device=d) for d in ext.devices]
        call.ringing = Ringing(dn=ext, legs=legs)
        call.ringing.task = asyncio.get_running_loop().create_task(self._ring_direct(call, call.ringing))

    async def _ring_direct(self, call: Call, ringing: Ringing) -> None:
        ring, timeout = self.config.ring_seconds, self.config.no_answer_timeout
        if ring < timeout:
            await asyncio.sleep(ring)
            if ringing.dn.behaviour == "answer":
                self._pick_up(ringing.legs[0], by="user")
                return
            if ringing.dn.behaviour == "busy":  # switched to busy while ringing
                self.log(call, "rejected", dn=ringing.dn.dn, result="busy")
                self.end_call(call, by="busy")
                return
            await asyncio.sleep(timeout - ring)
        else:
            await asyncio.sleep(timeout)
        self.end_call(call, by="no_answer")

    def _ringing_here(self, leg: Leg) -> bool:
        return leg.call.ringing is not None and leg in leg.call.ringing.legs

    def _claim(self, leg: Leg) -> None:
        """``leg`` (one device's ringing leg) takes the call: the other devices stop ringing."""
        call, ringing = leg.call, leg.call.ringing
        if ringing is None:
            return
        call.ringing = None
        if ringing.task and ringing.task is not asyncio.current_task():
            ringing.task.cancel()
        for other in ringing.legs:
            if other is not leg:
                self.remove_leg(other)
        call.holder = leg

    def _pick_up(self, leg: Leg, by: str) -> None:
        """The call is answered on ``leg``'s device."""
        self._claim(leg)
        self.set_status(leg, CONNECTED)
        leg.call.state = "connected"
        leg.call.status_at = self.now()
        self.log(leg.call, "answered", dn=leg.dn.dn, device=leg.device_id, by=by)

    def hangup(self, call: Call) -> None:
        """The far party hangs up."""
        if call.state == "ended":
            raise ApiError(409, f"call {call.callid} has already ended")
        self.end_call(call, by="caller")

    def dtmf_digit(self, call: Call, digit: str) -> None:
        """The far party presses one key: one DTMFstring event on the leg that holds the call."""
        leg = call.holder
        if call.state == "ended" or leg is None:
            raise ApiError(409, f"call {call.callid} has no leg of ours to send DTMF to (state {call.state})")
        self.bus.dtmf(leg.dn.dn, leg.id, digit)
        self.log(call, "dtmf", digit=digit, dn=leg.dn.dn)

    def speak(self, call: Call, pcm: np.ndarray) -> tuple[float, float]:
        """Queue the far party's speech; returns (start, end) in seconds since call start."""
        if call.state == "ended":
            raise ApiError(409, f"call {call.callid} has ended")
        start, end = call.voice.queue(pcm, call.sample_at(self.now()))
        self.log(call, "audio", seconds=round(len(pcm) / RATE, 3), start=round(start / RATE, 3),
                 end=round(end / RATE, 3))
        return start / RATE, end / RATE

    def end_call(self, call: Call, by: str) -> None:
        """End the whole call: every leg removed (Remove events), streams end."""
        if call.state == "ended":
            return
        self.queues.leave(call)  # first, so no agent is rung for it while its legs go
        offer, call.offer = call.offer, None
        if offer and offer.task:
            offer.task.cancel()
        direct, call.ringing = call.ringing, None  # a call straight to an extension
        if direct and direct.task and direct.task is not asyncio.current_task():
            direct.task.cancel()
        info = offer.origin.info() if offer else None
        ringing = offer.target if offer and offer.target and by == "caller" else None
        for leg in list(call.legs.values()):
            if leg is not ringing:
                self.remove_leg(leg)
        if ringing is not None:  # the phone that rang is cancelled a moment after the caller left
            delay = self.config.cancel_delay
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, self.remove_leg, ringing)
            else:
                self.remove_leg(ringing)
        call.state, call.holder, call.held = "ended", None, False
        call.ended_at = self.now()
        self.log(call, "dropped", by=by)
        if offer:  # a blocking offer's request learns that the call ended while it rang
            self._settle(offer, _failed(info, "ended"))

    # --- the Call Control actions -----------------------------------------------------------

    def answer(self, leg: Leg) -> CallControlResultResponse:
        if leg.status != RINGING:
            raise ApiError(422, f"answer on participant {leg.id} of DN {leg.dn.dn!r}: it is {leg.status}, not Ringing")
        if leg.dn is not self.route_point and not leg.direct_control:
            raise ApiError(422, f"answer on participant {leg.id}: device {leg.device_id!r} of DN {leg.dn.dn!r} "
                                "has no direct control")
        if self._ringing_here(leg):
            self._pick_up(leg, by="api")
            return _result(leg.info(), "Answered")
        if self.queues.ringing_for(leg) is not None:  # an agent's device takes a queue's call
            self.queues.answer(leg, by="api")
            return _result(leg.info(), "Answered")
        offer = leg.call.offer
        if offer and offer.target is leg:  # the destination answers: the offer is delivered
            self._finish_offer(offer, "answered")
            return _result(leg.info(), "Answered")
        self.set_status(leg, CONNECTED)
        if leg is leg.call.holder:
            leg.call.state = "connected"
        self.log(leg.call, "answered", dn=leg.dn.dn, by="api")
        return _result(leg.info(), "Answered")

    def drop(self, leg: Leg) -> CallControlResultResponse:
        info = leg.info()
        call = leg.call
        offer = call.offer
        if offer and offer.target is leg:
            # Dropping the ringing leg at the destination rejects the offer only.
            self.log(call, "dropped_leg", dn=leg.dn.dn, by="api")
            self._finish_offer(offer, "rejected")
        elif self.queues.ringing_for(leg) is not None:  # the agent rejects a queue's call
            self.queues.decline(leg)
        else:
            self.end_call(call, by=f"api:{leg.dn.dn}")
        return _result(info, "Dropped")

    def attach(self, leg: Leg, body: ActionRequest, party: bool = False) -> CallControlResultResponse:
        """attach_participant_data (the leg's own data, shown on it) or, with ``party``,
        attach_party_data (for the other party: kept in the call log only)."""
        action = "attach_party_data" if party else "attach_participant_data"
        if body.attacheddata is None:
            raise ApiError(400, f"{action} on participant {leg.id}: 'attacheddata' object required")
        if party:
            self.log(leg.call, "party_attached", dn=leg.dn.dn, data=dict(body.attacheddata))
            return _result(leg.info(), "Attached")
        leg.attached.update(body.attacheddata)
        self.bus.upsert(leg.dn.dn, leg.id)
        self.log(leg.call, "attached", dn=leg.dn.dn, data=dict(body.attacheddata))
        return _result(leg.info(), "Attached")

    def offer(self, leg: Leg, kind: str, body: ActionRequest) -> CallControlResultResponse | asyncio.Future[Any]:
        """routeto / transferto / divert: offer the call to ``body.destination``.

        The leg keeps the call until the destination answers (the answering leg replaces it)
        or every destination failed (the leg stays, back with the IVR), as 3CX documents
        ``RouteToAsync``. With ``transfer_answer: blocking`` the answer is a future settled
        then; with ``dialing`` it is 200 ``Dialing`` at once. A failure is ``OfferFailed``
        (an HTTP error status) or 200 ``Failed`` by ``transfer_failure``.
        """
        call = leg.call
        where = f"{kind} on participant {leg.id} of DN {leg.dn.dn!r}"
        if not body.destination:
            raise ApiError(400, f"{where}: 'destination' is required")
        allowed = {"divert": (RINGING,), "transferto": (CONNECTED,), "routeto": (RINGING, CONNECTED)}[kind]
        if leg.status not in allowed:
            raise ApiError(422, f"{where}: it is {leg.status}, must be {' or '.join(allowed)}")
        if leg is not call.holder and not self._ringing_here(leg):
            raise ApiError(422, f"{where}: this leg does not hold the call")
        if call.offer is not None:
            raise ApiError(422, f"{where}: an offer to {call.offer.destination!r} is still in progress")
        timeout = self._timeout(body.timeout, where)
        info = leg.info()
        dest = body.destination
        target_dn, failure = self._classify(dest, leg.dn, queues=True)
        if failure:
            self.log(call, _PAST[kind], destination=dest, result=failure)
            return self._failure_answer(info, failure)
        self._claim(leg)  # a call ringing at an extension's devices: this one acts for it
        self.log(call, "offer", action=kind, destination=dest)
        if kind == "transferto":
            call.held = True
            self.log(call, "held")
        target = None
        if target_dn is not None:
            target = self.new_leg(call, target_dn, RINGING, replace(call.far),
                                  referred_by=(leg.dn.dn, leg.dn.type))
        offer = Offer(kind=kind, destination=dest, origin=leg, target=target, timeout=timeout)
        if self.config.transfer_answer == "blocking":
            offer.answer = asyncio.get_running_loop().create_future()
        self._start_offer(offer)
        return offer.answer if offer.answer is not None else _result(info, "Dialing")

    def _failure_answer(self, leg: ParticipantInfo | None, failure: str) -> CallControlResultResponse:
        """A failed delivery as configured: raise OfferFailed (error status) or 200 ``Failed``."""
        response = _failed(leg, failure)
        if self.config.transfer_failure == "error":
            raise OfferFailed(self.config.transfer_error_status, response)
        return response

    def makecall(self, dn: Dn, body: MakeCallRequest, device_id: str | None = None) -> CallControlResultResponse:
        """A call from one of our DNs (or one of its devices) to ``body.destination``."""
        where = f"makecall from DN {dn.dn!r}"
        device = dn.find_device(device_id) if device_id is not None else dn.devices[0]
        if device is None:
            raise ApiError(404, f"{where}: device {device_id!r} not found on this DN")
        timeout = self._timeout(body.timeout, where)
        dest = body.destination
        target_dn, failure = self._classify(dest, dn)
        if failure:
            return _failed(None, failure)
        if target_dn is not None:
            far = Party(name=f"Extension {dest}", dn=dest, caller_id=dest, dn_type=target_dn.type)
        else:
            far = Party(dn=dest, caller_id=dest, dn_type=DNType.EXTERNAL_LINE)
        call = Call(callid=next(self._call_ids), t0=self.now(), direction="outbound", far=far,
                    caller=dn.dn, to=dest, state="dialing")
        self._store(call)
        self.log(call, "created", direction="outbound", **{"from": dn.dn, "to": dest})
        origin = self.new_leg(call, dn, DIALING, far, device=device, originated_by=(dn.dn, dn.type))
        if body.attacheddata:
            origin.attached.update(body.attacheddata)
        call.holder, call.location = origin, dn.dn
        target = None
        if target_dn is not None:
            me = Party(name=dn.dn, dn=dn.dn, caller_id=dn.dn, dn_type=dn.type)
            target = self.new_leg(call, target_dn, RINGING, me, originated_by=(dn.dn, dn.type))
        self._start_offer(Offer(kind="makecall", destination=dest, origin=origin, target=target, timeout=timeout))
        return _result(origin.info(), "Dialing")

    # --- offers -----------------------------------------------------------------------------

    def _timeout(self, value: int | None, where: str) -> float:
        if value is None:
            return self.config.no_answer_timeout
        if value <= 0:
            raise ApiError(400, f"{where}: 'timeout' must be a positive number of seconds, got {value}")
        return float(value)

    def _classify(self, dest: str, origin: Dn, *, queues: bool = False) -> tuple[Dn | None, str | None]:
        """(extension or, with ``queues``, queue DN, or None for an external number; failure
        result or None). A full queue is busy."""
        dn = self.dns.get(dest)
        if queues and dn is not None and dn.type == DNType.QUEUE and dn is not origin:
            return (None, "busy") if self.queues.full(dn) else (dn, None)
        if dn is not None and dn.type == DNType.EXTENSION and dn is not origin:
            if dn.behaviour in ("busy", "not_registered"):
                return None, dn.behaviour
            return dn, None
        if dn is None and self._external.match(dest):
            return None, None
        return None, "not_found"

    def _start_offer(self, offer: Offer) -> None:
        offer.origin.call.offer = offer
        offer.task = asyncio.get_running_loop().create_task(self._ring(offer))

    async def _ring(self, offer: Offer) -> None:
        if offer.target is not None and offer.target.dn.type == DNType.QUEUE:
            await asyncio.sleep(0)  # a queue takes the call at once, unless it filled up meanwhile
            self._finish_offer(offer, "busy" if self.queues.full(offer.target.dn) else "answered")
            return
        ring, timeout = self.config.ring_seconds, offer.timeout
        if ring < timeout:
            await asyncio.sleep(ring)
            behaviour = offer.target.dn.behaviour if offer.target else "answer"
            if behaviour == "answer":
                self._finish_offer(offer, "answered")
                return
            if behaviour in ("busy", "not_registered"):  # switched while ringing
                self._finish_offer(offer, behaviour)
                return
            await asyncio.sleep(timeout - ring)
        else:
            await asyncio.sleep(timeout)
        self._finish_offer(offer, "no_answer")

    def _finish_offer(self, offer: Offer, result: str) -> None:
        call = offer.origin.call
        if call.offer is not offer:
            return
        call.offer = None
        if offer.task and offer.task is not asyncio.current_task():
            offer.task.cancel()
        kind, origin, target = offer.kind, offer.origin, offer.target
        info = origin.info()
        if result == "answered":
            if kind == "makecall":
                self.set_status(origin, CONNECTED)
                if target:
                    self.set_status(target, CONNECTED)
                self._say_on_answer(call, offer.destination)
            else:
                self.remove_leg(origin)  # the answering leg replaces the route point's (Remove first)
                if target:
                    self.set_status(target, CONNECTED)
                call.holder = target
                call.location = target.dn.dn if target else offer.destination
                call.held = False
            call.state = "connected"
            call.status_at = self.now()
            self.log(call, _PAST[kind], destination=offer.destination, result="answered")
            if target is not None and target.dn.type == DNType.QUEUE:
                self.queues.enter(target)
            self._settle(offer, _result(info, "Connected"))
            return
        if target:
            self.remove_leg(target)
        self.log(call, _PAST[kind], destination=offer.destination, result=result)
        if kind != "makecall" and not origin.gone:
            if kind == "transferto":
                call.held = False
                self.log(call, "resumed")
            self.bus.upsert(origin.dn.dn, origin.id)  # the offer failed: the leg is still ours
        elif kind == "makecall":
            self.end_call(call, by=result)
        self._settle(offer, _failed(info, result))

    def _say_on_answer(self, call: Call, destination: str) -> None:
        """The far end at ``destination`` speaks its configured audio once it answers."""
        path = self.config.answer_audio.get(destination)
        if path is None:
            return
        pcm = self._answer_pcm.get(path)
        if pcm is None:
            pcm = self._answer_pcm[path] = decode_audio(Path(path).read_bytes())
        self.speak(call, pcm)

    def _settle(self, offer: Offer, response: CallControlResultResponse) -> None:
        """Answer a blocking offer's request: 200 on success, the configured failure shape else."""
        answer = offer.answer
        if answer is None or answer.done():
            return
        if response.ok or self.config.transfer_failure == "failed":
            answer.set_result(response)
        else:
            answer.set_result(OfferFailed(self.config.transfer_error_status, response))

    def repeat_upserts(self) -> None:
        """Re-announce every participant, as real servers do every ~750 ms."""
        for leg in list(self.legs.values()):
            self.bus.upsert(leg.dn.dn, leg.id)


_PAST = {"routeto": "routed", "transferto": "transferred", "divert": "diverted", "makecall": "makecall"}

_FAILURES = {  # result -> (reason, reasontext)
    "busy": ("PhoneBusy", "Destination busy"),
    "no_answer": ("NoAnswer", "No answer"),
    "not_registered": ("PhoneNotRegistered", "Destination not registered"),
    "not_found": ("NotFound", "Destination not found"),
    "rejected": ("Rejected", "Rejected by the destination"),
    "ended": ("NotSpecified", "The call ended while it was being delivered"),
}


def _failed(leg: ParticipantInfo | None, failure: str) -> CallControlResultResponse:
    """``finalstatus: Failed`` with the reason of ``failure`` (a result of the switch's log)."""
    reason, text = _FAILURES[failure]
    return _result(leg, text, failed=reason)


class OfferFailed(ApiError):
    """A failed delivery answered with an HTTP error status: the body is the usual result shape."""

    def __init__(self, status: int, response: CallControlResultResponse) -> None:
        super().__init__(status, str(response.reasontext or response.reason))
        self.response = response

    def body(self) -> dict[str, Any]:
        return self.response.model_dump(mode="json")

