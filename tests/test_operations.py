"""Operations: /metrics, /healthz, /readyz over real sockets, and JSON logs without secrets.

A real Worker against the emulator, with the status server of ``ivr run`` (ivr/worker/service.py)
on a free loopback port. Calls go through the whole stack; the test reads what an operator's
Prometheus and load balancer would read.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from helpers import write_tone

from ivr.call.record import Outcome
from ivr.config import PbxSettings, Route, WorkerConfig
from ivr.emulator import Emulator, EmulatorConfig
from ivr.simulate import until_listening
from ivr.speech import register
from ivr.speech.services import SpeechServices
from ivr.worker.logs import setup_logging
from ivr.worker.runner import Worker
from ivr.worker.service import start_status_server

SECRET = "s3cr3t-client-Secret-value-42"

FLOW = """
    steps:
      - answer
      - say: "Hello"
      - log: "caller {{ caller.number }} is in the menu"
      - menu:
          prompt: long.wav
          timeout: 1
          retries: 0
          choices:
            "1": [{transfer: {to: "101", timeout: 3}}]
          on_no_input: [hangup]
"""


class ToneTTS:
    """A small, fast TTS: a short tone per text (the adapter latency is what is measured)."""

    name = "tone-tts"

    async def synthesize(self, text: str, *, voice: str | None = None, rate: float | None = None) -> AsyncIterator[np.ndarray]:
        await asyncio.sleep(0.01)
        t = np.arange(800) / 8000
        yield (3000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)



class Stack:
    """Emulator + Worker + status server; ``get(path)`` reads the status server."""

    def __init__(self, folder: Path, *, drain_timeout: float = 5) -> None:
        register("tts", "tone-tts", ToneTTS)
        write_tone(folder / "long.wav", 2.0)
        (folder / "flow.yaml").write_text(textwrap.dedent(FLOW))
        self.folder = folder
        self.drain_timeout = drain_timeout
        self.stop = asyncio.Event()

    async def __aenter__(self) -> Stack:
        self.emu = Emulator(EmulatorConfig(client_secret=SECRET, ring_seconds=0.1))
        await self.emu.start(host="127.0.0.1", port=0)
        config = WorkerConfig(
            pbx=PbxSettings(url=self.emu.url, client_id="900", client_secret=SECRET),
            routes=[Route(route_point="800", flow=str(self.folder / "flow.yaml"))],
            records=None,
            drain_timeout=self.drain_timeout,
            audio_dirs=[str(self.folder)],
        )
        speech = SpeechServices(stt=None, tts="tone-tts", tts_cache=False)
        self.worker = Worker(config, speech=speech)
        self.status = await start_status_server(self.worker, "127.0.0.1", 0)
        host, port = self.status.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        self.http = aiohttp.ClientSession()
        return self

    async def start_worker(self) -> None:
        self.task = asyncio.create_task(self.worker.run(self.stop))
        await asyncio.wait_for(self.worker.ready.wait(), 10)

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        if getattr(self, "task", None) is not None:
            await asyncio.wait_for(self.task, 20)
        await self.http.close()
        await self.status.cleanup()
        await self.emu.stop()

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.base + path) as resp:
            return resp.status, await resp.text()

    async def call(self, caller: str, key: str | None) -> object:
        """A call that presses ``key`` as soon as the menu listens (barging into its prompt)."""
        callid = await self.emu.place_call(caller, "800")
        while not self.worker.calls and not any(r.caller_number == caller for r in self.worker.completed):
            await asyncio.sleep(0.01)
        call = next((c for c in self.worker.calls.values() if c.caller.number == caller), None)
        if call is not None and key is not None and await until_listening(call, timeout=10):
            await asyncio.sleep(0.3)  # the prompt is playing: the key cuts it
            await self.emu.send_dtmf(callid, key)
        for _ in range(400):
            record = next((r for r in self.worker.completed if r.caller_number == caller), None)
            if record is not None:
                return record
            await asyncio.sleep(0.025)
        raise AssertionError(f"no record for {caller}")


def metric(text: str, metric_name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m or m[1] != metric_name:
            continue
        got = ",".join(sorted(p for p in (m[2] or "").split(",") if p))
        if got == want:
            return float(m[3])
    return 0.0


async def test_health_ready_and_metrics_after_calls(tmp_path):
    async with Stack(tmp_path) as s:
        assert (await s.get("/healthz"))[0] == 200
        status, body = await s.get("/readyz")
        assert status == 503 and json.loads(body)["ready"] is False  # not connected yet

        await s.start_worker()
        status, body = await s.get("/readyz")
        assert status == 200 and json.loads(body) == {"ready": True, "draining": False, "active_calls": 0}

        first = await s.call("+4930001", "1")
        second = await s.call("+4930002", None)  # says nothing: the menu's no-input branch
        assert first.outcome == Outcome.TRANSFERRED and second.outcome == Outcome.IVR_HANGUP

        await s.emu.inject_fault({"close_event_sockets": True})
        for _ in range(100):
            if s.worker.pbx.event_stream.connects >= 2 and s.worker.pbx.event_stream.is_connected:
                break
            await asyncio.sleep(0.05)

        status, text = await s.get("/metrics")
        assert status == 200
    assert metric(text, "ivr_calls_total", outcome="transferred") == 1
    assert metric(text, "ivr_calls_total", outcome="ivr_hangup") == 1
    assert metric(text, "ivr_active_calls") == 0
    assert metric(text, "ivr_call_duration_seconds_count") == 2
    assert metric(text, "ivr_step_duration_seconds_count", step="menu") == 2
    assert metric(text, "ivr_step_duration_seconds_count", step="say") == 2
    assert metric(text, "ivr_step_duration_seconds_sum", step="menu") > 0.5  # prompt + timeout
    assert metric(text, "ivr_gather_results_total", status="match", source="dtmf") == 1
    assert metric(text, "ivr_gather_results_total", status="no_input", source="dtmf") == 1
    assert metric(text, "ivr_barge_ins_total", by="dtmf") == 1
    assert metric(text, "ivr_event_socket_reconnects_total") == 1
    assert metric(text, "ivr_token_refreshes_total") >= 1
    assert metric(text, "ivr_adapter_latency_seconds_count", kind="tts", name="tone-tts") == 2
    assert "ivr_stream_underruns_total" in text


async def test_readyz_is_503_while_draining(tmp_path):
    async with Stack(tmp_path, drain_timeout=3) as s:
        await s.start_worker()
        await s.emu.place_call("+4930003", "800")
        for _ in range(200):
            if s.worker.calls:
                break
            await asyncio.sleep(0.01)
        s.stop.set()  # SIGTERM: drain while the call is still in its menu
        for _ in range(100):
            if s.worker.draining:
                break
            await asyncio.sleep(0.01)
        status, body = await s.get("/readyz")
        assert status == 503
        data = json.loads(body)
        assert data["draining"] is True and data["ready"] is False and data["active_calls"] == 1
        assert (await s.get("/healthz"))[0] == 200  # alive while draining: do not kill it
        await asyncio.wait_for(s.task, 15)
        s.task = None


@pytest.fixture
def captured_logs():
    """Run the real setup_logging (JSON, DEBUG) into a buffer; restore pytest's handlers."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buf = io.StringIO()
    setup_logging("DEBUG", json_logs=True, stream=buf)
    try:
        yield buf
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


