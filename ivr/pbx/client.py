"""``PbxClient``: the single entry point to one 3CX V20 Call Control API.

``async with PbxClient(cfg) as pbx`` fetches a token, opens the event socket and waits
for the first resync. An unreachable PBX is retried with backoff and logged (cancel the
``async with`` to give up); rejected credentials raise :class:`AuthenticationError`.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncio
import logging
import aiohttp

from .auth import TokenManager
from .config import PbxConfig
from .errors import ForbiddenError, NotFoundError, PbxError
from .events import (
    Connected,
    Disconnected,
    DtmfReceived,
    EventHub,
    ParticipantRemoved,
    PbxEvent,
    Subscription,
)
from .eventsocket import EventStream
from .inbound import InboundAudio
from .models import EventType, WsMessage, parse_entity
from .outbound import OutboundAudio, OutboundStats
from .rest import RestClient
from .state import PbxState
from .tick import SharedTick

log = logging.getLogger(__name__)


class PbxClient:
    """One connection to a PBX: REST, the event socket, the state mirror and audio streams."""

    def __init__(self, cfg: PbxConfig) -> None:
        self.cfg = cfg
        self._hub = EventHub()
        self.state = PbxState(self._publish)
        self._session: aiohttp.ClientSession | None = None
        self._tokens: TokenManager | None = None
        self._rest: RestClient | None = None
        self._stream: EventStream | None = None
        self._fetching: dict[tuple[str, int], asyncio.Task[None]] = {}  # Upsert GETs in flight
        self._refetch: set[tuple[str, int]] = set()
        self._fetch_slots: asyncio.Semaphore | None = None  # bounds the Upsert GETs in flight
        self._task: asyncio.Task[None] | None = None
        self._inbound: dict[tuple[str, int], list[InboundAudio]] = {}
        # One timer for all media: pacers send frames due within the same outbound_tick_ms
        # together, and each inbound stream is polled every inbound_block_ms on the same grid
        # (each from its own start, so calls' audio analysis spreads over the block).
        self._outbound_tick = SharedTick(cfg.outbound_tick_ms / 1000) if cfg.outbound_tick_ms else None
        self._inbound_tick = self._outbound_tick or SharedTick(0.005)
        self._outbound: dict[tuple[str, int], list[OutboundAudio]] = {}
        # Pacer lateness of the outbound streams already forgotten (see pacer_lateness()).
        self._gone_lateness = OutboundStats()

    def __repr__(self) -> str:
        return f"PbxClient(url={self.cfg.url!r}, client_id={self.cfg.client_id!r})"

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> PbxClient:
        if self._task is None:  # not started yet (a caller may start() first, to race it)
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect and wait for the first resync (retrying an unreachable PBX forever)."""
        if self._task is not None:
            raise RuntimeError("PbxClient already started")
        # REST only (the audio streams open sockets of their own): capped, so that a peer that
        # floods us with events cannot make us open sockets without end; requests over the cap
        # wait for a free connection.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.cfg.rest_max_connections, limit_per_host=0)
        )
        self._fetch_slots = asyncio.Semaphore(self.cfg.participant_fetches)
        self._tokens = TokenManager(self._session, self.cfg)
        self._rest = RestClient(self._session, self._tokens, self.cfg)
        self._stream = EventStream(
            self.cfg,
            self._tokens,
            resync=self._resync,
            handle=self._handle,
            on_connected=lambda: self._publish(Connected()),
            on_disconnected=lambda reason: self._publish(Disconnected(reason)),
        )
        self._task = asyncio.get_running_loop().create_task(self._stream.run())
        try:
            await asyncio.wait({self._stream.ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
            if self._stream.ready.done():
                self._stream.ready.result()  # raises AuthenticationError
            else:
                self._task.result()
                raise RuntimeError("event socket stopped before the first resync")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close every stream, the socket and the HTTP session. Idempotent."""
        for streams in list(self._outbound.values()):
            for out in streams:
                await out.close()
        for streams in list(self._inbound.values()):
            for inb in streams:
                await inb.close()
        for streams in self._outbound.values():  # after the awaits: a call that ended meanwhile is counted already
            self._forget_outbound(streams)
        self._outbound.clear()
        self._inbound.clear()
        for task in list(self._fetching.values()):
            task.cancel()
        self._fetching.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._tokens is not None:
            await self._tokens.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._hub.close()

    # --- public API --------------------------------------------------------------------------

    @property
    def rest(self) -> RestClient:
        """One method per endpoint and action."""
        if self._rest is None:
            raise RuntimeError("PbxClient not started: use 'async with PbxClient(cfg)'")
        return self._rest

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session (the Configuration API client shares it, with the token manager)."""
        if self._session is None:
            raise RuntimeError("PbxClient not started: use 'async with PbxClient(cfg)'")
        return self._session

    @property
    def tokens(self) -> TokenManager:
        """The token manager (``tokens.refreshes`` is a metric)."""
        if self._tokens is None:
            raise RuntimeError("PbxClient not started: use 'async with PbxClient(cfg)'")
        return self._tokens

    @property
    def event_stream(self) -> EventStream:
        """The socket runner (its counters: connects, resyncs, gaps, malformed)."""
        if self._stream is None:
            raise RuntimeError("PbxClient not started: use 'async with PbxClient(cfg)'")
        return self._stream

    def events(self) -> Subscription:
        """A new subscription to typed events, from now on: ``async for ev in pbx.events()``."""
        return self._hub.subscribe()

    def open_inbound(
        self, dn: str, participant_id: int, *, media_timeout: float | None = None
    ) -> InboundAudio:
        """The caller's audio: ``stream.start(on_audio)``, or ``async for chunk in stream``."""
        assert self._session is not None and self._tokens is not None
        stream = InboundAudio(
            self._tokens,
            self.cfg,
            dn,
            participant_id,
            exists=lambda: self._exists(dn, participant_id),
            media_timeout=media_timeout,
            tick=self._inbound_tick,
            block_s=self.cfg.inbound_block_ms / 1000,
        )
        self._inbound.setdefault((dn, participant_id), []).append(stream)
        return stream

    def open_outbound(
        self,
        dn: str,
        participant_id: int,
        lead_ms: int | None = None,
        *,
        media_timeout: float | None = None,
        source: Callable[[], bytes | None] | None = None,
    ) -> OutboundAudio:
        """Audio to the caller: ``write(pcm)``, ``clear()``, ``drain()``, ``close()``."""
        assert self._session is not None and self._tokens is not None
        stream = OutboundAudio(
            self._tokens,
            self.cfg,
            dn,
            participant_id,
            exists=lambda: self._exists(dn, participant_id),
            lead_ms=lead_ms,
            media_timeout=media_timeout,
            source=source,
            tick=self._outbound_tick,
        )
        stream.start()
        self._outbound.setdefault((dn, participant_id), []).append(stream)
        return stream

    def top_up_outbound(self, extra_s: float) -> int:
        """:meth:`OutboundAudio.top_up` every outbound stream (before the whole process pauses,
        e.g. for a full garbage collection); returns how many had a POST to send into."""
        done = 0
        for streams in list(self._outbound.values()):
            for out in streams:
                try:
                    done += out.top_up(extra_s)
                except Exception:  # one stream's problem must not keep the others' audio short
                    log.exception("topping up the audio of %s/%s failed", out.dn, out.participant_id)
        return done

    def outbound_stream_count(self) -> int:
        """How many outbound streams the client holds now."""
        return sum(len(streams) for streams in self._outbound.values())

    def pacer_lateness(self) -> tuple[list[int], float]:
        """How late the pacers of every outbound stream so far sent their frames: counts over
        ``LATENESS_BUCKETS_MS`` (the last: later than all) and the sum of lateness in seconds."""
        total = OutboundStats()
        total.add_lateness(self._gone_lateness)
        for streams in self._outbound.values():
            for out in streams:
                total.add_lateness(out.stats)
        return total.lateness_hist, total.lateness_sum_s

    # --- internals ---------------------------------------------------------------------------

    def _publish(self, event: PbxEvent) -> None:
        self._hub.publish(event)
        if isinstance(event, ParticipantRemoved):
            self._participant_gone(event.dn, event.participant_id)

    def _participant_gone(self, dn: str, participant_id: int) -> None:
        """The call ended: end its streams (in the background; publish never blocks)."""
        key = (dn, participant_id)
        for inb in self._inbound.pop(key, []):
            asyncio.get_running_loop().create_task(inb.close())
        outs = self._outbound.pop(key, [])
        for out in outs:
            out.ended = True
            asyncio.get_running_loop().create_task(out.close())
        self._forget_outbound(outs)

    def _forget_outbound(self, streams: list[OutboundAudio]) -> None:
        for out in streams:
            self._gone_lateness.add_lateness(out.stats)

    async def _exists(self, dn: str, participant_id: int) -> bool:
        """Whether the participant is still there, asking the PBX (authoritative)."""
        try:
            await self.rest.get_participant(dn, participant_id)
            return True
        except (NotFoundError, ForbiddenError):
            return False

    async def _resync(self) -> None:
        self.state.apply_snapshot(await self.rest.get_all())

    async def _handle(self, msg: WsMessage) -> None:
        event = msg.event
        kind = event.kind
        if kind in (EventType.RESPONSE, EventType.PROMPT_PLAYBACK_FINISHED):
            return
        if kind is None:
            log.debug("event socket: unknown event_type %s on %s", event.event_type, event.entity)
            return
        target = parse_entity(event.entity)
        if target is None:
            await self._handle_dn_path(kind, event.entity)
            return
        dn, what, ident = target
        if what == "participants":
            try:
                pid = int(ident)
            except ValueError:
                log.warning("event socket: participant id %r is not a number in %s", ident, event.entity)
                return
            if kind == EventType.UPSERT:
                self._schedule_refresh(dn, pid)
            elif kind == EventType.REMOVE:
                self._cancel_refresh(dn, pid)
                self.state.remove_participant(dn, pid)
            elif kind == EventType.DTMF_STRING:
                for digit in event.dtmf_digits:
                    if not digit.isspace():
                        self._publish(DtmfReceived(dn, pid, digit))
        elif what == "devices":
            if kind == EventType.UPSERT:
                try:
                    self.state.upsert_device(dn, await self.rest.get_device(dn, ident))
                except NotFoundError:
                    self.state.remove_device(dn, ident)
            elif kind == EventType.REMOVE:
                self.state.remove_device(dn, ident)

    # Upserts are fetched in the background, one fetch at a time per participant, so that a
    # slow or retried GET never holds up the events behind it (DTMF above all).

    def _schedule_refresh(self, dn: str, pid: int) -> None:
        key = (dn, pid)
        task = self._fetching.get(key)
        if task is not None and not task.done():
            self._refetch.add(key)  # fetch once more when the running fetch ends (coalesces repeats)
            return
        self._fetching[key] = asyncio.get_running_loop().create_task(self._refresh_loop(dn, pid))

    def _cancel_refresh(self, dn: str, pid: int) -> None:
        """A Remove wins over a fetch still in flight (its answer would resurrect the leg)."""
        key = (dn, pid)
        self._refetch.discard(key)
        task = self._fetching.pop(key, None)
        if task is not None:
            task.cancel()

    async def _refresh_loop(self, dn: str, pid: int) -> None:
        key = (dn, pid)
        try:
            while True:
                self._refetch.discard(key)
                try:
                    await self._refresh_participant(dn, pid)
                except PbxError as exc:
                    log.warning("participant %s/%s not refreshed (%s); resyncing", dn, pid, exc)
                    if self._stream is not None:
                        self._stream.mark_stale()
                    return
                if key not in self._refetch:
                    return
        finally:
            if self._fetching.get(key) is asyncio.current_task():
                del self._fetching[key]

    async def _refresh_participant(self, dn: str, pid: int) -> None:
        assert self._fetch_slots is not None
        try:
            async with self._fetch_slots:  # a flood of Upserts queues here, not in open sockets
                participant = await self.rest.get_participant(dn, pid)
        except NotFoundError:
            self.state.remove_participant(dn, pid)  # gone before we asked
            return
        except ForbiddenError:
            log.info("event socket: participant %s/%s is not controlled by this client", dn, pid)
            return
        self.state.upsert_participant(dn, participant)

    async def _handle_dn_path(self, kind: EventType, entity: str) -> None:
        parts = entity.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "callcontrol" and kind == EventType.UPSERT:
            from urllib.parse import unquote

            dn = unquote(parts[1])
            try:
                self.state.upsert_dn(await self.rest.get_dn(dn))
            except NotFoundError:
                pass
            return
        log.debug("event socket: ignored event %s on %r", kind.name, entity)
