"""One simulated call: the emulator and the real worker in this process, over loopback.

``ivr call FLOW --digits 1`` and the flow-testing fixtures use this. Nothing is faked: the
worker talks to the emulator through the same HTTP, WebSocket and audio streams it would
use with a real 3CX; the emulator plays the caller.

Digits: ``--digits "1,1234#"`` presses ``1`` the first time the IVR listens for input
(a gather or menu starts) and ``1234#`` the second time.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from ivr.call import Call
from ivr.call.record import CallRecord
from ivr.config import PbxSettings, Route, WorkerConfig
from ivr.emulator import Emulator, EmulatorConfig
from ivr.flow import Diagnostic, FlowLoadError, load_any

PROJECT_AUDIO = Path(__file__).resolve().parent.parent / "audio"
ROUTE_POINT = "800"
CLIENT_ID = "900"


@dataclass
class SimReport:
    record: CallRecord
    emulator: dict[str, Any]
    heard: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int16))

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record.to_dict(), "emulator": self.emulator, "heard_seconds": round(len(self.heard) / 8000, 2)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def save_heard(self, path: str | Path) -> None:
        soundfile.write(str(path), self.heard, 8000, subtype="PCM_16")


def format_report(report: SimReport) -> str:
    """A human summary of the call: what was played, pressed, and where the call went."""
    r = report.record
    lines = [
        f"call {r.call_id} from {r.caller_number} to route point {r.route_point}",
        f"  flow      {r.flow} (version {r.flow_version})",
    ]
    for prompt in r.prompts:
        lines.append(f"  played    {_short(prompt)}")
    pressed = [d for d in r.digits if d]
    lines.append(f"  digits    {', '.join(pressed) if pressed else '(none)'}")
    for entry in report.emulator.get("log", []):
        event = entry.get("event", "")
        if event in ("routed", "transferred", "diverted"):
            detail = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("t", "event"))
            lines.append(f"  {event:<9} {detail}  (at {entry.get('t', 0):.1f} s)")
    for rec in r.recordings:
        lines.append(f"  recording {rec}")
    for err in r.errors:
        lines.append(f"  error     {err}")
    lines.append(f"  outcome   {r.outcome}{' - ' + r.outcome_detail if r.outcome_detail else ''}")
    lines.append(f"  duration  {r.duration:.1f} s, the caller heard {len(report.heard) / 8000:.1f} s of audio")
    return "\n".join(lines)


def _short(path: str) -> str:
    """A prompt path as a reader wants it: relative to the working directory when inside it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


