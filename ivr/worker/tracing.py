"""Optional OpenTelemetry traces: one ``ivr.call`` span per call, an ``ivr.step <kind>`` child per flow step.

A flow step is a YAML step (from the interpreter) or a Call action a Python flow awaits
(``ivr.step play``, ``ivr.step menu``...; see :mod:`ivr.call.actions`). Subflows of either kind
nest under the step that ran them.

Off unless the worker config says ``tracing: {enabled: true}``. While it is off this module
imports nothing from OpenTelemetry and the worker behaves exactly as without it. When it is on
but ``opentelemetry-api`` is missing, the worker logs one warning and runs without spans.

Spans go to the global tracer provider. When nobody set one (no ``opentelemetry-instrument``,
no application code) and ``opentelemetry-sdk`` is installed, :func:`build_provider` makes one
from the standard ``OTEL_*`` variables (``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_*``,
``OTEL_SERVICE_NAME``; see docs/deploy.md).

The caller's number is personal data: spans carry it only when ``caller_number`` says
``plain``; ``hash`` puts a keyed HMAC-SHA256 (key from ``hash_key_env``) there instead, since
an unkeyed hash of a phone number is undone by trying every number.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from ivr.call import CallHangup
from ivr.call.observer import CallObserver, Step
from ivr.call.record import CallRecord, Outcome
from ivr.config import ConfigError, TracingSettings

log = logging.getLogger("ivr.worker.tracing")

SCOPE = "ivr"  # the instrumentation scope our spans carry
_ERROR_OUTCOMES = (Outcome.ERROR, Outcome.FALLBACK, Outcome.PBX_ERROR)

# The step spans open in the running task, innermost last: (CallSpan, step, span, context token).
# Per task, not per call: actions a Python flow runs side by side (asyncio.gather) each nest
# under the step their task started in and end their own span, not another task's.
_open_steps: ContextVar[tuple[tuple[Any, Any, Any, Any], ...]] = ContextVar("ivr_open_steps", default=())


class CallTracing:
    """Starts a :class:`CallSpan` per call; build it with :meth:`from_settings` (None when off)."""

    def __init__(self, settings: TracingSettings, tracer: Any, hash_key: bytes | None = None) -> None:
        self.settings = settings
        self.tracer = tracer
        self._hash_key = hash_key

    @classmethod
    def from_settings(cls, settings: TracingSettings, *, tracer_provider: Any = None) -> CallTracing | None:
        """Tracing as configured, or None when it is off or ``opentelemetry-api`` is missing.

        Raises :class:`ConfigError` for a ``hash`` policy without its key, or an
        ``OTEL_TRACES_EXPORTER`` naming an exporter that is not installed.
        """
        if not settings.enabled:
            return None
        hash_key = _hash_key(settings)
        try:
            from opentelemetry import trace
        except ImportError:
            log.warning("tracing.enabled is true but opentelemetry-api is not installed "
                        "(pip install opentelemetry-api opentelemetry-sdk): no spans")
            return None
        if tracer_provider is None:
            _ensure_provider(settings.service_name)
            tracer_provider = trace.get_tracer_provider()
        from ivr import __version__

        return cls(settings, tracer_provider.get_tracer(SCOPE, __version__), hash_key)

    def caller_attribute(self, number: str) -> str | None:
        """The caller number as the privacy policy allows it on a span (None: leave it out)."""
        policy = self.settings.caller_number
        if not number or policy == "omit":
            return None
        if policy == "plain":
            return number
        assert self._hash_key is not None
        return hmac.new(self._hash_key, number.encode(), hashlib.sha256).hexdigest()[:32]

    def start(self, record: CallRecord) -> CallSpan:
        """Open the call's span; call this in the call's own task (it becomes the current span)."""
        from opentelemetry.trace import SpanKind

        attributes: dict[str, Any] = {
            "ivr.call.id": record.call_id,
            "ivr.call.participant_id": record.participant_id,
            "ivr.route_point": record.route_point,
            "ivr.did": record.did or "",
        }
        caller = self.caller_attribute(record.caller_number)
        if caller is not None:
            attributes["ivr.caller.number"] = caller
        span = self.tracer.start_span("ivr.call", kind=SpanKind.SERVER, attributes=attributes,
                                      start_time=int(record.started_at * 1e9))  # when the call arrived
        return CallSpan(self.tracer, span)


class CallSpan(CallObserver):
    """One call's span and its open step spans; one of the Call's observers."""

    def __init__(self, tracer: Any, span: Any) -> None:
        from opentelemetry import context, trace

        self._tracer = tracer
        self.span = span
        self._context, self._trace = context, trace
        # Every step span still running, in any task (finish() ends those cut short).
        self._live: dict[int, Any] = {}
        self._token = context.attach(trace.set_span_in_context(span))

    def step_started(self, step: Step, info: Mapping[str, Any]) -> None:
        self.observe("start", step, info)

    def step_ended(self, step: Step, info: Mapping[str, Any]) -> None:
        self.observe("end", step, info)

    def transfer(self, info: Mapping[str, Any]) -> None:
        self.observe("transfer", None, info)

    def hangup(self, info: Mapping[str, Any]) -> None:
        self.observe("hangup", None, info)

    def observe(self, event: str, step: Any, info: Mapping[str, Any]) -> None:
        """Step start/end (from the interpreter, a Python flow's proxy); transfer/hangup (the Call)."""
        try:
            if event == "start":
                self._step_started(step, info)
            elif event in ("end", "error"):
                self._step_ended(step, info)
            elif event in ("transfer", "hangup"):
                attrs = {k: v for k, v in info.items() if v is not None and v != ""}
                self.span.add_event(f"ivr.{event}", {k: str(v) for k, v in attrs.items()})
        except Exception:  # tracing must never break a call
            log.exception("tracing: cannot record %s", event)

    def _step_started(self, step: Any, info: Mapping[str, Any]) -> None:
        stack = _open_steps.get()
        parent = stack[-1][2] if stack and stack[-1][0] is self else self.span
        attributes: dict[str, Any] = {"ivr.step.kind": step.kind, "ivr.step.where": info.get("where", "")}
        if step.id:
            attributes["ivr.step.id"] = step.id
        if info.get("file"):
            attributes["code.filepath"] = str(info["file"])
        if info.get("line"):
            attributes["code.lineno"] = int(info["line"])
        if info.get("function"):  # a Python flow's action: the function that awaited it
            attributes["code.function"] = str(info["function"])
        span = self._tracer.start_span(f"ivr.step {step.kind}", context=self._trace.set_span_in_context(parent),
                                       attributes=attributes)
        # Current while the step runs, so spans the step causes (an http step's client) nest under it.
        token = self._context.attach(self._trace.set_span_in_context(span))
        _open_steps.set((*stack, (self, step, span, token)))
        self._live[id(span)] = span

    def _step_ended(self, step: Any, info: Mapping[str, Any]) -> None:
        stack = _open_steps.get()
        at = next((i for i in range(len(stack) - 1, -1, -1) if stack[i][0] is self and stack[i][1] is step), None)
        if at is None:
            return  # its start was not recorded: nothing to end
        _, _, span, token = stack[at]
        _open_steps.set(stack[:at])  # steps above it whose end never came are over too
        self._context.detach(token)
        if self._live.pop(id(span), None) is None:
            return  # finish() already ended it (an action still running when the call ended)
        if "error" in info:
            _mark_error(span, info["error"])
        else:
            span.set_attribute("ivr.step.status", result_status(info.get("result")))
        span.end()

    def record_exception(self, exc: BaseException) -> None:
        """An exception that ended the call (the flow's own on_error could not handle it)."""
        _mark_error(self.span, exc)

    def finish(self, record: CallRecord) -> None:
        """Close any step span left open, put the outcome on the call span and end it."""
        from opentelemetry.trace import Status, StatusCode

        # Steps cut short without an "error" (e.g. an action's task the flow left running).
        for step_span in self._live.values():
            _mark_error(step_span, asyncio.CancelledError())
            step_span.end()
        self._live.clear()
        stack = _open_steps.get()
        if any(entry[0] is self for entry in stack):
            _open_steps.set(tuple(entry for entry in stack if entry[0] is not self))
        span = self.span
        span.set_attribute("ivr.flow", record.flow)
        span.set_attribute("ivr.flow.version", record.flow_version)
        span.set_attribute("ivr.outcome", record.outcome or "")
        if record.outcome_detail:
            span.set_attribute("ivr.outcome.detail", record.outcome_detail)
        if record.transferred_to:
            span.set_attribute("ivr.transferred_to", record.transferred_to)
        span.set_attribute("ivr.call.duration", float(record.duration))
        span.set_attribute("ivr.call.steps", len(record.steps) + record.metrics.get("steps_not_kept", 0))
        if record.outcome in _ERROR_OUTCOMES:
            span.set_status(Status(StatusCode.ERROR, record.outcome_detail or record.outcome))
        span.end()
        try:
            self._context.detach(self._token)
        except Exception:  # finished from another task than it started in: nothing to restore
            pass


def result_status(result: Any) -> str:
    """A step's result in one word: its ``status`` (menu, gather, transfer, http, agent), ``failed`` or ``ok``.

    YAML steps give a dict; a Python flow's action gives the Call's result object
    (GatherResult, TransferResult, AgentResult... carry ``status``)."""
    if not isinstance(result, Mapping):
        status = getattr(result, "status", None)
        return status if isinstance(status, str) and status else "ok"
    if result.get("status"):
        return str(result["status"])
    if result.get("ok") is False:  # an http step that got no response
        return "failed"
    return "ok"


def _mark_error(span: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    if isinstance(exc, CallHangup):  # the caller leaving is an outcome, not a failure
        span.set_attribute("ivr.step.status", "caller_hangup")
    elif isinstance(exc, asyncio.CancelledError):
        span.set_attribute("ivr.step.status", "cancelled")
    else:
        span.set_attribute("ivr.step.status", "error")
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _hash_key(settings: TracingSettings) -> bytes | None:
    if settings.caller_number != "hash":
        return None
    if not settings.hash_key_env:
        raise ConfigError("tracing.caller_number: hash needs tracing.hash_key_env (an environment variable holding the key)")
    key = os.environ.get(settings.hash_key_env)
    if not key:
        raise ConfigError(f"tracing.hash_key_env: environment variable {settings.hash_key_env} is not set")
    return key.encode()


def _ensure_provider(service_name: str) -> None:
    """Set a global SDK tracer provider from OTEL_* variables when nobody has set one."""
    from opentelemetry import trace

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return  # opentelemetry-instrument or the application configured tracing: theirs wins
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        log.warning("tracing: no tracer provider is set and opentelemetry-sdk is not installed: spans go nowhere")
        return
    provider = build_provider(service_name)
    trace.set_tracer_provider(provider)


def build_provider(service_name: str, environ: Mapping[str, str] | None = None) -> Any:
    """An SDK TracerProvider with the exporters ``OTEL_TRACES_EXPORTER`` names (default ``otlp``).

    ``service.name`` is ``OTEL_SERVICE_NAME`` when set, else ``service_name``. Exporters are
    found by their ``opentelemetry_traces_exporter`` entry points (``otlp``, ``console``, ...)
    and read their own settings (``OTEL_EXPORTER_OTLP_ENDPOINT``...) from the environment.
    """
    from importlib.metadata import entry_points

    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    env = os.environ if environ is None else environ
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service_name}))
    for name in names:
        if name == "none":
            continue
        found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
        if not found:
            hint = " (pip install opentelemetry-exporter-otlp)" if name.startswith("otlp") else ""
            raise ConfigError(f"tracing: OTEL_TRACES_EXPORTER names {name!r}, which is not installed{hint}")
        provider.add_span_processor(BatchSpanProcessor(found[0].load()()))
    return provider
