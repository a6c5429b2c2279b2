"""OpenTelemetry traces per call and per flow step, over a real emulator + worker (FlowHarness).

Spans are caught with the SDK's InMemorySpanExporter on the global tracer provider, which
the worker uses when the config enables tracing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from ivr.call.record import Outcome
from ivr.config import ConfigError, TracingSettings
from ivr.simulate import FlowHarness
from ivr.worker.tracing import CallTracing, build_provider

ON = TracingSettings(enabled=True)


@pytest.fixture(scope="module")
def _memory_exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):  # first in this process: install ours
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(_memory_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    _memory_exporter.clear()
    return _memory_exporter


@pytest.fixture
def flow_dir(tmp_path: Path) -> Path:
    t = np.arange(int(8000 * 0.2)) / 8000
    soundfile.write(tmp_path / "hello.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000, subtype="PCM_16")
    return tmp_path


def write_flow(folder: Path, body: str) -> Path:
    path = folder / "flow.yaml"
    path.write_text(textwrap.dedent(body).lstrip())
    return path


MENU = """
    steps:
      - answer
      - play: hello.wav
      - id: main
        menu:
          prompt: hello.wav
          timeout: 2
          choices:
            "2": [{transfer: {to: "102", timeout: 2}}]
          on_no_input: [hangup]