class FlowHarness:
    """An emulator and the real worker serving one flow, in this process, over loopback.

    ``ivr call`` and :mod:`ivr.testing` build on it. ``place_call`` returns the emulator's
    call id and the worker's :class:`Call` for it, so a driver can both play the caller
    (through the emulator) and watch the IVR side (the Call's record, ``listening``...).
    """

    def __init__(
        self,
        flow: str | Path,
        *,
        extensions: dict[str, str] | None = None,
        recordings_dir: str | Path | None = None,
        speech: Any = None,
        at: datetime | None = None,
        ring_seconds: float = 0.5,
        no_answer_timeout: float = 20.0,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.flow = Path(flow)
        self.params = dict(params or {})
        self.extensions = {dn: "answer" for dn in ("100", "101", "102", "103", "104", "105")}
        self.extensions.update(extensions or {})
        self.recordings_dir = Path(recordings_dir) if recordings_dir else Path(tempfile.mkdtemp(prefix="ivr-recordings-"))
        self.speech = speech
        self.at = at  # pin the flow's wall clock (office hours) to this moment
        self.ring_seconds = ring_seconds
        self.no_answer_timeout = no_answer_timeout
        self.emulator: Emulator | None = None
        self.worker: Any = None
        self._stop = asyncio.Event()
        self._worker_task: asyncio.Task | None = None
        self._calls: dict[str, asyncio.Future[Call]] = {}

    async def __aenter__(self) -> "FlowHarness":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def start(self) -> None:
        from ivr.worker.runner import Worker

        if not self.flow.exists():
            raise FlowLoadError([Diagnostic(str(self.flow), 0, 0, "error", "file not found")])
        load_any(self.flow)  # report flow errors before starting anything
        secret = secrets.token_urlsafe(16)
        self.emulator = Emulator(
            EmulatorConfig(
                client_id=CLIENT_ID,
                client_secret=secret,
                route_point=ROUTE_POINT,
                extensions=self.extensions,
                ring_seconds=self.ring_seconds,
                no_answer_timeout=self.no_answer_timeout,
            )
        )
        await self.emulator.start(host="127.0.0.1", port=0)
        config = WorkerConfig(
            pbx=PbxSettings(url=self.emulator.url, client_id=CLIENT_ID, client_secret=secret),
            routes=[Route(route_point=ROUTE_POINT, flow=str(self.flow.resolve()), params=self.params)],
            records=None,
            recordings_dir=str(self.recordings_dir),
            audio_dirs=[str(self.flow.resolve().parent), str(PROJECT_AUDIO)],
        )
        self.worker = Worker(config, speech=self.speech, on_call_started=self._on_call_started, reload_interval=0.2)
        self._worker_task = asyncio.create_task(self.worker.run(self._stop))
        ready = asyncio.ensure_future(self.worker.ready.wait())
        done, _ = await asyncio.wait({ready, self._worker_task}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if self._worker_task in done:
            ready.cancel()
            await self.emulator.stop()
            self._worker_task.result()  # raises the worker's start-up error
            raise RuntimeError("the worker stopped before it was ready")
        if not done:
            raise TimeoutError("the worker did not become ready within 15 s")

    async def stop(self) -> None:
        self._stop.set()
        if self._worker_task is not None:
            try:
                await asyncio.wait_for(self._worker_task, 15)
            finally:
                self._worker_task = None
        if self.emulator is not None:
            await self.emulator.stop()

    def _on_call_started(self, call: Call) -> None:
        if self.at is not None:
            pinned, started = self.at, datetime.now(timezone.utc)
            call.clock = lambda: pinned + (datetime.now(timezone.utc) - started)
        self._future(call.call_id).set_result(call) if not self._future(call.call_id).done() else None

    def _future(self, call_id: str) -> "asyncio.Future[Call]":
        if call_id not in self._calls:
            self._calls[call_id] = asyncio.get_running_loop().create_future()
        return self._calls[call_id]

    async def place_call(self, caller: str = "+4930123456", *, did: str = "", name: str = "") -> tuple[Any, Call]:
        """A call from ``caller`` to the route point; returns (emulator call id, the worker's Call)."""
        assert self.emulator is not None, "start() the harness first"
        callid = await self.emulator.place_call(caller, ROUTE_POINT, name=name, did=did or None)
        call = await asyncio.wait_for(self._future(str(callid)), 10)
        return callid, call

    async def record_of(self, call: Call) -> CallRecord:
        """Wait for the call to end; its call record."""
        while True:
            for record in self.worker.completed:
                if record.call_id == call.call_id:
                    return record
            await asyncio.sleep(0.02)


class SimulatedCall:
    """``ivr call``: one call into a flow, the caller pressing keys when the IVR listens."""

    def __init__(
        self,
        flow: str | Path,
        *,
        digits: str = "",
        speak: str | Path | None = None,
        caller: str = "+4930123456",
        did: str = "",
        extensions: dict[str, str] | None = None,
        timeout: float = 120.0,
        recordings_dir: str | Path | None = None,
        speech: Any = None,
        at: datetime | None = None,
    ) -> None:
        self.harness = FlowHarness(flow, extensions=extensions, recordings_dir=recordings_dir, speech=speech, at=at)
        self.digit_groups = [g for g in digits.split(",")] if digits else []
        self.speak = Path(speak) if speak else None
        self.caller = caller
        self.did = did
        self.timeout = timeout

    async def run(self) -> SimReport:
        async with self.harness as h:
            assert h.emulator is not None
            try:
                callid, call = await h.place_call(self.caller, did=self.did)
                record = await asyncio.wait_for(self._drive(h, callid, call), self.timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"the simulated call did not finish within {self.timeout:.0f} s") from None
            await asyncio.sleep(0.2)  # let the emulator log the last events (hang-up, transfer)
            info = h.emulator.call_info(callid)
            heard = h.emulator.heard_pcm(callid)
        return SimReport(record, info, heard)

    async def _drive(self, h: FlowHarness, callid: Any, call: Call) -> CallRecord:
        """Play the caller: press each digit group when the IVR listens; then wait for the end."""
        assert h.emulator is not None
        for group in self.digit_groups:
            if not await until_listening(call):
                break
            await h.emulator.send_dtmf(callid, group)
            while call.listening.is_set() and not call.hung_up:
                await asyncio.sleep(0.02)
        if self.speak is not None and await until_listening(call):
            await h.emulator.speak(callid, self.speak.read_bytes())
        return await h.record_of(call)


async def until_listening(call: Call, timeout: float | None = None) -> bool:
    """Wait until the IVR listens for input (a gather or menu runs); False if the call ended."""
    listening = asyncio.ensure_future(call.listening.wait())
    ended = asyncio.ensure_future(call.ended.wait())
    try:
        await asyncio.wait({listening, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        listening.cancel()
        ended.cancel()
    return call.listening.is_set() and not call.hung_up


def wav_bytes(pcm: np.ndarray, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, pcm, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
