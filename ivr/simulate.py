"""One simulated call: the emulator and the real worker in this process, over loopback.

``ivr call FLOW --digits 1`` and the flow-testing fixtures use this. Nothing is faked: the
worker talks to the emulator through the same HTTP, WebSocket and audio streams it would
use with a real 3CX; the emulator plays the caller.

The caller acts once per turn, in order: a turn is each time the IVR listens (a gather or
menu attempt starts) and each recording (record, voicemail: once the beep has played).
``--digits "1,1234#"`` presses ``1`` the first time the IVR listens and ``1234#`` the second
time; ``--say support`` speaks "support" (offline hibari TTS) the next time; ``--speak a.wav``
plays a recording. Speech starts as the IVR listens, so it barges in on the prompt; said
during a recording, it is what the recording keeps (``#`` there stops it). ``hangup_after``
(``--hangup-after``) hangs up that many seconds after the call was placed.

``ivr call`` runs on a virtual clock (:mod:`ivr.virtual_time`, see :func:`run_blocking`):
waits on timers are skipped, so a call with 30 s of prompts ends in about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile

from ivr.call import Call
from ivr.call.record import CallRecord
from ivr.config import PbxSettings, Route, TracingSettings, WorkerConfig, XapiSettings
from ivr.emulator import Emulator, EmulatorConfig
from ivr.emulator.xapi import PbxDescription
from ivr.flow import Diagnostic, FlowLoadError, load_any
from ivr.speech.pcm import wav_bytes

ROUTE_POINT = "800"
CLIENT_ID = "900"
T = TypeVar("T")


def run_blocking(main: Awaitable[T], *, realtime: bool = False) -> T:
    """Run ``main`` on a new event loop: a virtual clock that skips idle waits (all parties
    are in this process), or a normal loop with ``realtime`` (a peer elsewhere, e.g. an
    LLM server, needs the loop to wait for real)."""
    if realtime:
        return asyncio.run(main)  # type: ignore[arg-type]
    from ivr.virtual_time import run

    return run(main)


@dataclass
class SimReport:
    record: CallRecord
    emulator: dict[str, Any]
    heard: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int16))
    seconds: float | None = None  # the call's length on the loop clock (virtual or real)
    wall_seconds: float | None = None  # real time it took to simulate
    virtual_time: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record.to_dict(), "emulator": self.emulator, "heard_seconds": round(len(self.heard) / 8000, 2),
                "seconds": _round(self.seconds), "wall_seconds": _round(self.wall_seconds), "virtual_time": self.virtual_time}

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
    for step in r.steps:
        heard = step.result if isinstance(step.result, dict) else {}
        if heard.get("source") == "speech":  # a gather or menu the caller answered by voice
            lines.append(f"  said      \"{heard.get('transcript')}\" -> {heard.get('choice')} "
                         f"({step.step}, confidence {heard.get('confidence') or 0:.2f})")
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
    seconds = r.duration if report.seconds is None else report.seconds
    ran = f" (simulated in {report.wall_seconds:.1f} s)" if report.virtual_time and report.wall_seconds is not None else ""
    lines.append(f"  duration  {seconds:.1f} s{ran}, the caller heard {len(report.heard) / 8000:.1f} s of audio")
    return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


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
        tracing: TracingSettings | None = None,
        pbx: PbxDescription | None = None,
        emulator_options: dict[str, Any] | None = None,
    ) -> None:
        self.flow = Path(flow)
        # more EmulatorConfig fields (e.g. transfer_answer="dialing"), validated like the config
        self.emulator_options = dict(emulator_options or {})
        self.tracing = tracing  # the worker's tracing settings (default: off)
        self.params = dict(params or {})
        self.pbx = pbx  # the PBX description (docs/pbx-config.md): its users are the extensions
        if pbx is not None:
            self.extensions = dict(pbx.extensions())
        else:
            self.extensions = {dn: "answer" for dn in ("100", "101", "102", "103", "104", "105")}
        self.extensions.update(extensions or {})
        # Without a folder of its own, recordings go to a temporary one, removed by stop() when
        # nothing was recorded (discard_recordings() removes it in any case).
        self._own_recordings = recordings_dir is None
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

    async def __aenter__(self) -> FlowHarness:
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
                **self.emulator_options,
            ),
            pbx=self.pbx,
        )
        await self.emulator.start(host="127.0.0.1", port=0)
        config = WorkerConfig(
            pbx=PbxSettings(url=self.emulator.url, client_id=CLIENT_ID, client_secret=secret),
            routes=[Route(route_point=ROUTE_POINT, flow=str(self.flow.resolve()), params=self.params)],
            records=None,
            recordings_dir=str(self.recordings_dir),
            audio_dirs=[],  # prompts are found from the flow's folder, never in this package's files
            tracing=self.tracing or TracingSettings(),
            # With a PBX description the worker reads its configuration too (flows' PBX steps).
            xapi=XapiSettings(enabled=self.pbx is not None),
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
        if self.worker.xapi is not None and not await self.worker.xapi.wait_ready(15):
            raise TimeoutError("the worker did not read the PBX's configuration within 15 s")

    async def refresh_pbx(self) -> None:
        """Have the worker read the PBX's configuration now (after a test changed presence or
        a forced mode through the emulator's control endpoints)."""
        if self.worker is not None and self.worker.xapi is not None:
            await self.worker.xapi.refresh()

    async def stop(self) -> None:
        self._stop.set()
        if self._worker_task is not None:
            try:
                await asyncio.wait_for(self._worker_task, 15)
            finally:
                self._worker_task = None
        if self.emulator is not None:
            await self.emulator.stop()
        if self._own_recordings:
            with contextlib.suppress(OSError):  # not empty: the recordings are kept (and reported)
                self.recordings_dir.rmdir()

    def discard_recordings(self) -> None:
        """Remove the temporary recordings folder and what is in it (if this harness made it)."""
        if self._own_recordings:
            shutil.rmtree(self.recordings_dir, ignore_errors=True)

    def _on_call_started(self, call: Call) -> None:
        if self.at is not None:
            pin_call_clock(call, self.at)
        self._future(call.call_id).set_result(call) if not self._future(call.call_id).done() else None

    def _future(self, call_id: str) -> asyncio.Future[Call]:
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