"""


def _call_and_steps(exporter: InMemorySpanExporter):
    finished = exporter.get_finished_spans()
    calls = [s for s in finished if s.name == "ivr.call"]
    assert len(calls) == 1, [s.name for s in finished]
    call = calls[0]
    steps = sorted((s for s in finished if s.name.startswith("ivr.step ")), key=lambda s: s.start_time)
    return call, steps


async def test_a_call_makes_one_span_with_its_steps_in_order(flow_dir, spans):
    flow = write_flow(flow_dir, MENU)
    async with FlowHarness(flow, ring_seconds=0.1, tracing=ON) as h:
        callid, call = await h.place_call("+4930111", did="+4930555000")
        await asyncio.wait_for(call.listening.wait(), 5)
        await h.emulator.send_dtmf(callid, "2")
        record = await asyncio.wait_for(h.record_of(call), 10)
    assert record.outcome == Outcome.TRANSFERRED

    call_span, steps = _call_and_steps(spans)
    attrs = call_span.attributes
    assert attrs["ivr.outcome"] == "transferred"
    assert attrs["ivr.call.id"] == record.call_id
    assert attrs["ivr.route_point"] == "800"
    assert attrs["ivr.did"] == "+4930555000"
    assert attrs["ivr.flow"] == str(flow.resolve())
    assert attrs["ivr.flow.version"] == record.flow_version
    assert attrs["ivr.transferred_to"] == "102"
    assert 0 < attrs["ivr.call.duration"] < 10
    assert "ivr.caller.number" not in attrs  # the default privacy policy leaves it out
    assert "+4930111" not in repr(dict(attrs))

    assert [s.name for s in steps] == ["ivr.step answer", "ivr.step play", "ivr.step menu", "ivr.step transfer"]
    assert all(s.parent is not None and s.parent.span_id == call_span.context.span_id for s in steps[:3])
    menu, transfer = steps[2], steps[3]
    assert menu.attributes["ivr.step.id"] == "main"
    assert menu.attributes["ivr.step.where"] == "flow.yaml:4"
    assert menu.attributes["code.lineno"] == 4
    assert menu.attributes["ivr.step.status"] == "match"
    assert transfer.attributes["ivr.step.status"] == "answered"
    # A menu's branch runs after the menu step has ended: its steps are siblings under the call.
    assert transfer.parent.span_id == call_span.context.span_id
    assert all(s.context.trace_id == call_span.context.trace_id for s in steps)
    events = [(e.name, dict(e.attributes)) for e in call_span.events]
    assert ("ivr.transfer", {"destination": "102", "mode": "routeto", "status": "answered", "reason": "delivered"}) in events


async def test_a_failing_step_records_the_exception_and_the_subflow_nests(flow_dir, spans):
    (flow_dir / "sub.yaml").write_text("steps:\n  - set: {x: 1}\n  - return: {x: '{{ vars.x }}'}\n")
    flow = write_flow(flow_dir, """
        on_error:
          - hangup
        steps:
          - answer
          - subflow: {file: sub.yaml}
          - http: {url: "http://127.0.0.1:9/nothing", timeout: 0.5}
    """)
    async with FlowHarness(flow, ring_seconds=0.1, tracing=ON) as h:
        _, call = await h.place_call()
        record = await asyncio.wait_for(h.record_of(call), 10)
    assert record.outcome == Outcome.IVR_HANGUP

    call_span, steps = _call_and_steps(spans)
    names = [s.name for s in steps]
    assert names == ["ivr.step answer", "ivr.step subflow", "ivr.step set", "ivr.step return",
                     "ivr.step http", "ivr.step hangup"]
    subflow = steps[1]
    assert steps[2].parent.span_id == subflow.context.span_id  # the subflow's steps nest in it
    assert steps[2].attributes["code.filepath"].endswith("sub.yaml")
    http = steps[4]
    assert http.status.status_code == StatusCode.ERROR
    assert http.attributes["ivr.step.status"] == "error"
    assert any(e.name == "exception" for e in http.events)
    assert call_span.attributes["ivr.outcome"] == "ivr_hangup"
    assert ("ivr.hangup", {"by": "ivr"}) in [(e.name, dict(e.attributes)) for e in call_span.events]


async def test_caller_hangup_is_an_outcome_not_an_error(flow_dir, spans):
    t = np.arange(8000 * 3) / 8000
    soundfile.write(flow_dir / "long.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 8000, subtype="PCM_16")
    flow = write_flow(flow_dir, "steps:\n  - answer\n  - play: long.wav\n")
    async with FlowHarness(flow, ring_seconds=0.1, tracing=TracingSettings(enabled=True, caller_number="plain")) as h:
        callid, call = await h.place_call("+4930222")
        await asyncio.sleep(0.4)
        await h.emulator.hangup(callid)
        await asyncio.wait_for(h.record_of(call), 10)

    call_span, steps = _call_and_steps(spans)
    assert call_span.attributes["ivr.outcome"] == "caller_hangup"
    assert call_span.attributes["ivr.caller.number"] == "+4930222"
    assert call_span.status.status_code != StatusCode.ERROR
    play = steps[-1]
    assert play.name == "ivr.step play"
    assert play.attributes["ivr.step.status"] == "caller_hangup"
    assert play.status.status_code != StatusCode.ERROR
    assert "ivr.hangup" in [e.name for e in call_span.events]


async def test_tracing_disabled_makes_no_spans(flow_dir, spans):
    flow = write_flow(flow_dir, "steps:\n  - answer\n  - play: hello.wav\n  - hangup\n")
    async with FlowHarness(flow, ring_seconds=0.1) as h:
        assert h.worker.tracing is None
        _, call = await h.place_call()
        record = await asyncio.wait_for(h.record_of(call), 10)
    assert len(call.observers) == 0  # nobody watches: tracing added no observer
    assert record.outcome == Outcome.IVR_HANGUP
    assert spans.get_finished_spans() == ()


PY_MENU = """
    import asyncio

    async def main(call):
        await call.answer()
        await asyncio.gather(call.sleep(0.05), call.sleep(0.01))  # side by side: the short one ends first
        result = await call.menu(prompt="hello.wav", choices=["2"], timeout=2)
        if result.choice == "2":
            await call.transfer("102", timeout=2)
