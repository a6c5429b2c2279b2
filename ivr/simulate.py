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
from ivr.flow import FlowLoadError, load_any

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
        lines.append(f"  played    {prompt}")
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


class SimulatedCall:
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
        self.flow = Path(flow)
        self.at = at  # pin the flow's wall clock (office hours) to this moment
        self.digit_groups = [g for g in digits.split(",")] if digits else []
        self.speak = Path(speak) if speak else None
        self.caller = caller
        self.did = did
        self.extensions = {dn: "answer" for dn in ("100", "101", "102", "103", "104", "105")}
        self.extensions.update(extensions or {})
        self.timeout = timeout
        self.recordings_dir = Path(recordings_dir) if recordings_dir else Path(tempfile.mkdtemp(prefix="ivr-recordings-"))
        self.speech = speech

    async def run(self) -> SimReport:
        from ivr.worker.runner import Worker

        if not self.flow.exists():
            raise FlowLoadError.single(str(self.flow), "file not found") if hasattr(FlowLoadError, "single") else FlowLoadError(f"{self.flow}: file not found")
        load_any(self.flow)  # report flow errors before starting anything
        secret = secrets.token_urlsafe(16)
        emu = Emulator(
            EmulatorConfig(
                client_id=CLIENT_ID,
                client_secret=secret,
                route_point=ROUTE_POINT,
                extensions=self.extensions,
                ring_seconds=0.5,
            )
        )
        async with emu.running():
            config = WorkerConfig(
                pbx=PbxSettings(url=emu.url, client_id=CLIENT_ID, client_secret=secret),
                routes=[Route(route_point=ROUTE_POINT, flow=str(self.flow.resolve()))],
                records=None,
                recordings_dir=str(self.recordings_dir),
                audio_dirs=[str(self.flow.resolve().parent), str(PROJECT_AUDIO)],
            )
            started: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
            worker = Worker(config, speech=self.speech, on_call_started=self._started(started))
            stop = asyncio.Event()
            worker_task = asyncio.create_task(worker.run(stop))
            try:
                await asyncio.wait_for(self._ready(worker, worker_task), 10)
                callid = await emu.place_call(self.caller, ROUTE_POINT, did=self.did or None)
                call = await asyncio.wait_for(started, 10)
                record = await asyncio.wait_for(self._drive(emu, callid, call, worker), self.timeout)
                await asyncio.sleep(0.2)  # let the emulator log the last events (hang-up, transfer)
                info = emu.call_info(callid)
                heard = emu.heard_pcm(callid)
            except asyncio.TimeoutError:
                raise TimeoutError(f"the simulated call did not finish within {self.timeout:.0f} s") from None
            finally:
                stop.set()
                await asyncio.wait_for(worker_task, 15)
        return SimReport(record, info, heard)

    def _started(self, future: "asyncio.Future[Call]"):
        def on_call_started(call: Call) -> None:
            if self.at is not None:
                pinned = self.at
                started = datetime.now(timezone.utc)
                call.clock = lambda: pinned + (datetime.now(timezone.utc) - started)
            if not future.done():
                future.set_result(call)

        return on_call_started

    @staticmethod
    async def _ready(worker: Any, task: asyncio.Task) -> None:
        ready = asyncio.ensure_future(worker.ready.wait())
        done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready.cancel()
            task.result()  # raises the worker's start-up error
            raise RuntimeError("the worker stopped before it was ready")

    async def _drive(self, emu: Emulator, callid: Any, call: Call, worker: Any) -> CallRecord:
        """Play the caller: press each digit group when the IVR listens; then wait for the end."""
        for group in self.digit_groups:
            if not await self._until_listening(call):
                break
            await emu.send_dtmf(callid, group)
            await self._until_not_listening(call)
        if self.speak is not None and await self._until_listening(call):
            await emu.speak(callid, self.speak.read_bytes())
        while True:
            for record in worker.completed:
                if record.call_id == call.call_id:
                    return record
            await asyncio.sleep(0.05)

    @staticmethod
    async def _until_listening(call: Call) -> bool:
        listening = asyncio.ensure_future(call.listening.wait())
        ended = asyncio.ensure_future(call.ended.wait())
        await asyncio.wait({listening, ended}, return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        ended.cancel()
        return call.listening.is_set() and not call.hung_up

    @staticmethod
    async def _until_not_listening(call: Call) -> None:
        while call.listening.is_set() and not call.hung_up:
            await asyncio.sleep(0.02)


def wav_bytes(pcm: np.ndarray, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, pcm, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