def parse_at(text: str) -> datetime:
    """``--at``: an ISO 8601 time with a UTC offset; ValueError says what is wrong."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--at {text!r}: expected ISO 8601 like 2026-11-23T10:00+01:00") from None
    if at.tzinfo is None:
        raise ValueError(f"--at {text!r}: give a UTC offset, e.g. +01:00")
    return at


def pin_call_clock(call: Call, at: datetime) -> None:
    """Make ``call.now()`` start at ``at`` (office hours in a simulation, ``--at``); the pinned
    clock moves with the loop clock, so it follows virtual time too."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    call.clock = lambda: at + timedelta(seconds=loop.time() - started)


class CallerScriptError(ValueError):
    """The caller's actions cannot be prepared: an unreadable WAV, speech the TTS cannot make."""


async def spoken_wav(text: str) -> bytes:
    """The caller saying ``text``: offline hibari TTS at 8 kHz, 0.5 s of silence either side
    (the trailing silence is what lets the VAD decide the utterance ended), as WAV bytes."""
    from ivr.speech import get_tts, synthesize_all

    pad = np.zeros(4000, np.int16)
    pcm = await synthesize_all(get_tts("hibari"), text)
    return wav_bytes(np.concatenate([pad, pcm, pad]))


class SimulatedCall:
    """``ivr call``: one call into a flow, the caller acting each time the IVR listens.

    ``actions`` is the caller's script, one entry per listen, in order: ``("press", "12#")``,
    ``("say", "support")`` (synthesized by hibari) or ``("speak", "a.wav")``. Without it the
    script is ``digits`` (comma-separated groups), then each of ``say``, then ``speak``.
    """

    def __init__(
        self,
        flow: str | Path,
        *,
        digits: str = "",
        speak: str | Path | None = None,
        say: Sequence[str] = (),
        actions: Sequence[tuple[str, str]] | None = None,
        caller: str = "+4930123456",
        did: str = "",
        extensions: dict[str, str] | None = None,
        timeout: float = 120.0,
        recordings_dir: str | Path | None = None,
        speech: Any = None,
        at: datetime | None = None,
        hangup_after: float | None = None,
        pbx: PbxDescription | None = None,
    ) -> None:
        if hangup_after is not None and not hangup_after >= 0:
            raise ValueError(f"hangup_after: expected seconds >= 0, got {hangup_after}")
        self.harness = FlowHarness(flow, extensions=extensions, recordings_dir=recordings_dir, speech=speech, at=at,
                                   pbx=pbx)
        self.hangup_after = hangup_after
        if actions is None:
            actions = [("press", g) for g in digits.split(",")] if digits else []
            actions += [("say", text) for text in say]
            actions += [("speak", str(speak))] if speak else []
        for kind, _ in actions:
            if kind not in ("press", "say", "speak"):
                raise ValueError(f"caller action {kind!r}: expected press, say or speak")
        self.actions = list(actions)
        self.caller = caller
        self.did = did
        self.timeout = timeout

    async def _prepare(self) -> list[tuple[str, str | bytes]]:
        """The script with audio ready (speech synthesized, WAVs read) before the call starts,
        so the caller answers without delay; CallerScriptError says what cannot be made."""
        ready: list[tuple[str, str | bytes]] = []
        for kind, value in self.actions:
            if kind == "say":
                if not value.strip():
                    raise CallerScriptError("say: give the words the caller says")
                try:
                    ready.append((kind, await spoken_wav(value)))
                except Exception as exc:  # engine missing or failing: one line, not a traceback
                    raise CallerScriptError(f"say {value!r}: the hibari TTS failed: {exc}") from exc
            elif kind == "speak":
                try:
                    ready.append((kind, Path(value).read_bytes()))  # noqa: ASYNC240 - one small WAV, before the call starts
                except OSError as exc:
                    raise CallerScriptError(f"speak {value}: {exc.strerror or exc}") from None
            else:
                ready.append((kind, value))
        return ready

    async def run(self) -> SimReport:
        from ivr.virtual_time import is_virtual

        script = await self._prepare()
        loop = asyncio.get_running_loop()
        async with self.harness as h:
            assert h.emulator is not None
            started, wall_started = loop.time(), time.monotonic()
            try:
                callid, call = await h.place_call(self.caller, did=self.did)
                record = await asyncio.wait_for(self._drive(h, callid, call, script), self.timeout)
            except TimeoutError:
                raise TimeoutError(f"the simulated call did not finish within {self.timeout:.0f} s") from None
            seconds, wall = loop.time() - started, time.monotonic() - wall_started
            await asyncio.sleep(0.2)  # let the emulator log the last events (hang-up, transfer)
            info = h.emulator.call_info(callid)
            heard = h.emulator.heard_pcm(callid)
        return SimReport(record, info, heard, seconds=seconds, wall_seconds=wall, virtual_time=is_virtual(loop))

    async def _drive(self, h: FlowHarness, callid: Any, call: Call, script: list[tuple[str, str | bytes]]) -> CallRecord:
        """Play the caller: one action per turn (a listen, a recording); then wait for the end."""
        assert h.emulator is not None
        hangup = None
        if self.hangup_after is not None:
            hangup = asyncio.ensure_future(self._hang_up_after(h, callid, self.hangup_after))
        try:
            turns = _Turns(call)
            for kind, value in script:
                if not await turns.next():
                    break
                if kind == "press":
                    if value:  # an empty group ("1,,2") lets this turn pass
                        await h.emulator.send_dtmf(callid, str(value))
                else:
                    await h.emulator.speak(callid, value.encode() if isinstance(value, str) else value)
            return await h.record_of(call)
        finally:
            if hangup is not None:
                hangup.cancel()
                await asyncio.gather(hangup, return_exceptions=True)

    @staticmethod
    async def _hang_up_after(h: FlowHarness, callid: Any, seconds: float) -> None:
        from ivr.emulator.state import ApiError

        assert h.emulator is not None
        await asyncio.sleep(seconds)
        with contextlib.suppress(ApiError):  # the call ended already
            await h.emulator.hangup(callid)


class _Turns:
    """The IVR's turns to hear the caller, one at a time: each listen (a gather or menu
    attempt) and each recording (once its beep has played)."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.listens = 0  # listens already used (the first may have begun before the driver looks)
        self.recording_used = False  # the running recording had its action

    async def next(self) -> bool:
        """Wait for the next turn; False if the call ended first."""
        call = self.call
        while not call.hung_up:
            if call.listen_count > self.listens:
                self.listens = call.listen_count
                return True
            recording = call.media.recording
            if recording and not self.recording_used:
                self.recording_used = True
                return True
            if not recording:
                self.recording_used = False
            await asyncio.sleep(0.02)
        return False


async def until_next_listen(call: Call, seen: int, timeout: float | None = None) -> bool:
    """Wait until the IVR starts listening for the ``seen + 1``-th time (``call.listen_count``);
    False if the call ended or ``timeout`` passed first."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while call.listen_count <= seen:
        if call.hung_up or (deadline is not None and loop.time() > deadline):
            return False
        await asyncio.sleep(0.02)
    return not call.hung_up


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