"""


async def test_python_flow_actions_are_step_spans(flow_dir, spans):
    flow = flow_dir / "flow.py"
    flow.write_text(textwrap.dedent(PY_MENU).lstrip())
    async with FlowHarness(flow, ring_seconds=0.1, tracing=ON) as h:
        callid, call = await h.place_call()
        await asyncio.wait_for(call.listening.wait(), 5)
        await h.emulator.send_dtmf(callid, "2")
        record = await asyncio.wait_for(h.record_of(call), 10)
    assert record.outcome == Outcome.TRANSFERRED

    call_span, steps = _call_and_steps(spans)
    # menu runs gather, play_prompt and play inside: those are not steps of their own.
    assert sorted(s.name for s in steps) == sorted(["ivr.step answer", "ivr.step sleep", "ivr.step sleep",
                                                    "ivr.step menu", "ivr.step transfer"])
    assert all(s.parent.span_id == call_span.context.span_id for s in steps)
    by_name = {s.name: s for s in steps}
    answer, menu, transfer = by_name["ivr.step answer"], by_name["ivr.step menu"], by_name["ivr.step transfer"]
    assert answer.attributes["ivr.step.where"] == "flow.py:4"
    assert answer.attributes["code.filepath"] == str(flow)
    assert answer.attributes["code.lineno"] == 4
    assert answer.attributes["code.function"] == "main"
    assert "ivr.step.id" not in answer.attributes
    assert menu.attributes["ivr.step.where"] == "flow.py:6"
    assert menu.attributes["ivr.step.status"] == "match"
    assert transfer.attributes["ivr.step.where"] == "flow.py:8"
    assert transfer.attributes["ivr.step.status"] == "answered"
    sleeps = [s for s in steps if s.name == "ivr.step sleep"]
    assert [s.attributes["ivr.step.status"] for s in sleeps] == ["ok", "ok"]
    assert all(s.attributes["ivr.step.where"] == "flow.py:5" for s in sleeps)
    assert menu.start_time > max(s.end_time for s in sleeps)
    assert ("ivr.transfer", {"destination": "102", "mode": "routeto", "status": "answered", "reason": "delivered"}) in \
        [(e.name, dict(e.attributes)) for e in call_span.events]


async def test_the_call_span_counts_python_actions_and_yaml_steps_once(flow_dir, spans):
    # ivr.call.steps is len(record.steps): a Python flow's actions count, a YAML step once.
    (flow_dir / "flow.py").write_text(textwrap.dedent(PY_MENU).lstrip())
    write_flow(flow_dir, MENU)
    counts = []
    for name in ("flow.py", "flow.yaml"):
        spans.clear()
        async with FlowHarness(flow_dir / name, ring_seconds=0.1, tracing=ON) as h:
            callid, call = await h.place_call()
            await asyncio.wait_for(call.listening.wait(), 5)
            await h.emulator.send_dtmf(callid, "2")
            record = await asyncio.wait_for(h.record_of(call), 10)
        call_span, steps = _call_and_steps(spans)
        assert call_span.attributes["ivr.call.steps"] == len(record.steps) == len(steps)
        assert sorted(s.step for s in record.steps) == sorted(s.name.removeprefix("ivr.step ") for s in steps)
        counts.append(len(record.steps))
    assert counts == [5, 4]  # answer, sleep, sleep, menu, transfer / answer, play, menu, transfer


async def test_python_and_yaml_subflows_nest_and_a_failing_action_is_an_error(flow_dir, spans):
    (flow_dir / "inner.py").write_text("async def main(call):\n    await call.play('hello.wav')\n    return {'x': 1}\n")
    (flow_dir / "sub.yaml").write_text("steps:\n  - play: hello.wav\n  - subflow: {file: inner.py}\n")
    flow = flow_dir / "flow.py"
    flow.write_text(textwrap.dedent("""
        async def main(call):
            await call.answer()
            await call.subflow("sub.yaml")
            await call.play("missing.wav")
    """).lstrip())
    async with FlowHarness(flow, ring_seconds=0.1, tracing=ON) as h:
        _, call = await h.place_call()
        record = await asyncio.wait_for(h.record_of(call), 10)
    assert record.outcome == Outcome.ERROR
    assert "missing.wav" in record.outcome_detail

    call_span, steps = _call_and_steps(spans)
    # The worker's hang-up after the error is not a flow step: the flow never awaited it.
    assert [s.name for s in steps] == ["ivr.step answer", "ivr.step subflow", "ivr.step play",
                                       "ivr.step subflow", "ivr.step play", "ivr.step play"]
    _answer, py_sub, yaml_play, yaml_sub, inner_play, failed = steps
    assert py_sub.attributes["ivr.step.where"] == "flow.py:3"
    assert py_sub.parent.span_id == call_span.context.span_id
    # The YAML subflow's steps nest under the Python action that ran it, once each.
    assert yaml_play.parent.span_id == yaml_sub.parent.span_id == py_sub.context.span_id
    assert yaml_play.attributes["ivr.step.where"] == "sub.yaml:2"
    assert yaml_sub.attributes["ivr.step.where"] == "sub.yaml:3"
    # ... and a Python subflow's actions under the YAML step that ran it.
    assert inner_play.parent.span_id == yaml_sub.context.span_id
    assert inner_play.attributes["ivr.step.where"] == "inner.py:2"
    assert py_sub.attributes["ivr.step.status"] == "ok"
    assert failed.parent.span_id == call_span.context.span_id
    assert failed.attributes["ivr.step.where"] == "flow.py:4"
    assert failed.attributes["ivr.step.status"] == "error"
    assert failed.status.status_code == StatusCode.ERROR
    assert "missing.wav" in failed.status.description
    assert any(e.name == "exception" for e in failed.events)
    assert call_span.status.status_code == StatusCode.ERROR


def test_a_call_action_is_the_method_itself():
    """The Call's actions are not wrapped (a Python flow's proxy reports its steps): calling one
    returns the method's own coroutine."""
    from ivr.call import Call

    class Quiet:
        async def _until_hangup(self, awaitable):
            return await awaitable

    assert not hasattr(Call.sleep, "__wrapped__")
    coro = Call.sleep(Quiet(), 0)
    assert coro.cr_code is Call.sleep.__code__
    asyncio.run(coro)


