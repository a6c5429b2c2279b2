"""The worker: route points in, one Call per arriving participant, its flow run to an outcome.

One asyncio loop serves every call. Each call runs in its own task with its own log context;
an exception in one call runs that call's ``on_error`` and never reaches another call or the
worker. Every call ends in a defined outcome and leaves one call record.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from threadpoolctl import threadpool_limits

from ivr.call import Call, CallError, CallHangup
from ivr.call.media import CallMedia, MediaSettings
from ivr.call.record import CallRecord, CallRecordWriter, Outcome
from ivr.call.results import failure_status
from ivr.cluster.checkpoints import Checkpoint, CheckpointStore, MemoryCheckpoints
from ivr.cluster.lease import LeaseStoreError, owner_label
from ivr.config import WorkerConfig
from ivr.flow import FlowLoadError
from ivr.flow.interpreter import PositionObserver
from ivr.flow.position import FlowPosition, plain
from ivr.pbx import PbxClient, PbxConfig
from ivr.pbx.errors import PbxError
from ivr.pbx.events import (
    DtmfReceived,
    ParticipantRemoved,
    ParticipantUpdated,
    Resynced,
)
from ivr.pbx.models import ParticipantInfo, ParticipantStatus
from ivr.pbx.outbound import slack_ms
from ivr.pbx.xapi import XapiCache, XapiClient
from ivr.speech.services import SpeechServices
from ivr.worker.gcpacing import PacedCollector
from ivr.worker.legs import Dialled, Leg, Legs, LegState
from ivr.worker.library import FlowLibrary
from ivr.worker.logs import current_call_id
from ivr.worker.metrics import WorkerMetrics
from ivr.worker.tracing import CallTracing

log = logging.getLogger("ivr.worker")

# How long the overflow destination rings for a call the worker or its flow could not place.
OVERFLOW_RING_S = 20
#: DTMF events kept for a participant before its first Upsert (normally one or two).
MAX_EARLY_DIGITS = 32

# Statuses in which a participant on a route point is a call for us to take.
_TAKE = (ParticipantStatus.CONNECTED, ParticipantStatus.RINGING)


class Worker:
    """Runs flows for calls arriving on the configured route points."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        secret: Any = None,
        speech: Any = None,
        on_call_started: Callable[[Call], None] | None = None,
        reload_interval: float = 1.0,
        paced_gc: bool = False,
        checkpoints: CheckpointStore | None = None,
    ) -> None:
        self.config = config
        self.paced_gc = paced_gc  # the process's garbage collector is ours (ivr run), not in tests
        self._secret = secret if secret is not None else config.pbx.resolve_secret()
        self.metrics = WorkerMetrics()
        self.tracing = CallTracing.from_settings(config.tracing)  # None unless enabled and importable
        observe = lambda kind, name, s: self.metrics.adapter_seconds.labels(kind, name).observe(s)  # noqa: E731
        self.speech = speech if speech is not None else SpeechServices.from_settings(config.speech, observe=observe)
        if isinstance(self.speech, SpeechServices) and self.speech._observe is None:
            self.speech._observe = observe  # services made by the caller (tests, ivr call) are measured too
        self.on_call_started = on_call_started
        self.reload_interval = reload_interval
        self.library = FlowLibrary([config.path(r.flow) for r in config.routes])
        self.records = CallRecordWriter(config.path(config.records) if config.records else None)
        self.legs = Legs()  # every leg we know on our route points, by (route point, participant id)
        self.draining = False
        self.ready = asyncio.Event()
        self.pbx: PbxClient | None = None
        self.xapi: XapiCache | None = None  # the PBX's configuration, when xapi.enabled
        self.completed: list[CallRecord] = []  # most recent records, for `ivr call` and tests
        self.keep_records = 1000
        self._abandoned: str | None = None  # why this process gave its calls up (lease lost, handed over)
        # Each call's flow position after every step, for whoever owns the calls next (docs/ha.md).
        self.checkpoints: CheckpointStore = checkpoints if checkpoints is not None else MemoryCheckpoints()
        self.metrics.checkpoints = self.checkpoints
        self.owner = owner_label()

    @property
    def calls(self) -> dict[tuple[str, int], Call]:
        """The calls whose flows run now, by (route point, participant id)."""
        return self.legs.calls()

    # --- lifecycle --------------------------------------------------------------------------

    def pbx_config(self) -> PbxConfig:
        return self.config.pbx.client_config(self._secret)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve calls until ``stop`` is set (or SIGTERM/SIGINT when run from the CLI), then drain."""
        # Caller audio of many calls goes through one matrix product per timer tick
        # (ivr.audio.batch); a multi-threaded BLAS spins extra threads for it that fight the
        # event loop for the cores (measured: 2-4x the CPU for the same work).
        threadpool_limits(limits=1, user_api="blas")
        self.library.load_all()
        stop = stop or asyncio.Event()
        client = await self._connect(PbxClient(self.pbx_config()), stop)
        if client is None:
            return
        async with client as pbx:
            self.pbx = pbx
            self.metrics.client = pbx  # reconnects and token refreshes, read at scrape time
            self._check_route_points(pbx)
            events = pbx.events()
            watcher = asyncio.create_task(self.library.watch(self.reload_interval), name="flow-reload")
            dispatcher = asyncio.create_task(self._dispatch(events), name="event-dispatch")
            collector = None
            if self.config.xapi.enabled:  # the PBX's configuration, on the same token
                xs = self.config.xapi
                self.xapi = XapiCache(XapiClient.sharing(pbx), interval=xs.refresh_seconds, retry=xs.retry_seconds,
                                      calls_interval=xs.calls_seconds)
                self.metrics.xapi_cache = self.xapi
                await self.xapi.start()
            try:  # from here on, whatever fails: the tasks end and the collector gives GC back
                if self.paced_gc:  # full collections when the audio is topped up (ivr/worker/gcpacing.py)
                    p = pbx.cfg
                    collector = PacedCollector(pbx.top_up_outbound, registry=self.metrics.registry,
                                               slack_ms=slack_ms(p.outbound_lead_ms, p.outbound_batch_frames),
                                               streams=pbx.outbound_stream_count, lead_ms=p.outbound_lead_ms)
                    collector.start()
                await self._inherit(pbx)
                self._take_existing(pbx)
                self.ready.set()
                log.info("worker ready: route points %s, %d flow(s)", ", ".join(self.config.route_points),
                         len(self.config.routes))
                await stop.wait()
            finally:
                try:
                    await self.drain(self.config.drain_timeout)
                finally:  # after the drain: calls still play audio while it lasts
                    if collector is not None:
                        collector.stop()
                watcher.cancel()
                dispatcher.cancel()
                events.close()
                if self.xapi is not None:
                    await self.xapi.stop()
                for task in (watcher, dispatcher):
                    try:
                        await task
                    except (asyncio.CancelledError, Exception):
                        pass
                self.ready.clear()
                self.pbx = None

    async def _connect(self, client: PbxClient, stop: asyncio.Event) -> PbxClient | None:
        """Start ``client`` (it retries an unreachable PBX forever), or give up when ``stop``
        is set first: SIGTERM/SIGINT must work before the first connection too (an unreachable
        PBX, a certificate we reject), or a service manager waits out its stop timeout."""
        starting = asyncio.ensure_future(client.start())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if starting.done():
            starting.result()  # AuthenticationError and the like reach the caller
            return client
        starting.cancel()  # PbxClient.start closes what it opened
        await asyncio.gather(starting, return_exceptions=True)
        await client.close()
        log.info("stopped before the first connection to the PBX")
        return None

    def _check_route_points(self, pbx: PbxClient) -> None:
        known = {dn.dn for dn in pbx.state.dns.values()}
        for rp in self.config.route_points:
            if rp not in known:
                log.warning("route point %s is not among the DNs this API client controls (%s)",
                            rp, ", ".join(sorted(known)) or "none")

    async def _inherit(self, pbx: PbxClient) -> None:
        """Read the checkpoints a previous owner left. Calls still on our route points resume
        at their step when they are taken; calls that ended while nobody owned them get
        their one final record here."""
        try:
            left = await self.checkpoints.load_all()
        except LeaseStoreError as exc:
            log.warning("takeover: cannot read checkpoints (%s); calls on the route points start their flows", exc)
            return
        ours = set(self.config.route_points)
        inherited = 0
        for checkpoint in left.values():
            if checkpoint.route_point not in ours:
                continue
            if pbx.state.participant(checkpoint.route_point, checkpoint.participant_id) is not None:
                self.legs.get_or_add(checkpoint.route_point, checkpoint.participant_id).checkpoint = checkpoint
                inherited += 1
                continue
            self._record_orphan(checkpoint)
        if inherited:
            log.info("takeover: %d call(s) in progress left by a previous owner", inherited)

    def _record_orphan(self, checkpoint: Checkpoint) -> None:
        """A call whose owner died and that ended before anyone took it over."""
        position = checkpoint.position
        record = CallRecord(call_id=checkpoint.call_id, route_point=checkpoint.route_point,
                            participant_id=checkpoint.participant_id, caller_number=checkpoint.caller_number,
                            started_at=checkpoint.started_at)
        record.taken_over = {"from": checkpoint.owner, "resumed": False}
        if position is not None and position.waiting_for == "transfer":
            record.finish(Outcome.TRANSFERRED, "a transfer was in progress when its worker stopped; "
                          "the call left the route point before another took over")
        else:
            record.finish(Outcome.CALLER_HANGUP, "ended while no worker owned the route point")
        self.checkpoints.forget(checkpoint.call_id)
        self._finish_record(record, was_active=False)

    def _take_existing(self, pbx: PbxClient) -> None:
        """Calls already waiting on our route points when the worker starts are taken too."""
        for rp in self.config.route_points:
            for participant in pbx.state.participants(rp):
                self._maybe_start(rp, participant)

    def abandon(self, why: str) -> None:
        """This process may no longer talk to the PBX (its lease is lost): fetch no more tokens
        and drain at once. Calls in progress stay on the PBX, for the new owner."""
        self._abandoned = why
        if self.pbx is not None:
            self.pbx.tokens.fence(why)

    async def hand_over(self) -> None:
        """A standby will take the calls (SIGTERM with a standby waiting, docs/ha.md): send
        every call's newest checkpoint, then let go of the calls without hanging up or
        writing their records; the drain that follows is immediate."""
        self._abandoned = "handed over to a standby"
        self.draining = True  # no new calls from here: the standby takes them
        flush = getattr(self.checkpoints, "flush", None)
        if flush is not None:
            try:
                await asyncio.wait_for(flush(), 2.0)
            except (TimeoutError, LeaseStoreError) as exc:
                log.warning("hand-over: checkpoints not all saved (%s); those calls start their flows again", exc)
        log.info("hand-over: %d call(s) left to the standby", len(self.calls))

    async def drain(self, timeout: float) -> None:
        """Stop taking calls; let calls in progress finish for up to ``timeout`` seconds."""
        if self._abandoned is not None:
            timeout = 0.0
        self.draining = True
        pending = [leg.task for leg in self.legs if leg.task is not None and not leg.task.done()]
        if pending:
            log.info("draining: waiting up to %.0f s for %d call(s)", timeout, len(pending))
            _done, still = await asyncio.wait(pending, timeout=timeout)
            for task in still:
                task.cancel()  # the call task records Outcome.DRAINED and drops the leg
            if still:
                await asyncio.wait(still, timeout=5)
        log.info("drained")

    # --- events -----------------------------------------------------------------------------

    async def _dispatch(self, events: Any) -> None:
        async for event in events:
            try:
                self._handle(event)
            except Exception:  # one bad event must not stop the worker
                log.exception("error while handling %r", event)

    def _handle(self, event: Any) -> None:
        if isinstance(event, ParticipantUpdated):
            leg = self.legs.get((event.dn, event.participant.id))
            if leg is not None and leg.call is not None:
                leg.call.on_updated(event.participant)
            elif event.dn in self.config.route_points:
                self._maybe_start(event.dn, event.participant)
        elif isinstance(event, ParticipantRemoved):
            leg = self.legs.get((event.dn, event.participant_id))
            if leg is None:
                return
            if leg.call is not None:
                leg.call.on_removed()
            if leg.answered is not None and not leg.answered.done():
                leg.answered.set_result(False)
            leg.early_digits.clear()  # a Call not yet made gets none of them: the caller is gone
            leg.removed = True
            if leg.task is None or leg.task.done():
                self.legs.forget(leg)  # else when its task ends
        elif isinstance(event, DtmfReceived):
            leg = self.legs.get((event.dn, event.participant_id))
            if leg is not None and leg.call is not None:
                leg.call.on_pbx_digit(event.digits)
            elif event.dn in self.config.route_points:
                # Keys can overtake the participant's first Upsert: keep them for its call (a
                # few: an id no Upsert ever names must not grow without bound).
                early = self.legs.get_or_add(event.dn, event.participant_id).early_digits
                if len(early) < MAX_EARLY_DIGITS:
                    early.append(event.digits)
        elif isinstance(event, Resynced):
            assert self.pbx is not None
            for leg in self.legs:
                if leg.call is not None and self.pbx.state.participant(*leg.key) is None:
                    # Its Remove event was missed (socket down, PBX restarted): say so.
                    leg.call.on_removed("the leg was gone at a resync (missed while the event socket was down)")
                elif leg.state is LegState.OFFERED and leg.task is None and self.pbx.state.participant(*leg.key) is None:
                    self.legs.forget(leg)  # only keys ever named it, and the PBX has no such leg
            self._take_existing(self.pbx)

    def _maybe_start(self, rp: str, participant: ParticipantInfo) -> None:
        leg = self.legs.get((rp, participant.id))
        if (leg is not None and leg.claimed) or participant.status not in _TAKE:
            return
        if leg is not None and leg.state is LegState.DIALLING and participant.status != ParticipantStatus.CONNECTED:
            return  # a call we dialled: its flow starts when the other side answers
        if leg is None:
            leg = self.legs.get_or_add(rp, participant.id)
        leg.move(LegState.CLAIMED)
        if leg.answered is not None and not leg.answered.done():
            leg.answered.set_result(True)
        if self.draining or self.legs.running >= self.config.max_calls:
            why = "draining" if self.draining else f"at max_calls={self.config.max_calls}"
            task = asyncio.create_task(self._overflow(participant, why), name=f"overflow-{participant.id}")
        else:
            task = asyncio.create_task(self._run_call(leg, participant), name=f"call-{participant.callid}")
        leg.task = task
        task.add_done_callback(partial(self._task_done, leg))

    def _task_done(self, leg: Leg, _task: asyncio.Task[None]) -> None:
        if leg.state is not LegState.ENDED:
            leg.move(LegState.ENDED)  # an overflow, or a call task that failed before its Call existed
        if leg.removed:
            self.legs.forget(leg)

    # --- outbound ---------------------------------------------------------------------------

    async def dial(self, destination: str, flow_path: str, *, route_point: str | None = None, timeout: float = 60,
                   params: dict[str, Any] | None = None, keep_variables: bool = False) -> CallRecord:
        """Call ``destination`` from the route point's device; run the flow (with ``params``)
        once it answers. The record's ``dial_status`` says answered, busy, no_answer,
        not_registered or failed; with ``keep_variables`` its ``variables`` hold what the flow set."""
        from ivr.worker.library import FlowLibrary

        assert self.pbx is not None, "the worker is not running"
        rp = route_point or self.config.route_points[0]
        one = FlowLibrary([self.config.path(flow_path)])
        one.load_all()
        flow = one.get(self.config.path(flow_path))
        dn = self.pbx.state.dn(rp)
        device = dn.devices[0].device_id if dn and dn.devices else None
        try:
            if device:
                result = await self.pbx.rest.device_makecall(rp, device, destination, timeout=max(1, int(timeout)))
            else:
                result = await self.pbx.rest.makecall(rp, destination, timeout=max(1, int(timeout)))
        except PbxError as exc:
            record = CallRecord(call_id="-", route_point=rp, participant_id=0, caller_number=destination,
                                direction="outbound", dial_status="failed")
            record.finish(Outcome.ERROR, f"makecall to {destination} failed: {exc}")
            return record
        if not result.ok or result.result is None:
            reason = str(result.reason or result.reasontext or result.status)
            record = CallRecord(call_id="-", route_point=rp, participant_id=0, caller_number=destination,
                                direction="outbound", dial_status=failure_status(reason))
            record.finish(Outcome.ERROR, f"makecall to {destination} failed: {reason}")
            return record
        made = result.result
        leg = self.legs.get_or_add(rp, made.id)  # it may exist already: keys pressed as it was made
        if leg.state is not LegState.OFFERED:  # its Upsert (answered) overtook makecall's answer
            record = CallRecord(call_id=str(made.callid), route_point=rp, participant_id=made.id,
                                caller_number=destination, direction="outbound", dial_status="failed")
            record.finish(Outcome.ERROR, f"makecall to {destination}: the leg was taken as a call in before "
                          "makecall answered")
            return record
        leg.move(LegState.DIALLING)
        leg.dialled = Dialled(flow, dict(params or {}), keep_variables)
        loop = asyncio.get_running_loop()
        waiter = leg.record_waiter = loop.create_future()
        answered = leg.answered = loop.create_future()  # True when its flow starts, False if the leg goes away
        current = self.pbx.state.participant(rp, made.id)
        if current is not None:
            self._maybe_start(rp, current)
        try:
            ok = await asyncio.wait_for(asyncio.shield(answered), timeout + 5)
        except TimeoutError:
            ok = None
        finally:
            leg.answered = None
        if not ok:
            leg.dialled = leg.record_waiter = None
            if leg.state is LegState.DIALLING:
                leg.move(LegState.OFFERED)  # still there: ours no more (it is dropped below)
            record = CallRecord(call_id=str(made.callid), route_point=rp, participant_id=made.id,
                                caller_number=destination, direction="outbound", dial_status="no_answer")
            if ok is False:
                record.finish(Outcome.CALLER_HANGUP, "not answered")
            else:
                record.finish(Outcome.ERROR, f"no answer within {timeout:.0f} s")
                try:
                    await self.pbx.rest.drop(rp, made.id)
                except PbxError:
                    pass
            return record
        return await waiter

    # --- one call ---------------------------------------------------------------------------

    def _new_record(self, participant: ParticipantInfo) -> CallRecord:
        return CallRecord(
            call_id=str(participant.callid or participant.id),
            route_point=participant.dn,
            participant_id=participant.id,
            caller_number=participant.party_caller_id or participant.party_dn,
            caller_name=participant.party_caller_name,
            did=participant.party_did,
        )

    async def _overflow(self, participant: ParticipantInfo, why: str) -> None:
        """A call we will not run a flow for: send it to the overflow destination, or refuse it."""
        record = self._new_record(participant)
        current_call_id.set(record.call_id)
        assert self.pbx is not None
        target = self.config.overflow
        try:
            if target:
                # A PBX that answers routeto once delivered or failed says which it was.
                res = await self.pbx.rest.routeto(participant.dn, participant.id, target, timeout=OVERFLOW_RING_S)
                if res.ok:
                    record.transferred_to = target
                    record.finish(Outcome.OVERFLOW, f"{why}: routed to {target}")
                else:
                    await self.pbx.rest.drop(participant.dn, participant.id)
                    record.finish(Outcome.OVERFLOW, f"{why}: overflow {target} failed ({res.reason or res.reasontext}), dropped")
            else:
                await self.pbx.rest.drop(participant.dn, participant.id)
                record.finish(Outcome.OVERFLOW, f"{why}: no overflow destination, dropped")
        except PbxError as exc:
            record.errors.append(str(exc))
            record.finish(Outcome.ERROR, f"{why}: overflow failed: {exc}")
        log.warning("call not taken (%s): %s", why, record.outcome_detail)
        if self.tracing is not None:
            self.tracing.start(record).finish(record)
        self._finish_record(record, was_active=False)

    async def _run_call(self, leg: Leg, participant: ParticipantInfo) -> None:
        assert self.pbx is not None
        pbx = self.pbx
        rp = participant.dn
        record = self._new_record(participant)
        current_call_id.set(record.call_id)
        dialled = leg.dialled
        if dialled is not None:
            record.direction, record.dial_status = "outbound", "answered"
        route = None if dialled else self.config.route_for(rp, record.did, record.caller_number)
        media = CallMedia(pbx, rp, participant.id, settings=MediaSettings(), metrics=self.metrics)
        call = Call(
            pbx,
            participant,
            media,
            audio_dirs=[self.config.path(d) for d in self.config.audio_dirs],
            recordings_dir=self.config.path(self.config.recordings_dir),
            speech=self.speech,
            record=record,
        )
        call.xapi = self.xapi  # the PBX's configuration, for hours/directory/presence steps
        trace = self.tracing.start(record) if self.tracing is not None else None
        if trace is not None:
            call.observers.add(trace)
        self.legs.attach(leg, call)
        early, leg.early_digits = leg.early_digits, []
        for digits in early:
            call.on_pbx_digit(digits)
        self.metrics.call_started()
        started = asyncio.get_running_loop().time()
        try:
            if dialled is not None:
                flow = dialled.flow
                record.answered_at = time.time()  # a dialled call starts when the other side answers
            elif route is None:
                log.warning("no route for call to %s (DID %r, caller %r)", rp, record.did, record.caller_number)
                await self._fallback(call, "no route")
                return
            else:
                flow = self.library.get(self.config.path(route.flow))
            record.flow = str(flow.path)
            record.flow_version = flow.version
            if dialled is not None:  # the party is the number dialled, the route point dialled it
                log.info("outbound call from %s to %s: flow %s (version %s)", rp, record.caller_number,
                         flow.path.name, flow.version)
            else:
                log.info("call from %s to %s: flow %s (version %s)", record.caller_number, rp, flow.path.name,
                         flow.version)
            if self.on_call_started:
                self.on_call_started(call)
            params = dict(route.params) if route is not None and route.params else None
            if dialled is not None:
                params = dialled.params or None
            # YAML flows resume at their step, Python flows by replaying their journal (docs/ha.md)
            resume = self._resume_point(leg, record, flow.version)
            await flow.runnable.run(call, params, resume=resume, on_position=self._checkpointer(record))
            if not call.hung_up:
                await call.hangup()  # the flow ran to its end
        except CallHangup:
            record.finish(Outcome.CALLER_HANGUP)
        except asyncio.CancelledError:
            if self._abandoned is not None:
                return  # handed over: the call stays on the PBX, its checkpoint with the next owner
            await self._fallback(call, "cut at the drain deadline", Outcome.DRAINED)
        except (FlowLoadError, CallError) as exc:  # a flow author's mistake: one line is enough
            log.error("call failed: %s", exc)
            record.errors.append(f"{type(exc).__name__}: {exc}")
            if trace is not None:
                trace.record_exception(exc)
            await self._fallback(call, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # the flow's own on_error already ran (or there was none)
            log.exception("call failed: %s", exc)
            record.errors.append(f"{type(exc).__name__}: {exc}")
            if trace is not None:
                trace.record_exception(exc)
            failed = Outcome.PBX_ERROR if isinstance(exc, PbxError) else Outcome.ERROR  # the PBX's doing
            await self._fallback(call, f"{type(exc).__name__}: {exc}", failed)
        finally:
            if dialled is not None and dialled.keep_variables:
                record.variables = plain(getattr(call, "vars", None) or {})
            await media.close()
            self.legs.detach(leg)
            if self._abandoned is not None and record.outcome is None:
                # Handed over: no record here; the next owner writes the call's one final record.
                self.metrics.active_calls.dec()
            else:
                self._end_call(record, media, started, trace)

    def _end_call(self, record: CallRecord, media: CallMedia, started: float, trace: Any) -> None:
        """The call ended in this process: its checkpoint goes, its one record is written."""
        self.checkpoints.forget(record.call_id)
        if record.outcome is None:
            record.finish(Outcome.IVR_HANGUP)
        record.metrics.update(media.stats())
        record.metrics["flow_seconds"] = round(asyncio.get_running_loop().time() - started, 3)
        if trace is not None:
            trace.finish(record)
        self._finish_record(record)

    def _resume_point(self, leg: Leg, record: CallRecord, version: str) -> FlowPosition | None:
        """Where a call a previous owner left goes on: its checkpoint's position when the flow
        is the same version; else None (the flow starts again). Marks the record taken over."""
        checkpoint, leg.checkpoint = leg.checkpoint, None
        if checkpoint is None or checkpoint.call_id != record.call_id:
            return None
        record.backdate(checkpoint.started_at)
        position = checkpoint.position
        resumable = position is not None and position.version == version
        record.taken_over = {"from": checkpoint.owner, "resumed": resumable,
                             "checkpoint_age_s": round(max(0.0, time.time() - checkpoint.at), 3)}
        if position is not None and not resumable:
            log.warning("takeover: call %s: the flow changed (version %s, checkpoint %s); it starts again",
                        record.call_id, version, position.version)
        elif position is not None:
            record.taken_over["step"] = [[*f.branch, f.at] for f in position.frames]
            log.info("takeover: call %s from %s resumes at %s", record.call_id, checkpoint.owner,
                     "/".join(f"{'.'.join(f.branch)}[{f.at}]" for f in position.frames))
        return position if resumable else None

    def _checkpointer(self, record: CallRecord) -> PositionObserver:
        def checkpoint(position: FlowPosition) -> None:
            self._checkpoint(record, position)

        return checkpoint

    def _checkpoint(self, record: CallRecord, position: FlowPosition | None) -> None:
        # model_construct: every field is already of its type (the position was validated as
        # it was made); this runs after every step of every call.
        self.checkpoints.save(Checkpoint.model_construct(
            call_id=record.call_id, route_point=record.route_point, participant_id=record.participant_id,
            owner=self.owner, at=time.time(), started_at=record.started_at, caller_number=record.caller_number,
            position=position))

    async def _fallback(self, call: Call, why: str, outcome: str = Outcome.ERROR) -> None:
        """Last resort for a call its flow could not place: the overflow destination, else hang up.

        The record then says ``fallback`` (an error, but the overflow took the caller) or
        ``outcome`` (``error``, or ``drained`` at the drain deadline), with ``why`` as detail.
        """
        record = call.call_record
        if call.hung_up:
            return  # the caller is gone; the outcome is already recorded
        target = self.config.overflow
        try:
            if target:
                result = await asyncio.wait_for(call.transfer(target, timeout=OVERFLOW_RING_S),
                                                timeout=call.pbx.rest.offer_time_limit(OVERFLOW_RING_S) + 5)
                if result.answered:
                    record.outcome = Outcome.FALLBACK if outcome in (Outcome.ERROR, Outcome.PBX_ERROR) else outcome
                    record.outcome_detail = f"{why}; sent to {target}"
                    return
            await call.hangup()
        except (TimeoutError, CallHangup):
            pass
        except PbxError as exc:
            record.errors.append(f"fallback failed: {exc}")
        except Exception:  # the fallback must not raise out of the call task
            log.exception("fallback failed")
        record.outcome = outcome
        record.outcome_detail = why
        if record.ended_at is None:
            record.finish(outcome, why)

    def _finish_record(self, record: CallRecord, *, was_active: bool = True) -> None:
        try:
            self.records.write(record)
        except OSError as exc:
            log.error("cannot write call record: %s", exc)
        self.completed.append(record)
        del self.completed[: -self.keep_records]
        leg = self.legs.get((record.route_point, record.participant_id))
        waiter = leg.record_waiter if leg is not None else None
        if leg is not None and waiter is not None:
            leg.record_waiter = None
            if not waiter.done():
                waiter.set_result(record)
        self.metrics.call_ended(record, was_active=was_active)
        log.info("call ended: %s %s (%.1f s)", record.outcome, record.outcome_detail, record.duration)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT start a graceful drain."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
