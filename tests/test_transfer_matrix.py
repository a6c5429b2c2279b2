"""Every transfer shape x result, through the real worker and a YAML flow against the emulator.

Shapes (how the PBX answers routeto): ``blocking`` (the default, as 3CX documents
RouteToAsync: 200 Success once answered, an HTTP error status with the result body once
failed), ``dialing`` (200 Dialing at once, the outcome as events, refusals as 200 Failed),
``failed200`` (blocking, failures as 200 Failed) and ``dialing+error`` (200 Dialing at once,
refusals as an error status). Results: answered, busy, no answer, not registered, the caller
hanging up while it rings, and a PBX error (a 503 burst, a refused action). Each cell checks
that the call record and the emulator's call log tell the same story.

The calls run on the virtual clock (ivr.testing.clock): a 20 s ring costs no test time.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import write_tone

from ivr.call.record import CallRecord, Outcome
from ivr.simulate import FlowHarness, until_listening
from ivr.testing.clock import run

SHAPES: dict[str, dict[str, Any]] = {
    "blocking": {},
    "dialing": {"transfer_answer": "dialing", "transfer_failure": "failed"},
    "failed200": {"transfer_failure": "failed"},
    "dialing+error": {"transfer_answer": "dialing", "transfer_error_status": 409},
}
EXTENSIONS = {"101": "answer", "102": "busy", "103": "no_answer", "104": "not_registered"}
RING, TIMEOUT = 3.0, 8

FLOW = f"""
    steps:
      - answer
      - menu:
          prompt: hello.wav
          timeout: 30
          choices:
            "1": [{{transfer: {{to: "101", timeout: {TIMEOUT}, into: t}}}}]
            "2": [{{transfer: {{to: "102", timeout: {TIMEOUT}, into: t}}}}]
            "3": [{{transfer: {{to: "103", timeout: {TIMEOUT}, into: t}}}}]
            "4": [{{transfer: {{to: "104", timeout: {TIMEOUT}, into: t, on_not_registered: [{{play: sorry.wav}}]}}}}]
      - play: sorry.wav
      - hangup