def test_caller_number_hash_is_keyed_and_needs_its_key(monkeypatch):
    monkeypatch.delenv("IVR_TEST_HASH_KEY", raising=False)
    settings = TracingSettings(enabled=True, caller_number="hash", hash_key_env="IVR_TEST_HASH_KEY")
    with pytest.raises(ConfigError, match="IVR_TEST_HASH_KEY is not set"):
        CallTracing.from_settings(settings, tracer_provider=TracerProvider())
    with pytest.raises(ConfigError, match=r"needs tracing.hash_key_env"):
        CallTracing.from_settings(TracingSettings(enabled=True, caller_number="hash"), tracer_provider=TracerProvider())
    monkeypatch.setenv("IVR_TEST_HASH_KEY", "k1")
    tracing = CallTracing.from_settings(settings, tracer_provider=TracerProvider())
    assert tracing is not None
    hashed = tracing.caller_attribute("+4930111")
    assert hashed == hmac.new(b"k1", b"+4930111", hashlib.sha256).hexdigest()[:32]
    assert hashed != hashlib.sha256(b"+4930111").hexdigest()[:32]
    assert tracing.caller_attribute("") is None


def test_build_provider_reads_the_otel_variables():
    provider = build_provider("ivr-test", {"OTEL_TRACES_EXPORTER": "console"})
    assert provider.resource.attributes["service.name"] == "ivr-test"
    provider = build_provider("ivr-test", {"OTEL_TRACES_EXPORTER": "none", "OTEL_SERVICE_NAME": "from-env"})
    assert provider.resource.attributes["service.name"] == "from-env"
    with pytest.raises(ConfigError, match="'nosuch', which is not installed"):
        build_provider("ivr-test", {"OTEL_TRACES_EXPORTER": "nosuch"})


def test_disabled_tracing_imports_no_opentelemetry():
    code = (
        "import sys\n"
        "from ivr.config import TracingSettings\n"
        "import ivr.worker.runner\n"
        "from ivr.worker.tracing import CallTracing\n"
        "assert CallTracing.from_settings(TracingSettings()) is None\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_enabled_without_opentelemetry_api_warns_and_makes_no_spans():
    code = (
        "import logging, sys\n"
        "sys.modules['opentelemetry'] = None  # as if opentelemetry-api were not installed\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from ivr.config import TracingSettings\n"
        "from ivr.worker.tracing import CallTracing\n"
        "assert CallTracing.from_settings(TracingSettings(enabled=True)) is None\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "opentelemetry-api is not installed" in done.stderr


def test_the_call_span_counts_steps_past_the_record_cap(spans):
    # A record keeps at most MAX_RECORDED_STEPS; the span still says how many steps ran.
    from ivr.call.record import MAX_RECORDED_STEPS, CallRecord

    tracing = CallTracing.from_settings(TracingSettings(enabled=True))
    record = CallRecord("c1", "800", 1)
    for i in range(MAX_RECORDED_STEPS + 3):
        record.add_step("sleep", f"flow.py:{i}")
    record.finish(Outcome.IVR_HANGUP)
    tracing.start(record).finish(record)
    (call_span,) = [s for s in spans.get_finished_spans() if s.name == "ivr.call"]
    assert call_span.attributes["ivr.call.steps"] == MAX_RECORDED_STEPS + 3
