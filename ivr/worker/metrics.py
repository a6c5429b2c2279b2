"""Prometheus metrics of one worker, on a registry of its own (several workers per process in tests)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from ivr.call.record import CallRecord


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
        self.underruns = Counter("ivr_stream_underruns_total", "Outbound pacer underruns", registry=r)
        self.reconnects = Counter("ivr_event_socket_reconnects_total", "Event socket reconnects", registry=r)
        self.token_refreshes = Counter("ivr_token_refreshes_total", "Access tokens fetched", registry=r)
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