"""
KEYS = {"answered": "1", "busy": "2", "no_answer": "3", "not_registered": "4", "caller_hangup": "3",
        "pbx_503": "1", "pbx_422": "1"}


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    write_tone(tmp_path / "hello.wav", 0.3)
    write_tone(tmp_path / "sorry.wav", 0.2, freq=300)
    path = tmp_path / "transfer.yaml"
    path.write_text(textwrap.dedent(FLOW))
    return path


async def _one_call(flow: Path, shape: str, result: str) -> tuple[CallRecord, dict[str, Any], np.ndarray, float]:
    # An injected fault hits the next requests: no repeated Upserts (and the GETs they cause)
    # may come first.
    quiet = {"repeat_upserts": False} if result.startswith("pbx_") else {}
    async with FlowHarness(flow, extensions=EXTENSIONS, ring_seconds=RING, no_answer_timeout=20,
                           emulator_options={**SHAPES[shape], **quiet}) as h:
        assert h.emulator is not None
        callid, call = await h.place_call("+4930111")
        assert await until_listening(call, 10)
        for _ in range(200):  # both audio streams are up: the next request is the routeto
            if len({e.get("direction") for e in h.emulator.call_info(callid)["log"] if e["event"] == "stream_opened"}) == 2:
                break
            await asyncio.sleep(0.05)
        if result == "pbx_503":  # a burst longer than the client's retries (4 after the first)
            await h.emulator.inject_fault({"fail_next": {"count": 5, "status": 503}})
        elif result == "pbx_422":  # refused outright: not retried
            await h.emulator.inject_fault({"fail_next": {"count": 1, "status": 422}})
        loop = asyncio.get_running_loop()
        pressed = loop.time()
        await h.emulator.send_dtmf(callid, KEYS[result])
        if result == "caller_hangup":
            while h.emulator.call_info(callid)["offer"] is None:  # it rings at 103
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            await h.emulator.hangup(callid)
        record = await asyncio.wait_for(h.record_of(call), 60)
        took = loop.time() - pressed
        await asyncio.sleep(0.2)  # the emulator's last log entries
        return record, h.emulator.call_info(callid), h.emulator.heard_pcm(callid), took


def _transfer_step(record: CallRecord) -> dict[str, Any] | None:
    found = [s.result for s in record.steps if s.step == "transfer"]
    return found[-1] if found else None


def _routed(info: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["destination"], e["result"]) for e in info["log"] if e["event"] == "routed"]


def _dropped_by(info: dict[str, Any]) -> list[str]:
    return [e["by"] for e in info["log"] if e["event"] == "dropped"]


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("result", ["answered", "busy", "no_answer", "not_registered", "caller_hangup",
                                    "pbx_503", "pbx_422"])
def test_transfer_shape_by_result(flow: Path, shape: str, result: str) -> None:
    record, info, _heard, took = run(_one_call(flow, shape, result))
    step = _transfer_step(record)
    where = (shape, result, record.outcome, record.outcome_detail, step, info["log"])
    if result == "answered":
        assert record.outcome == Outcome.TRANSFERRED and record.transferred_to == "101", where
        assert _routed(info) == [("101", "answered")], where
        assert info["state"] == "connected" and info["location"] == "101", where
        assert _dropped_by(info) == [], where  # the caller is still talking to 101
        assert RING - 0.5 < took < RING + 2, where
    elif result in ("busy", "not_registered"):
        dest = "102" if result == "busy" else "104"
        assert step is not None and step["status"] == result and not step["pbx_error"], where
        assert _routed(info) == [(dest, result)], where
        assert record.outcome == Outcome.IVR_HANGUP and _dropped_by(info) == ["api:800"], where
        assert took < 2, where  # known at once: no ringing
    elif result == "no_answer":
        assert step is not None and step["status"] == "no_answer", where
        assert _routed(info) == [("103", "no_answer")], where
        assert record.outcome == Outcome.IVR_HANGUP and _dropped_by(info) == ["api:800"], where
        assert TIMEOUT - 0.5 < took < TIMEOUT + 4, where  # it rang for the step's own timeout
    elif result == "caller_hangup":
        assert record.outcome == Outcome.CALLER_HANGUP, where
        assert record.outcome_detail == "during routeto to 103" and record.transferred_to is None, where
        assert _routed(info) == [] and _dropped_by(info) == ["caller"], where
    else:  # the PBX failed or refused the routeto: it never rang anywhere
        assert step is not None and step["status"] == "failed" and step["pbx_error"], where
        assert ("HTTP 503" if result == "pbx_503" else "HTTP 422") in step["reason"], where
        assert record.outcome == Outcome.PBX_ERROR and record.outcome_detail == step["reason"], where
        assert any("transfer routeto to 101" in e for e in record.errors), where
        assert _routed(info) == [] and _dropped_by(info) == ["api:800"], where


def test_callers_hanging_up_while_it_rings_are_never_recorded_as_transferred(flow: Path) -> None:
    """The dialing shape's race: our leg's Remove comes first, the destination's ringing leg is
    still known a moment longer. Ten callers hang up at different points of the ring."""

    async def body() -> list[CallRecord]:
        async with FlowHarness(flow, extensions=EXTENSIONS, ring_seconds=RING, no_answer_timeout=20,
                               emulator_options=SHAPES["dialing"]) as h:
            assert h.emulator is not None

            async def one(i: int) -> CallRecord:
                callid, call = await h.place_call(f"+49301{i:04d}")
                assert await until_listening(call, 10)
                await h.emulator.send_dtmf(callid, "1")  # 101 answers after RING s
                while h.emulator.call_info(callid)["offer"] is None:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.25 * i)  # 0 .. 2.25 s into the 3 s ring
                await h.emulator.hangup(callid)
                return await asyncio.wait_for(h.record_of(call), 30)

            return list(await asyncio.gather(*(one(i) for i in range(10))))

    records = run(body())
    assert [r.outcome for r in records] == [Outcome.CALLER_HANGUP] * 10, [(r.outcome, r.outcome_detail) for r in records]


RINGBACK_FLOW = """
    ringback: {flow_ringback}
    steps:
      - answer
      - transfer: {{to: "101", timeout: 10{step_ringback}}}
