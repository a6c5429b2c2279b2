"""``XapiCache``: the PBX's configuration, refreshed in the background.

A flow never waits on the PBX for what the cache has seen: ``cache.snapshot`` is the last
complete read (office hours, holidays, departments with members, users, queues with agents,
ring groups with members), swapped in whole so readers never see half of a refresh. When a
refresh fails the last snapshot keeps serving; the cache logs a warning once per outage, counts
the failure and says it is stale (``ivr_xapi_stale`` 1) until a refresh succeeds again.

Active calls change by the second: they are read on their own, shorter period
(``calls_interval``, 5 s) into ``cache.calls`` (a :class:`CallsSnapshot`: the queues' waiting
counters), and likewise keep serving their last read while the PBX cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..errors import PbxError
from .calls import CallsSnapshot
from .client import XapiClient
from .models import Group, Holiday, OfficeHours, Queue, RingGroup, User
from .odata import Query

__all__ = ["PbxSnapshot", "XapiCache", "XapiCacheCollector"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PbxSnapshot:
    """One complete read of the PBX's configuration; ``fetched_at`` is wall-clock (time.time)."""

    office_hours: OfficeHours
    holidays: tuple[Holiday, ...]
    groups: tuple[Group, ...]
    users: tuple[User, ...]
    queues: tuple[Queue, ...]
    ring_groups: tuple[RingGroup, ...]
    fetched_at: float
    _users_by_number: dict[str, User] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._users_by_number.update({u.Number: u for u in self.users if u.Number})

    def user(self, number: str) -> User | None:
        """The user with extension ``number``."""
        return self._users_by_number.get(str(number))

    def group(self, name: str) -> Group | None:
        """The department named ``name`` (case and surrounding spaces ignored), or numbered so."""
        want = name.strip().casefold()
        for g in self.groups:
            if (g.Name or "").strip().casefold() == want or (g.Number and g.Number == name.strip()):
                return g
        return None

    def queue(self, number_or_name: str) -> Queue | None:
        """The queue with this number, else this name (case ignored)."""
        text = number_or_name.strip()
        for q in self.queues:
            if q.Number == text:
                return q
        want = text.casefold()
        return next((q for q in self.queues if (q.Name or "").strip().casefold() == want), None)

    def directory(self) -> list[User]:
        """Users a caller may find by name: enabled and not hidden from the phonebook."""
        return [u for u in self.users if u.listed]


