"""Prometheus metrics of one worker, on a registry of its own (several workers per process in tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ivr.pbx.outbound import LATENESS_BUCKETS_MS
from ivr.pbx.xapi import XapiCacheCollector

if TYPE_CHECKING:
    from ivr.call.record import CallRecord

# Steps whose result is a gather result (status, source) for ivr_gather_results_total.
_GATHER_STEPS = ("gather", "menu")


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_calls = Gauge("ivr_active_calls", "Calls being handled now", registry=r)
        self.calls_total = Counter("ivr_calls_total", "Calls ended, by outcome", ["outcome"], registry=r)
        self.call_seconds = Histogram(
            "ivr_call_duration_seconds", "Call duration", buckets=(5, 15, 30, 60, 120, 300, 600, 1800), registry=r
        )
        self.step_seconds = Histogram(
            "ivr_step_duration_seconds", "Flow step duration", ["step"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60), registry=r,
        )
        self.digits_total = Counter("ivr_gather_results_total", "Gather/menu results", ["status", "source"], registry=r)
        self.barge_ins = Counter("ivr_barge_ins_total", "Prompts cut by the caller", ["by"], registry=r)
        self.underruns = Counter("ivr_stream_underruns_total", "Outbound audio underruns: the PBX ran out of audio (a gap heard)", registry=r)
        # Reconnects and token refreshes are counted by the PBX client; read at scrape time.
        self.client: Any = None  # the worker's PbxClient while connected
        r.register(_ClientCollector(self))
        self.xapi_cache: Any = None  # the worker's XapiCache while it has one (xapi.enabled)
        r.register(_XapiCollector(self))
        self.checkpoints: Any = None  # the worker's checkpoint store (docs/ha.md)
        r.register(_CheckpointCollector(self))
        self.campaigns: Any = None  # the worker's CampaignManager (docs/campaigns.md)
        r.register(_CampaignCollector(self))
        self.adapter_seconds = Histogram(
            "ivr_adapter_latency_seconds", "Speech adapter latency", ["kind", "name"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5), registry=r,
        )

    def call_started(self) -> None:
        self.active_calls.inc()

    def call_ended(self, record: "CallRecord", *, was_active: bool = True) -> None:
        if was_active:
            self.active_calls.dec()
        self.calls_total.labels(record.outcome or "unknown").inc()
        self.call_seconds.observe(record.duration)
        underruns = record.metrics.get("underruns", 0)
        if underruns:
            self.underruns.inc(underruns)
        for step in record.steps:
            self.step_seconds.labels(step.step).observe(step.duration)
            result = step.result if isinstance(step.result, dict) else {}
            if step.step in _GATHER_STEPS and result.get("status"):
                self.digits_total.labels(result["status"], result.get("source") or "dtmf").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ClientCollector:
    """ivr_event_socket_reconnects_total, ivr_token_refreshes_total, ivr_token_revocations_total and
    ivr_pacer_lateness_seconds from the PBX client's own counters, read at scrape time (a
    client started again, after a worker restart, counts from zero). The pacers' lateness is
    summed from every stream's own histogram: nothing is done per frame for it, and two
    scrapes give the jitter in between."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        client = self.metrics.client
        reconnects = refreshes = revocations = 0
        late, late_sum = [0] * (len(LATENESS_BUCKETS_MS) + 1), 0.0
        if client is not None:
            late, late_sum = client.pacer_lateness()
            try:
                reconnects = max(0, client.event_stream.connects - 1)
                refreshes = client.tokens.refreshes
                revocations = client.tokens.revocations
            except RuntimeError:  # not started (or already closed)
                pass
        yield CounterMetricFamily("ivr_event_socket_reconnects", "Event socket reconnects", value=reconnects)
        yield CounterMetricFamily("ivr_token_refreshes", "Access tokens fetched", value=refreshes)
        yield CounterMetricFamily("ivr_token_revocations",
                                  "Tokens the PBX rejected before they expired (another process with our client id?)",
                                  value=revocations)
        buckets, seen = [], 0
        for bound, n in zip([*LATENESS_BUCKETS_MS, float("inf")], late):
            seen += n
            buckets.append(("+Inf" if bound == float("inf") else str(bound / 1000), seen))
        yield HistogramMetricFamily("ivr_pacer_lateness_seconds",
                                    "Outbound audio sends, by how late after they were due",
                                    buckets=buckets, sum_value=late_sum)


class _XapiCollector:
    """The Configuration API cache's metrics (ivr.pbx.xapi.XapiCacheCollector) once the worker
    has a cache; nothing before."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        cache = self.metrics.xapi_cache
        if cache is not None:
            yield from XapiCacheCollector(cache).collect()

    def describe(self) -> Iterator[Any]:
        return iter(())


class _CheckpointCollector:
    """ivr_checkpoint_writes_total and ivr_checkpoint_flushes_total from the worker's checkpoint
    store: positions sent, and round trips to Redis that carried them (docs/ha.md)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        store = self.metrics.checkpoints
        writes = getattr(store, "writes", 0)
        flushes = getattr(store, "round_trips", 0)
        yield CounterMetricFamily("ivr_checkpoint_writes", "Call positions saved for a takeover", value=writes)
        yield CounterMetricFamily("ivr_checkpoint_flushes", "Round trips to the checkpoint store", value=flushes)


class _CampaignCollector:
    """ivr_campaign_contacts{campaign, status}: each campaign's contacts by status (pending,
    dialling, done) and finished ones by result (answered, busy, machine, ...)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("ivr_campaign_contacts", "Campaign contacts by status and result",
                                   labels=["campaign", "status"])
        manager = self.metrics.campaigns
        for cid, runner in (getattr(manager, "runners", None) or {}).items():
            for status, n in runner.plan.counts().items():
                family.add_metric([cid, status], n)
        yield family