"""


def _tone_level(pcm: np.ndarray, freq: float) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    band = (freqs > freq - 8) & (freqs < freq + 8)
    return float(spectrum[band].max() / (spectrum.mean() + 1e-9))


@pytest.mark.parametrize("flow_ringback, step_ringback, expect", [
    ("tone", "", "tone"),
    ("none", "", "silence"),
    ("hold.wav", "", "hold"),
    ("none", ", ringback: tone", "tone"),  # the step's own wins
    ("tone", ", ringback: hold.wav", "hold"),
])
def test_the_caller_hears_ringback_while_it_rings(tmp_path: Path, flow_ringback: str, step_ringback: str,
                                                  expect: str) -> None:
    write_tone(tmp_path / "hold.wav", 0.5, freq=700)
    path = tmp_path / "ringback.yaml"
    path.write_text(textwrap.dedent(RINGBACK_FLOW.format(flow_ringback=flow_ringback, step_ringback=step_ringback)))

    async def body() -> tuple[CallRecord, dict[str, Any], np.ndarray]:
        async with FlowHarness(path, ring_seconds=RING) as h:
            assert h.emulator is not None
            callid, call = await h.place_call("+4930111")
            record = await asyncio.wait_for(h.record_of(call), 30)
            return record, h.emulator.call_info(callid), h.emulator.heard_pcm(callid)

    record, info, heard = run(body())
    assert record.outcome == Outcome.TRANSFERRED
    offer = next(e["t"] for e in info["log"] if e["event"] == "offer")
    answered = next(e["t"] for e in info["log"] if e["event"] == "routed")
    assert answered - offer == pytest.approx(RING, abs=0.1)
    ring = heard[int((offer + 0.2) * 8000): int((offer + 1.8) * 8000)]  # the tone's first 2 s "on"
    if expect == "silence":
        assert len(ring) == 0 or np.abs(ring).max() < 100
    else:
        assert len(ring) > 8000
        ringback = _tone_level(ring, 440) > 50 and _tone_level(ring, 480) > 50
        assert (ringback, _tone_level(ring, 700) > 50) == (expect == "tone", expect == "hold")
    after = heard[int((answered + 0.3) * 8000):]
    assert len(after) == 0 or np.abs(after).max() < 100  # nothing of ours once 101 answered


def test_a_pbx_failure_outside_a_transfer_is_pbx_error_too(tmp_path: Path) -> None:
    """attach_data refused with a 500 (a POST: not retried): the flow's on_error runs and hangs
    up; the record and the metrics say pbx_error, not ivr_hangup."""
    write_tone(tmp_path / "hello.wav", 0.3)
    path = tmp_path / "attach.yaml"
    path.write_text(textwrap.dedent("""
        on_error: [hangup]
        steps:
          - answer
          - play: hello.wav
          - pause: 2
          - attach_data: {case: "42"}
          - hangup
    """))

    async def body() -> tuple[CallRecord, dict[str, Any], str]:
        async with FlowHarness(path, emulator_options={"repeat_upserts": False}) as h:  # the fault hits attach_data
            assert h.emulator is not None
            callid, call = await h.place_call("+4930111")
            for _ in range(200):
                if len({e.get("direction") for e in h.emulator.call_info(callid)["log"]
                        if e["event"] == "stream_opened"}) == 2:
                    break
                await asyncio.sleep(0.005)  # answered, both streams up: the next request is attach_data
            await h.emulator.inject_fault({"fail_next": {"count": 1, "status": 500}})
            record = await asyncio.wait_for(h.record_of(call), 30)
            return record, h.emulator.call_info(callid), h.worker.metrics.render().decode()

    record, info, metrics = run(body())
    assert record.outcome == Outcome.PBX_ERROR and "HTTP 500" not in record.outcome_detail
    assert record.outcome_detail.startswith("attach_data: 500"), record.outcome_detail
    assert info["attached_data"] == {} and [e["by"] for e in info["log"] if e["event"] == "dropped"] == ["api:800"]
    assert 'ivr_calls_total{outcome="pbx_error"} 1.0' in metrics


MODE_FLOW = """
    steps:
      - {answer_first}
      - transfer:
          to: "{dest}"
          mode: {mode}
          timeout: 5
          on_no_answer: [answer, {{play: sorry.wav}}, hangup]