class XapiCache:
    """Background refresh of a :class:`PbxSnapshot` every ``interval`` seconds (``retry`` after
    a failure), and of the active calls every ``calls_interval`` seconds (0: not read)."""

    def __init__(
        self,
        client: XapiClient,
        *,
        interval: float = 30.0,
        retry: float | None = None,
        calls_interval: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"XapiCache: interval must be > 0, got {interval}")
        if calls_interval < 0:
            raise ValueError(f"XapiCache: calls_interval must be >= 0 (0: off), got {calls_interval}")
        self.client = client
        self.interval = interval
        self.retry = min(interval, 5.0) if retry is None else retry
        self.calls_interval = calls_interval
        self._wall = wall_clock
        self._snapshot: PbxSnapshot | None = None
        self._calls: CallsSnapshot | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self.refreshes = 0  # successful refreshes (a metric)
        self.failures = 0  # failed refreshes (a metric)
        self.stale = False  # the last refresh failed: serving older values
        self.last_error = ""
        self.calls_failures = 0  # failed reads of the active calls (a metric)
        self.calls_stale = False  # the last read of the active calls failed: serving older counts

    @property
    def snapshot(self) -> PbxSnapshot | None:
        """The last complete read, or None before the first one; never waits."""
        return self._snapshot

    def age(self) -> float | None:
        """Seconds since the snapshot was read (None before the first)."""
        return None if self._snapshot is None else max(0.0, self._wall() - self._snapshot.fetched_at)

    @property
    def calls(self) -> CallsSnapshot | None:
        """The active calls as last read, or None (not read yet, or ``calls_interval`` 0); never waits."""
        return self._calls

    def calls_age(self) -> float | None:
        """Seconds since the active calls were read (None before the first read)."""
        return None if self._calls is None else max(0.0, self._wall() - self._calls.fetched_at)

    def now(self) -> float:
        """The cache's wall clock (what ``fetched_at`` is measured on)."""
        return self._wall()

    async def start(self) -> None:
        """Start refreshing in the background (the first reads start at once)."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._run(), name="xapi-cache"))
            if self.calls_interval > 0:
                self._tasks.append(loop.create_task(self._run_calls(), name="xapi-active-calls"))

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until a first snapshot exists; False on timeout."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def refresh_soon(self) -> None:
        """Refresh now instead of at the next interval (e.g. an admin changed something)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        """Refreshing in the background (between ``start`` and ``stop``)."""
        return bool(self._tasks)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def refresh(self) -> PbxSnapshot:
        """Read everything once now: the configuration (raises PbxError; the old snapshot stays)
        and, when they are read at all, the active calls (a failure there is counted and logged
        as in the background, the last counts keep serving)."""
        snap = await self.refresh_config()
        if self.calls_interval > 0:
            with contextlib.suppress(PbxError):
                await self.refresh_calls()
        return snap

    async def refresh_calls(self) -> CallsSnapshot:
        """Read the active calls once and swap them in; raises PbxError (the last read stays)."""
        try:
            calls = await self.client.active_calls()
        except PbxError as exc:
            self._calls_failed(str(exc))
            raise
        read = CallsSnapshot(tuple(calls), fetched_at=self._wall())
        self._calls = read
        if self.calls_stale:
            log.warning("3CX active calls: readable again; queue counts are current")
        self.calls_stale = False
        return read

    async def refresh_config(self) -> PbxSnapshot:
        """Read the configuration once and swap the snapshot in; raises PbxError (the old stays)."""
        c = self.client
        try:
            office, holidays, groups, users, queues, rings = await asyncio.gather(
                c.office_hours(),
                c.holidays(),
                c.groups(Query(expand=("Members", "OfficeHolidays"))),
                c.users(Query(expand=("ForwardingProfiles",))),
                c.queues(Query(expand=("Agents",))),
                c.ring_groups(Query(expand=("Members",))),
            )
        except PbxError as exc:
            self._failed(str(exc))
            raise
        snap = PbxSnapshot(office, tuple(holidays), tuple(groups), tuple(users), tuple(queues), tuple(rings),
                           fetched_at=self._wall())
        self._snapshot = snap
        self.refreshes += 1
        if self.stale:
            log.warning("3CX configuration: reachable again; values are current")
        self.stale = False
        self.last_error = ""
        self._ready.set()
        return snap

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        if not self.stale:
            if self._snapshot is None:
                log.warning("3CX configuration cannot be read (%s); no values yet", reason)
            else:
                log.warning("3CX configuration cannot be read (%s); serving the values read %.0f s ago",
                            reason, self.age() or 0.0)
        self.stale = True

    def _calls_failed(self, reason: str) -> None:
        self.calls_failures += 1
        if not self.calls_stale:
            age = self.calls_age()
            log.warning("3CX active calls cannot be read (%s); %s", reason,
                        "no queue counts yet" if age is None else f"serving the counts read {age:.0f} s ago")
        self.calls_stale = True

    async def _run_calls(self) -> None:
        while True:
            try:
                await self.refresh_calls()
            except PbxError:
                pass  # counted and logged; the last counts keep serving
            except Exception as exc:  # a bug or a surprise must not end the reading
                log.exception("3CX active calls: read failed")
                self._calls_failed(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.calls_interval)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh_config()
                delay = self.interval
            except PbxError:
                delay = self.retry
            except Exception as exc:  # a bug or a surprise must not end the refreshing
                log.exception("3CX configuration refresh failed")
                self._failed(f"{type(exc).__name__}: {exc}")
                delay = self.retry
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass


class XapiCacheCollector:
    """Prometheus metrics of a cache, read at scrape time: ``registry.register(XapiCacheCollector(cache))``."""

    def __init__(self, cache: XapiCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        c = self.cache
        yield CounterMetricFamily("ivr_xapi_refreshes", "Successful reads of the 3CX configuration", value=c.refreshes)
        yield CounterMetricFamily(
            "ivr_xapi_refresh_failures", "Failed reads of the 3CX configuration (the last values keep serving)",
            value=c.failures,
        )
        yield GaugeMetricFamily("ivr_xapi_stale", "1 while the 3CX configuration served is older than the last try",
                                value=1 if c.stale else 0)
        age = c.age()
        yield GaugeMetricFamily("ivr_xapi_age_seconds", "Age of the 3CX configuration served (-1: none yet)",
                                value=-1 if age is None else age)
        calls_age = c.calls_age()
        yield GaugeMetricFamily("ivr_xapi_calls_age_seconds",
                                "Age of the 3CX active calls (queue counts) served (-1: none yet)",
                                value=-1 if calls_age is None else calls_age)
        yield CounterMetricFamily("ivr_xapi_calls_failures", "Failed reads of the 3CX active calls",
                                  value=c.calls_failures)

    def describe(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        return iter(())