async def test_json_logs_carry_the_call_id_and_never_a_secret(tmp_path, captured_logs):
    async with Stack(tmp_path) as s:
        await s.start_worker()
        record = await s.call("+4930004", "1")
        token = s.worker.pbx.tokens.current
        # Code that logs a credential by mistake is redacted too.
        logging.getLogger("ivr.test").debug("headers {'Authorization': 'Bearer %s'} client_secret=%s", token, SECRET)
        logging.getLogger("ivr.test").debug("raw token %s", token)
    assert token and token.count(".") == 2  # the emulator issues JWTs
    out = captured_logs.getvalue()
    lines = [json.loads(line) for line in out.splitlines()]  # every line is one JSON object
    assert len(lines) > 10
    assert SECRET not in out and token not in out
    assert token.split(".")[1] not in out  # not even the JWT's payload
    assert "[REDACTED" in out

    call_id = record.call_id
    mine = [entry for entry in lines if entry["call_id"] == call_id]
    messages = " | ".join(entry["msg"] for entry in mine)
    for expected in ("call from +4930004", "is in the menu", "transfer routeto to 101", "call ended"):
        assert expected in messages, messages
    # Every line about this call's leg, from any module, carries the call id.
    leg = f"/participants/{record.participant_id}"
    about_leg = [entry for entry in lines if leg + "/" in entry["msg"] or entry["msg"].endswith(leg)]
    assert all(entry["call_id"] == call_id for entry in about_leg), about_leg
    for entry in lines:
        assert {"ts", "level", "logger", "call_id", "msg"} <= entry.keys()