"""


@pytest.mark.parametrize("shape", ["blocking", "dialing"])
@pytest.mark.parametrize("mode, result", [("transferto", "answered"), ("transferto", "no_answer"),
                                          ("divert", "answered"), ("divert", "no_answer")])
def test_transferto_and_divert_through_the_worker(tmp_path: Path, shape: str, mode: str, result: str) -> None:
    write_tone(tmp_path / "sorry.wav", 0.2, freq=300)
    write_tone(tmp_path / "hello.wav", 0.2)
    dest = "101" if result == "answered" else "103"
    path = tmp_path / "mode.yaml"  # divert works on a ringing call: the flow does not answer first
    path.write_text(textwrap.dedent(MODE_FLOW.format(
        mode=mode, dest=dest, answer_first="answer" if mode == "transferto" else "{log: ringing}")))
    options = {**SHAPES[shape], "inbound_status": "Ringing" if mode == "divert" else "Connected"}

    async def body() -> tuple[CallRecord, dict[str, Any]]:
        async with FlowHarness(path, extensions=EXTENSIONS, ring_seconds=1, emulator_options=options) as h:
            assert h.emulator is not None
            callid, call = await h.place_call("+4930111")
            record = await asyncio.wait_for(h.record_of(call), 30)
            await asyncio.sleep(0.2)
            return record, h.emulator.call_info(callid)

    record, info = run(body())
    past = {"transferto": "transferred", "divert": "diverted"}[mode]
    logged = [(e["destination"], e["result"]) for e in info["log"] if e["event"] == past]
    step = _transfer_step(record)
    assert logged == [(dest, result)], (info["log"], record.to_dict())
    assert step is not None and step["status"] == result
    if result == "answered":
        assert record.outcome == Outcome.TRANSFERRED and info["location"] == "101" and info["state"] == "connected"
    else:  # back with the IVR: answered (divert) or resumed (transferto), the flow goes on
        assert record.outcome == Outcome.IVR_HANGUP and record.prompts[-1].endswith("sorry.wav")
        assert [e["by"] for e in info["log"] if e["event"] == "dropped"] == ["api:800"]
        assert info["held"] is False


def test_a_ring_longer_than_the_request_timeout_is_still_answered(flow: Path) -> None:
    """The PBX answers routeto when the destination answers: after 15 s here, past the client's
    10 s request timeout. The routeto's own limit is the transfer's timeout plus the margin."""
    long_ring = flow.parent / "long_ring.yaml"
    long_ring.write_text(textwrap.dedent("""
        steps:
          - answer
          - transfer: {to: "101", timeout: 20}
    """))

    async def body() -> tuple[CallRecord, dict[str, Any], float]:
        async with FlowHarness(long_ring, ring_seconds=15) as h:
            assert h.emulator is not None
            assert h.worker.pbx_config().request_timeout == 10
            assert h.worker.pbx.rest.offer_time_limit(20) == 35 and h.worker.pbx.rest.offer_time_limit(None) == 75
            callid, call = await h.place_call("+4930111")
            record = await asyncio.wait_for(h.record_of(call), 60)
            return record, h.emulator.call_info(callid), record.duration

    record, info, duration = run(body())
    assert record.outcome == Outcome.TRANSFERRED and _routed(info) == [("101", "answered")], record.to_dict()
    assert duration >= 15  # it rang 15 s (rounded to ms)


def test_the_transfer_margin_is_a_worker_setting(tmp_path: Path) -> None:
    from ivr.config import PbxSettings, Route, WorkerConfig
    from ivr.worker.runner import Worker

    config = WorkerConfig(pbx=PbxSettings(url="http://127.0.0.1:1", client_id="900", client_secret="s",
                                          transfer_margin=5),
                          routes=[Route(route_point="800", flow=str(tmp_path / "f.yaml"))], records=None)
    assert Worker(config).pbx_config().transfer_margin == 5


def test_not_registered_without_its_own_branch_runs_on_failed(tmp_path: Path) -> None:
    write_tone(tmp_path / "sorry.wav", 0.2, freq=300)
    write_tone(tmp_path / "after.wav", 0.2, freq=500)
    path = tmp_path / "nr.yaml"
    path.write_text(textwrap.dedent("""
        steps:
          - answer
          - transfer: {to: "104", on_failed: [{play: sorry.wav}, hangup]}
          - play: after.wav
    """))

    async def body() -> CallRecord:
        async with FlowHarness(path, extensions=EXTENSIONS) as h:
            _, call = await h.place_call("+4930111")
            return await asyncio.wait_for(h.record_of(call), 30)

    record = run(body())
    assert _transfer_step(record) == {"status": "not_registered", "reason": "PhoneNotRegistered",
                                      "destination": "104", "pbx_error": False}
    assert [Path(p).name for p in record.prompts] == ["sorry.wav"] and record.outcome == Outcome.IVR_HANGUP
