"""Flow tests for users: call a flow, press keys, speak, and assert what the caller gets.

    async def test_sales(ivr_sim):
        caller = await ivr_sim.call("flows/main_menu.yaml", caller="+4930123")
        await caller.hears("main menu")
        await caller.press("1")
        await caller.expect_transfer("101")

The ``ivr_sim`` fixture comes with the package (a pytest plugin registered by entry point).
Each flow runs on the real worker against the built-in emulator over loopback: the same
code paths as production, no mocks. The tests run on a virtual clock
(:mod:`ivr.testing.clock`): waits on timers are skipped, so long prompts cost no test time;
``@pytest.mark.ivr_realtime`` opts out. See docs/testing.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ivr.call import Call
from ivr.call.record import CallRecord
from ivr.emulator.xapi import PbxDescription, load_description
from ivr.simulate import FlowHarness, spoken_wav, until_listening
from ivr.virtual_time import VirtualTimeLoop

__all__ = ["FlowAssertionError", "IvrSim", "SimCaller"]

DEFAULT_TIMEOUT = 15.0


class FlowAssertionError(AssertionError):
    """What the caller experienced differs from what the test expected."""


def _words(text: str) -> str:
    """Normalise a prompt name or text for matching: 'Main_Menu.wav' -> 'main menu'."""
    stem = Path(text).stem if re.search(r"\.(wav|flac|ogg)$", text, re.I) else text
    stem = stem.removeprefix("say:")
    return " ".join(re.findall(r"[a-z0-9]+", stem.lower()))


class SimCaller:
    """The caller's side of one simulated call."""

    def __init__(self, harness: FlowHarness, callid: Any, call: Call) -> None:
        self.harness = harness
        self.callid = callid
        self.call = call  # the worker's side: vars, record, listening...
        self._heard_upto = 0  # prompts already matched by hears()

    @property
    def emulator(self) -> Any:
        return self.harness.emulator

    # --- acting -----------------------------------------------------------------------------

    async def press(self, digits: str, *, when_listening: bool = True, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Press keys. By default wait until the IVR listens (a gather or menu runs) first."""
        if when_listening and not await until_listening(self.call, timeout):
            raise FlowAssertionError(f"the IVR never listened for keys (call ended or {timeout:.0f} s passed)")
        await self.emulator.send_dtmf(self.callid, digits)

    async def says(self, speech: str | Path | bytes | np.ndarray, *, when_listening: bool = False,
                   timeout: float = DEFAULT_TIMEOUT) -> None:
        """Speak: a WAV file path, WAV bytes, 8 kHz int16 samples, or text (synthesized by TTS).

        Speech starts at once (over a prompt it barges in); ``when_listening=True`` first waits
        until a gather or menu listens, so nothing is said before the IVR can hear it."""
        if when_listening and not await until_listening(self.call, timeout):
            raise FlowAssertionError(f"the IVR never listened (call ended or {timeout:.0f} s passed)")
        loop = asyncio.get_running_loop()
        # The caller's words are ready at once in reality: on the virtual clock, synthesizing
        # them takes no simulated time (a slow TTS start must not run out the IVR's timeout).
        frozen = loop.frozen() if isinstance(loop, VirtualTimeLoop) else contextlib.nullcontext()
        if isinstance(speech, str) and not speech.lower().endswith(".wav"):  # noqa: ASYNC240 - str.endswith, no I/O
            with frozen:
                audio: bytes | np.ndarray = await spoken_wav(speech)  # the same speech as `ivr call --say`
        elif isinstance(speech, (str, Path)):
            audio = Path(speech).read_bytes()  # noqa: ASYNC240 - a small fixture WAV, on the frozen virtual clock
        else:
            audio = speech
        await self.emulator.speak(self.callid, audio)

    async def hangup(self) -> None:
        await self.emulator.hangup(self.callid)

    # --- expecting --------------------------------------------------------------------------

    async def hears(self, what: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Wait until a prompt matching ``what`` is played (by file name or spoken text).

        Matching is on words: ``"main menu"`` matches ``main_menu.wav`` and ``say: "...main
        menu..."``. Prompts are consumed in order, so ``hears`` twice needs two prompts.
        """
        wanted = _words(what)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            prompts = self.call.call_record.prompts
            for i in range(self._heard_upto, len(prompts)):
                if wanted in _words(prompts[i]):
                    self._heard_upto = i + 1
                    return prompts[i]
            if self.call.hung_up or loop.time() > deadline:
                played = ", ".join(Path(p).name for p in prompts) or "nothing"
                why = "the call ended" if self.call.hung_up else f"{timeout:.0f} s passed"
                raise FlowAssertionError(f"expected to hear {what!r} but {why}; played: {played}")
            await asyncio.sleep(0.02)

    async def expect_transfer(self, destination: str, *, result: str = "answered", timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the emulator logs a transfer (routeto/transferto/divert) to ``destination``."""
        destination = str(destination)
        entry = await self._wait_log(
            lambda e: e.get("event") in ("routed", "transferred", "diverted") and str(e.get("destination")) == destination
            and (result is None or e.get("result") == result),
            timeout,
        )
        if entry is None:
            raise FlowAssertionError(
                f"expected a transfer to {destination} ({result}); the PBX saw: {self._log_summary()}"
            )
        return entry

    async def expect_hangup(self, *, timeout: float = DEFAULT_TIMEOUT) -> CallRecord:
        """Wait until the call ends (either side); returns the call record."""
        try:
            return await asyncio.wait_for(self.harness.record_of(self.call), timeout)
        except TimeoutError:
            raise FlowAssertionError(f"the call was still up after {timeout:.0f} s") from None

    async def record(self, timeout: float = 60.0) -> CallRecord:
        """The call record, once the call has ended."""
        return await self.expect_hangup(timeout=timeout)

    def heard(self) -> np.ndarray:
        """Everything played to the caller so far (8 kHz int16, timing preserved)."""
        return self.emulator.heard_pcm(self.callid)

    async def _wait_log(self, match: Any, timeout: float) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() <= deadline:
            for entry in self.emulator.call_info(self.callid).get("log", []):
                if match(entry):
                    return entry
            await asyncio.sleep(0.05)
        return None

    def _log_summary(self) -> str:
        log = self.emulator.call_info(self.callid).get("log", [])
        return "; ".join(
            f"{e.get('event')} {e.get('destination', '')} {e.get('result', '')}".strip() for e in log
        ) or "nothing"


def _description(pbx: str | Path | PbxDescription | None) -> PbxDescription | None:
    if pbx is None or isinstance(pbx, PbxDescription):
        return pbx
    return load_description(pbx)


class IvrSim:
    """Starts one emulator + worker per flow file on first use; stops them all at the end."""

    def __init__(self, *, extensions: dict[str, str] | None = None, at: datetime | None = None,
                 ring_seconds: float = 0.1, no_answer_timeout: float = 1.0, speech: Any = None,
                 pbx: str | Path | PbxDescription | None = None) -> None:
        self.extensions = extensions or {}
        self.pbx = _description(pbx)
        self.at = at
        self.ring_seconds = ring_seconds
        self.no_answer_timeout = no_answer_timeout
        self.speech = speech
        self._harnesses: dict[tuple[Any, ...], FlowHarness] = {}

    async def call(
        self,
        flow: str | Path,
        *,
        caller: str = "+4930123456",
        did: str = "",
        name: str = "",
        extensions: dict[str, str] | None = None,
        at: datetime | None = None,
        params: dict[str, Any] | None = None,
        pbx: str | Path | PbxDescription | None = None,
    ) -> SimCaller:
        """Place a call into ``flow``; returns the caller once the worker has taken the call.

        ``params`` are the flow's parameters (as a route's ``params:`` in ivr.yaml would pass);
        ``pbx`` a PBX description (a file or a loaded one, docs/pbx-config.md) for this call's
        emulator instead of the fixture's.
        """
        exts = {**self.extensions, **(extensions or {})}
        when = at or self.at
        params = dict(params or {})
        desc = _description(pbx) if pbx is not None else self.pbx
        key = (Path(flow).resolve(),  # noqa: ASYNC240 - once per harness key, from a test
               tuple(sorted(exts.items())), when, repr(sorted(params.items())), id(desc))
        harness = self._harnesses.get(key)
        if harness is None:
            harness = FlowHarness(
                flow, extensions=exts, at=when, ring_seconds=self.ring_seconds,
                no_answer_timeout=self.no_answer_timeout, speech=self.speech, params=params, pbx=desc,
            )
            await harness.start()
            self._harnesses[key] = harness
        callid, call = await harness.place_call(caller, did=did, name=name)
        return SimCaller(harness, callid, call)

    async def close(self) -> None:
        for harness in self._harnesses.values():
            await harness.stop()
            harness.discard_recordings()  # a test's temporary recordings end with it
        self._harnesses.clear()
