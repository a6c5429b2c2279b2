"""Run a YAML flow over a Call: each step is one Call method (or pure flow logic).

Control flow uses an explicit stack of (step list, next index) frames, so ``goto`` can jump
to any step id in the flow - into or out of nested branches - and the rest of the enclosing
lists still runs in order afterwards. A per-call step budget stops endless goto loops.

Error handling:

* a step that raises (anything but :class:`CallHangup`) runs the flow's ``on_error`` steps
  with ``error`` (the message) in the template context; the outcome is ``"error"``;
* :class:`CallHangup` runs ``on_hangup`` with audio steps skipped; the outcome is
  ``"caller_hangup"``.

Each step kind is one model in :mod:`~ivr.flow.schema` (its outcomes, whether it needs audio,
what it waits for) and one ``do_<kind>`` method here, paired with its model class in
:data:`HANDLERS`. A handler that branches returns :class:`_Take` with the result's key; the
model's :class:`~ivr.flow.schema.Outcome` says what that means (run a branch, carry on, end
the flow, fail the step), the same for every step and as ``graph`` draws it.

The run's position (:class:`~ivr.flow.position.FlowPosition`) goes to ``on_position`` after
every step and as a step that waits starts; ``run_flow(..., resume=position)`` continues a
run from one, in this process or another that loaded the same flow file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ivr.call.collector import AttemptMark
from ivr.call.results import CallHangup, DirectoryMark, step_result
from ivr.call.step_budget import StepBudget
from ivr.pbx.hours import is_open
from ivr.templating.templates import Template, TemplateError, evaluate, render_value

from .checks import audio_search_path, resolve_audio, walk_nodes
from .paths import UnsafePathError, within_any, within_root
from .position import FlowPosition, PositionError, frames_of, stack_of
from .schema import (
    STEP_TYPES,
    AgentArgs,
    AgentStep,
    AmdArgs,
    AmdStep,
    AnswerStep,
    AttachDataStep,
    DirectoryArgs,
    DirectoryStep,
    Flow,
    GatherArgs,
    GatherStep,
    GotoStep,
    HangupStep,
    HoursArgs,
    HoursStep,
    HttpArgs,
    HttpStep,
    IfStep,
    LogArgs,
    LogStep,
    MenuArgs,
    MenuStep,
    PauseStep,
    PlayArgs,
    PlayStep,
    Prompt,
    RecordArgs,
    RecordStep,
    ReturnStep,
    SayArgs,
    SayStep,
    SetStep,
    StepBase,
    SubflowArgs,
    SubflowStep,
    SwitchStep,
    TransferArgs,
    TransferStep,
    VoicemailArgs,
    VoicemailStep,
)

if TYPE_CHECKING:  # annotations only
    from ivr.call.api import CallApi

__all__ = ["HANDLERS", "MAX_STEPS", "FlowError", "FlowOutcome", "PositionObserver", "StepHandlers", "run_flow"]

log = logging.getLogger("ivr.flow")

#: Steps one call may execute (subflows included) before the flow is stopped.
MAX_STEPS = 1000
#: Extra steps granted to on_error after the budget ran out, so it can still say sorry.
ERROR_ALLOWANCE = 100
#: HTTP response bodies beyond this are cut (a flow wants a small JSON answer).
MAX_HTTP_BODY = 1024 * 1024


class FlowError(Exception):
    """A flow failed at run time in a way the flow itself caused (step limit, bad value)."""


class PositionObserver(Protocol):
    """Told the run's position after every step, and as a step that waits starts (then
    ``waiting_for`` says for what); the worker checkpoints it. It must not block: it runs
    between steps, and what it raises is logged and ignored (a checkpoint store that is
    down never stops a call)."""

    def __call__(self, position: FlowPosition) -> None: ...


@dataclass
class FlowOutcome:
    """How a flow run ended.

    ``status``: ``completed`` (ran off the end), ``returned`` (a ``return`` step),
    ``hangup`` (a ``hangup`` step), ``transferred`` (an answered transfer ended the flow),
    ``caller_hangup``, or ``error`` (``error`` holds the message; ``handled`` tells whether
    ``on_error`` ran to its end).
    """

    status: str
    returned: dict[str, Any] | None = None
    error: str | None = None
    handled: bool = False
    steps: int = 0


@dataclass
class _Stop:
    status: str
    returned: dict[str, Any] | None = None


@dataclass
class _Goto:
    target: str


@dataclass
class _Branch:
    steps: list[StepBase] = field(default_factory=list)


@dataclass
class _Take:
    """The step's result picks its outcome ``key`` (the model's Outcome says what follows);
    ``error`` is the message when that outcome fails the step (no branch written for it)."""

    key: str
    error: str | None = None


_Signal = _Stop | _Goto | _Branch | _Take | None


class _Runner:
    def __init__(self, flow: Flow, call: CallApi, params: dict[str, Any], vars_: dict[str, Any], budget: StepBudget,
                 *, parent: _Runner | None = None, observer: PositionObserver | None = None) -> None:
        self.flow, self.call, self.budget = flow, call, budget
        self.params = params
        self.vars = vars_
        self.digits = ""
        self.last: Any = None
        self.error: str | None = None
        self.hung_up_mode = False
        self._lines: dict[int, int] | None = None
        self._node_lines: dict[int, int] | None = None
        # Where the run is, for positions: the running stack, the runner of the subflow the
        # running step runs (if any), and the subflow position a resume continues in.
        self.parent, self.observer = parent, observer
        self.stack: list[list[Any]] = []
        self.child: _Runner | None = None
        self.transfer_in_flight_since: float | None = None  # a resumed transfer step: when it was offered
        # The running gather/menu's attempt (a directory's try) once past the first (positions
        # keep it; a resume starts the step there).
        self.attempt: AttemptMark | DirectoryMark | None = None
        self._attempt_step: StepBase | None = None  # the step a restored attempt belongs to
        self.resume_subflow: FlowPosition | None = None
        self._nested = 0

    # --- context ------------------------------------------------------------------------

    def context(self, **extra: Any) -> dict[str, Any]:
        call = self.call
        ctx: dict[str, Any] = dict(self.vars)  # vars are also top-level names (never reserved ones)
        ctx.update(
            caller={"number": call.caller.number, "name": call.caller.name},
            call={"id": call.call_id, "did": call.did, "route_point": call.route_point},
            vars=self.vars, params=self.params, digits=self.digits, last=self.last,
            now=call.now(), error=self.error, pbx=call.pbx_facts(),
        )
        ctx.update(extra)
        return ctx

    def text(self, value: Any, **extra: Any) -> str:
        if isinstance(value, Template):
            return value.render(self.context(**extra))
        return "" if value is None else str(value)

    def value(self, value: Any) -> Any:
        return render_value(value, self.context())

    def line_of(self, step: StepBase) -> int:
        if self._lines is None:
            self._lines = {}
            if self.flow._src is not None:
                for node, src, _, _ in walk_nodes(self.flow, self.flow._src):
                    if isinstance(node, StepBase):
                        self._lines[id(node)] = src.line
        return self._lines.get(id(step), 0)

    def where(self, step: StepBase) -> str:
        name = self.flow.path.name if self.flow.path else self.flow.name
        line = self.line_of(step)
        return f"{name}:{line}" if line else f"{name}"

    def audio(self, name: Template) -> str:
        text = self.text(name)
        if isinstance(name, Template) and not name.is_static:  # caller data may be in it
            try:
                text = within_any(text, self._audio_roots(), "prompt file")
            except UnsafePathError as exc:
                raise FlowError(f"{self._where_node(name)}: {exc}") from None
        found = resolve_audio(text, self.flow.folder)
        return str(found) if found is not None else text

    def prompt(self, prompt: Prompt | None) -> Any:
        """A Prompt model -> what Call takes (files resolved, texts rendered)."""
        if prompt is None:
            return None
        parts: list[Any] = []
        for part in prompt.parts:
            if isinstance(part, Template):
                parts.append(self.audio(part))
            else:
                item = {"say": self.text(part.say)}
                if part.voice:
                    item["voice"] = part.voice
                if part.tts:
                    item["tts"] = part.tts
                parts.append(item)
        return parts[0] if len(parts) == 1 else parts

    def prompts(self, prompts: list[Prompt] | None) -> Any:
        return None if prompts is None else [self.prompt(p) for p in prompts]

    # --- the loop -----------------------------------------------------------------------

    def stack_for(self, target: str) -> list[list[Any]]:
        try:
            address = self.flow.address(target)
        except KeyError as exc:
            raise FlowError(str(exc.args[0])) from None
        frames = [[steps, i + 1] for steps, i in address[:-1]]
        steps, i = address[-1]
        return [*frames, [steps, i]]

    async def run_steps(self, steps: list[StepBase], *, start: list[list[Any]] | None = None) -> _Stop | None:
        """Run ``steps`` (or continue the stack ``start``, a resumed position) to the end of
        the enclosing lists, a stop, or an exception."""
        stack: list[list[Any]] = start if start is not None else [[steps, 0]]
        outer, self.stack = self.stack, stack
        self._nested += outer != []  # a run inside a step (the agent's hung-up branch) checkpoints nothing
        try:
            return await self._loop(stack)
        finally:
            self.stack = outer
            self._nested -= outer != []

    async def _loop(self, stack: list[list[Any]]) -> _Stop | None:
        while stack:
            frame = stack[-1]
            items, i = frame
            if i >= len(items):
                stack.pop()
                continue
            frame[1] = i + 1
            step = items[i]
            self.budget.used += 1
            if self.budget.used > self.budget.limit:
                raise FlowError(f"{self.where(step)}: more than {self.budget.limit} steps ran "
                                "(an endless goto loop?)")
            if step.when is not None and not evaluate(step.when, self.context()):
                continue
            if self.hung_up_mode and step.audio:
                self.record(step, {"skipped": "caller hung up"}, 0.0)
                continue
            clock = asyncio.get_running_loop().time
            started = clock()
            observers = self.call.observers  # the worker's tracing, a live view...
            observers.step_started(step, {
                "where": self.where(step), "file": str(self.flow.path or self.flow.name), "line": self.line_of(step),
                "label": f"{step.kind}{' #' + step.id if step.id else ''} ({self.where(step)})"})
            if step is not self._attempt_step:  # a restored attempt is only that step's
                self.attempt = self._attempt_step = None
            if step.waits_for is not None:
                self.checkpoint(step.waits_for)
            try:
                signal = await self.execute(step)
            except BaseException as exc:
                observers.step_ended(step, {"error": exc})
                raise
            duration = clock() - started  # one reading: the record and the trace agree
            self.record(step, self.last, duration)
            observers.step_ended(step, {"result": self.last, "duration": duration})
            if isinstance(signal, _Branch):
                if signal.steps:
                    stack.append([signal.steps, 0])
            elif isinstance(signal, _Goto):
                stack = self.stack = self.stack_for(signal.target)
            elif isinstance(signal, _Stop):
                return signal
            self.checkpoint()
        return None

    # --- positions ----------------------------------------------------------------------

    def position(self, waiting_for: str | None = None) -> FlowPosition:
        """Where this run (and the subflow it is in, if any) is; ``waiting_for``: the innermost
        run is inside a step that waits for it (the position points at that step)."""
        # A resume runs each step the position is inside again (subflow steps, a waiting
        # step): those do not count as run yet. The budget is the call's, one for all levels.
        again, runner = int(waiting_for is not None), self
        while runner.child is not None:
            again, runner = again + 1, runner.child
        since = time.time() if waiting_for is not None else None  # taken as the step starts
        return self._position(waiting_for, since, max(self.budget.used - again, 0))

    def _position(self, waiting_for: str | None, since: float | None, steps_run: int) -> FlowPosition:
        inner = self.child._position(waiting_for, since, steps_run) if self.child is not None else None
        return FlowPosition(
            flow=str(self.flow.path) if self.flow.path else (self.flow.name or "flow"), version=self.flow.version,
            frames=frames_of(self.flow, self.stack, in_step=inner is not None or waiting_for is not None),
            waiting_for=waiting_for if inner is None else None, waiting_since=since if inner is None else None,
            attempt=self.attempt if inner is None and waiting_for is not None else None,
            params=self.params, vars=self.vars, digits=self.digits, last=self.last, error=self.error,
            hung_up=self.hung_up_mode, steps_run=steps_run, step_limit=self.budget.limit, subflow=inner)

    def checkpoint(self, waiting_for: str | None = None) -> None:
        """Hand the whole run's position (from the top flow down) to the observer, if any."""
        root: _Runner = self
        runner: _Runner | None = self
        while runner is not None:
            if runner._nested or runner.hung_up_mode:
                return  # inside a step's own run, or the caller has gone: nothing to take over
            root, runner = runner, runner.parent
        if root.observer is None:
            return
        try:
            position = root.position(waiting_for)
        except PositionError as exc:  # pragma: no cover - every pushed list is a declared branch
            log.warning("flow %s: no position: %s", self.flow.name, exc)
            return
        try:
            root.observer(position)
        except Exception as exc:  # noqa: BLE001 - a checkpoint store that fails never stops a call
            log.warning("flow %s: position observer failed: %s", self.flow.name, exc)

    def restore(self, position: FlowPosition) -> tuple[str, list[list[Any]]]:
        """Take the run's state from ``position``; its section and stack to continue."""
        if position.version != self.flow.version:
            raise PositionError(f"position is for version {position.version or '-'} of {position.flow}, "
                                f"not {self.flow.version or '-'} ({self.flow.path or self.flow.name})")
        section, stack = stack_of(self.flow, position.frames)
        self.params = dict(position.params)
        self.vars.update(position.vars)
        self.digits, self.last, self.error = position.digits, position.last, position.error
        self.hung_up_mode = self.hung_up_mode or position.hung_up
        self.resume_subflow = position.subflow
        self.attempt = position.attempt if position.waiting_for == "input" else None
        items, at = stack[-1]
        self._attempt_step = items[at] if self.attempt is not None and at < len(items) else None
        if position.waiting_for == "transfer" and position.waiting_since is not None:
            # The previous owner's offer may still ring: the transfer step checks before offering again.
            self.transfer_in_flight_since = position.waiting_since
        return section, stack

    def record(self, step: StepBase, result: Any, duration: float) -> None:
        self.call.call_record.add_step(step.kind, step.id, _plain(result), duration)

    async def execute(self, step: StepBase) -> _Branch | _Goto | _Stop | None:
        signal = await HANDLERS.handler(step)(self, step, step.action)
        return self.follow(step, signal) if isinstance(signal, _Take) else signal

    def follow(self, step: StepBase, take: _Take) -> _Branch | _Stop:
        """What the outcome a result picked means, as the step's model declares it."""
        outcome = step.outcome(take.key)
        if outcome is None or outcome.carries_on:  # a branch written (maybe []), or none needed
            return _Branch(outcome.steps if outcome is not None else [])
        if outcome.unwritten == "error":
            raise FlowError(take.error or f"{self.where(step)}: {step.kind} {outcome.label}")
        return _Stop(outcome.unwritten)  # transferred / hangup: the call has left the IVR

    def store(self, into: str | None, value: Any) -> None:
        if into:
            self.vars[into] = value

    # --- steps --------------------------------------------------------------------------

    async def do_answer(self, step: AnswerStep, _: None) -> None:
        await self.call.answer()
        self.last = None

    async def do_hangup(self, step: HangupStep, _: None) -> _Stop:
        await self.call.hangup()
        self.last = None
        return _Stop("hangup")

    async def do_play(self, step: PlayStep, a: PlayArgs) -> None:
        files = [self.audio(f) for f in a.files]
        result = await self.call.play(*files, loop=a.loop, barge_in=a.barge_in)
        self.last = step_result(result)

    async def do_say(self, step: SayStep, a: SayArgs) -> None:
        result = await self.call.say(self.text(a.text), voice=a.voice, tts=a.tts, barge_in=a.barge_in)
        self.last = step_result(result)

    async def do_hours(self, step: HoursStep, a: HoursArgs) -> _Take:
        if a.pbx is None:
            assert a.schedule is not None  # the model requires weekly without pbx
            open_now = is_open(a.schedule, self.call.now())
            self.last = {"open": open_now}
            self.store(a.into, open_now)
            return _Take("open" if open_now else "closed")
        answer = await self.call.pbx_hours(a.pbx.department, fallback=a.schedule)
        self.last = answer.to_dict()
        self.store(a.into, answer.open)
        # break and holiday run `closed` unless the flow wrote a branch for them
        return _Take(answer.state if step.outcome(answer.state) is not None else "closed")

    async def do_amd(self, step: AmdStep, a: AmdArgs) -> _Take:
        result = await self.call.detect_machine(
            wait_for_beep=a.wait_for_beep, max_greeting=a.max_greeting, initial_silence=a.initial_silence,
            greeting_max=a.greeting_max, after_greeting_silence=a.after_greeting_silence, total_max=a.total_max)
        self.last = {"result": result.result, "reason": result.reason, "decided_after": result.decided_after,
                     "greeting_end": result.greeting_end}
        self.store(a.into, result.result)
        return _Take(result.result)

    def _gather_result(self, step: StepBase, result: Any, into: str | None, key: str) -> dict[str, Any]:
        out = step_result(result)
        if out is None or "digits" not in out:
            raise FlowError(f"{self.where(step)}: {step.kind} got {type(result).__name__}, not a GatherResult")
        self.digits = result.digits
        self.last = out
        # `into` gets the value authors want in a variable: the digits (gather) or the key
        # (menu), or the matched choice when it was said; `last` keeps the whole result.
        if out["source"] == "speech":
            key = "choice"
        self.store(into, out[key] if out["status"] == "match" else None)
        return out

    def _attempts(self, mark: type[AttemptMark | DirectoryMark] = AttemptMark) -> dict[str, Any]:
        """A gather's, menu's or directory's start attempt (a resumed step; ``mark`` its kind)
        and the hook that checkpoints each later attempt as it starts, so a takeover leaves the
        caller only the tries left."""
        def started(at: AttemptMark | DirectoryMark) -> None:
            if at.number > 1 and at != self.attempt:
                self.attempt = at
                self.checkpoint("input")

        return {"start": self.attempt if isinstance(self.attempt, mark) else None, "on_attempt": started}

    async def do_menu(self, step: MenuStep, a: MenuArgs) -> _Take:
        try:
            result = await self.call.menu(
                prompt=self.prompt(a.prompt), choices=list(a.choices), retries=a.retries,
                reprompt=self.prompt(a.reprompt), no_input_prompt=self.prompts(a.no_input_prompt),
                no_match_prompt=self.prompts(a.no_match_prompt), timeout=a.timeout, barge_in=a.barge_in,
                speech=a.speech.options if a.speech is not None else None, **self._attempts(),
            )
        finally:
            self.attempt = self._attempt_step = None
        out = self._gather_result(step, result, a.into, "choice")
        if out["status"] == "match":
            return _Take(out["choice"] or out["digits"])
        return _Take("no_input" if out["status"] == "no_input" else "no_match")

    async def do_gather(self, step: GatherStep, a: GatherArgs) -> _Take:
        try:
            result = await self.call.gather(
                prompt=self.prompt(a.prompt), rules=a.rules, retries=a.retries,
                reprompt=self.prompt(a.reprompt), no_input_prompt=self.prompts(a.no_input_prompt),
                no_match_prompt=self.prompts(a.no_match_prompt), barge_in=a.barge_in,
                speech=a.speech.options if a.speech is not None else None, **self._attempts(),
            )
        finally:
            self.attempt = self._attempt_step = None
        out = self._gather_result(step, result, a.into, "digits")
        return _Take(out["status"])

    async def do_transfer(self, step: TransferStep, a: TransferArgs) -> _Take:
        to = self.text(a.to).strip()
        if not to:
            raise FlowError(f"{self.where(step)}: transfer destination {str(a.to)!r} rendered empty")
        if a.check_presence and (away := await self._unavailable(to)) is not None:
            self.last = away
            self.store(a.into, away)
            return _Take("unavailable")  # nobody was rung
        ringback = a.ringback if a.ringback is not None else self.flow.ringback
        since, self.transfer_in_flight_since = self.transfer_in_flight_since, None
        result = await self.call.transfer(to, mode=a.mode, timeout=a.timeout,
                                          ringback=ringback if isinstance(ringback, str) else self.prompt(ringback),
                                          **({"in_flight_since": since} if since is not None else {}))
        self.last = step_result(result)
        self.store(a.into, self.last)
        return _Take(result.status)  # answered with no on_answered: the call has left the IVR

    async def _unavailable(self, to: str) -> dict[str, Any] | None:
        """A transfer's result when the PBX says ``to`` cannot take calls now (away, do not
        disturb, out of office, no phone registered), else None. A number the PBX has no user
        for (a queue, an outside number) or an unknown presence rings as usual."""
        presence = await self.call.presence(to)
        if presence is None or presence.available:
            return None
        return {"status": "unavailable", "reason": presence.reason, "destination": to,
                "presence": presence.state, "name": presence.name}

    async def do_directory(self, step: DirectoryStep, a: DirectoryArgs) -> _Take:
        def announce(key: str, user: Any) -> Any:
            names = {"key": key, "number": user.Number or "", "name": user.name,
                     "first_name": user.FirstName or "", "last_name": user.LastName or ""}
            recorded = None
            if a.name_prompt is not None:  # the PBX's data is in it: only files in the audio folders
                try:
                    path = within_any(self.text(a.name_prompt, **names), self._audio_roots(), "name prompt")
                except UnsafePathError as exc:
                    log.warning("%s: %s; the name is spoken instead", self.where(step), exc)
                else:
                    found = resolve_audio(path, self.flow.folder)
                    recorded = str(found) if found is not None else None
            if a.announce is not None:
                text = self.text(a.announce, **names)
                return [recorded, {"say": f"press {key}."}] if recorded else {"say": text}
            if recorded:
                return [{"say": "For"}, recorded, {"say": f"press {key}."}]
            return {"say": f"For {user.name}, press {key}."}

        try:
            found = await self.call.directory(
                prompt=self.prompt(a.prompt), match=a.match, department=a.department, max_matches=a.max_matches,
                retries=a.retries, max_letters=a.max_letters, first_digit_timeout=a.first_digit_timeout,
                inter_digit_timeout=a.inter_digit_timeout, too_many_prompt=self.prompt(a.too_many_prompt),
                no_match_prompt=self.prompt(a.no_match_prompt), no_input_prompt=self.prompt(a.no_input_prompt),
                choose_prompt=self.prompt(a.choose_prompt), announce=announce, speech=a.speech_options,
                **self._attempts(DirectoryMark),
            )
        finally:
            self.attempt = self._attempt_step = None
        self.last = step_result(found) or {}
        self.store(a.into, self.last)
        if not found.found:
            return _Take(found.status)
        if not a.transfer:
            return _Take("found")
        if a.check_presence and (away := await self._unavailable(found.number)) is not None:
            self.last = {**self.last, "transfer": away}
            self.store(a.into, self.last)
            return _Take("unavailable")
        ringback = self.flow.ringback
        result = await self.call.transfer(found.number, mode=a.mode, timeout=a.timeout,
                                          ringback=ringback if isinstance(ringback, str) else self.prompt(ringback))
        self.last = {**self.last, "transfer": step_result(result)}
        self.store(a.into, self.last)
        # no phone registered, as the PBX answered: a failure (check_presence catches it before ringing)
        return _Take("failed" if result.status == "not_registered" else result.status)

    def _audio_roots(self) -> list[Path]:
        """Where a prompt rendered from a template may come from: the audio folders and the
        recordings (a flow may play back what it recorded)."""
        return [*audio_search_path(self.flow.folder), *self.call.audio_dirs, self.call.recordings_dir]

    def _where_node(self, node: Any) -> str:
        """file:line of a template inside the flow (for errors about its value)."""
        if self._node_lines is None:
            self._node_lines = {}
            if self.flow._src is not None:
                for item, src, _, _ in walk_nodes(self.flow, self.flow._src):
                    if isinstance(item, Template):
                        self._node_lines.setdefault(id(item), src.line)
        name = self.flow.path.name if self.flow.path else str(self.flow.name)
        line = self._node_lines.get(id(node), 0)
        return f"{name}:{line}" if line else name

    def _recording_path(self, step: StepBase, rendered: str) -> str:
        """A record/voicemail file inside the call's recordings_dir, or a FlowError."""
        try:
            return within_root(rendered, self.call.recordings_dir, f"{step.kind} file")
        except UnsafePathError as exc:
            raise FlowError(f"{self.where(step)}: {exc}") from None

    async def do_record(self, step: RecordStep, a: RecordArgs) -> _Take | None:
        result = await self.call.record(
            self._recording_path(step, self.text(a.file)), max_seconds=a.max_seconds, silence_end=a.silence_end,
            stop_keys=a.stop_keys,
            beep=a.beep, mode=a.mode, metadata={k: str(v) for k, v in self.value(a.metadata).items()} or None,
            initial_silence=a.initial_silence, discard_empty=a.discard_empty,
        )
        self.last = step_result(result)
        self.store(a.into, self.last)
        return _Take("empty") if result.empty else None

    async def do_voicemail(self, step: VoicemailStep, a: VoicemailArgs) -> _Take | None:
        mailbox = self.text(a.mailbox)
        path = self._recording_path(step, self.text(a.file, mailbox=mailbox))  # refused before the greeting
        if a.greeting is not None:
            await self.call.play_prompt(self.prompt(a.greeting), barge_in=True)
        result = await self.call.record(
            path, max_seconds=a.max_seconds, silence_end=a.silence_end, stop_keys=a.stop_keys, beep=a.beep,
            metadata={"mailbox": mailbox, "kind": "voicemail"},
            initial_silence=a.initial_silence, discard_empty=a.discard_empty,
        )
        self.last = {**(step_result(result) or {}), "mailbox": mailbox}
        self.store(a.into, self.last)
        return _Take("empty") if result.empty else None

    async def do_set(self, step: SetStep, values: dict[str, Any]) -> None:
        for name, value in values.items():  # in order: later values see earlier ones
            self.vars[name] = render_value(value, self.context())
        self.last = {k: self.vars[k] for k in values}

    async def do_if(self, step: IfStep, cond: Any) -> _Take:
        result = evaluate(cond, self.context())
        self.last = {"result": result}
        return _Take("then" if result else "else")

    async def do_switch(self, step: SwitchStep, value: Template) -> _Take:
        text = self.text(value).strip()
        self.last = {"value": text}
        return _Take(text)

    async def do_goto(self, step: GotoStep, target: str) -> _Goto:
        self.last = {"target": target}
        return _Goto(target)

    async def do_subflow(self, step: SubflowStep, a: SubflowArgs) -> None:
        path = self.flow.folder / a.file
        params = self.value(a.params)
        returned = await _run_path(self.call, path, params, self.budget, hung_up=self.hung_up_mode, parent=self)
        self.last = returned
        self.store(a.into, returned)

    async def do_http(self, step: HttpStep, a: HttpArgs) -> _Take:
        from ivr.templating.httpclient import HttpFailure, fetch
        from ivr.templating.urls import host_of, render_url

        try:
            url = render_url(a.url, self.context())  # values percent-encoded unless | raw_url
        except TemplateError as exc:
            raise FlowError(f"{self.where(step)}: http {a.method}: {exc}") from None
        headers = {k: self.text(v) for k, v in a.headers.items()}
        query = {k: str(v) for k, v in self.value(a.query).items()}
        json_body = self.value(a.json_) if a.json_ is not None else None
        data = self.text(a.body).encode() if a.json_ is None and a.body is not None else None
        result: dict[str, Any]
        try:
            answer = await fetch(a.method, url, headers=headers, params=query or None, json=json_body, data=data,
                                 timeout=a.timeout, max_body=MAX_HTTP_BODY)
            result = {"status": answer.status, "ok": answer.status < 400, "text": answer.text,
                      "json": None, "body": answer.text, "error": None}
            if "json" in answer.content_type:
                try:
                    result["json"] = result["body"] = json.loads(answer.text)
                except ValueError:
                    pass
        except HttpFailure as exc:  # names only the host: the URL's query may hold secrets
            result = {"status": 0, "ok": False, "text": "", "json": None, "body": None, "error": str(exc)}
        self.last = result
        self.store(a.into, result)
        if result["ok"]:
            return _Take("ok")
        problem = result["error"] or f"HTTP {result['status']} from {host_of(url)}"
        return _Take("failure", error=f"{self.where(step)}: http {a.method} failed: {problem}")

    async def do_pause(self, step: PauseStep, seconds: float) -> None:
        await self.call.sleep(seconds)
        self.last = None

    async def do_log(self, step: LogStep, a: LogArgs) -> None:
        message = self.text(a.message)
        if a.level == "info":
            self.call.log_event(message, step=step.id or step.kind)
        else:
            logging.getLogger("ivr.flow.log").log(logging.getLevelName(a.level.upper()), "%s", message)
        self.last = {"message": message}

    async def do_attach_data(self, step: AttachDataStep, data: dict[str, Template]) -> None:
        values = {k: self.text(v) for k, v in data.items()}
        await self.call.attach_data(values)
        self.last = values

    async def do_agent(self, step: AgentStep, a: AgentArgs) -> _Stop | _Take:
        from ivr.agent import run_agent  # on use: flows without agents never load it

        result = await run_agent(
            self.call, system=self.text(a.system), greeting=None if a.greeting is None else self.text(a.greeting),
            llm=a.llm, stt=a.stt, tts=a.tts, voice=a.voice, tools=self._agent_tools(a.tools),
            max_turns=a.max_turns, max_seconds=a.max_seconds, silence_timeout=a.silence_timeout,
            max_reprompts=a.max_reprompts, reprompt=self.text(a.reprompt), apology=self.prompt(a.apology),
            llm_timeout=a.llm_timeout, stt_timeout=a.stt_timeout, end_of_turn_ms=a.end_of_turn_ms,
            temperature=a.temperature, keys="".join(a.keys), variables=self.vars, context=self.context,
        )
        self.last = result.to_dict()
        self.store(a.into, self.last)
        if result.status == "key":  # one of the agent's keys: that key's steps
            return _Take(f"key_{result.data.get('key', '')}")
        if result.status == "hangup":  # the agent hung up: the branch runs without audio
            self.hung_up_mode = True
            await self.run_steps(a.on_hangup)
            return _Stop("hangup")
        return _Take(result.status, error=f"{self.where(step)}: agent failed: {result.error}")

    def _agent_tools(self, t: Any) -> Any:
        """The step's tool declarations as ivr.agent.AgentTools (transfer numbers rendered now)."""
        from ivr.agent import AgentTools, HttpTool, ParamSpec, ReturnTool

        def params(spec: dict[str, Any]) -> dict[str, Any]:
            return {k: ParamSpec(p.type, p.description, tuple(p.enum or ()), p.required) for k, p in spec.items()}

        ret = (ReturnTool() if t.return_ is True else
               ReturnTool(t.return_.description, params(t.return_.fields)) if t.return_ else None)
        return AgentTools(
            transfer={name: self.text(dest) for name, dest in t.transfer.items()},
            transfer_mode=t.transfer_mode, transfer_timeout=t.transfer_timeout, hangup=t.hangup,
            http=tuple(HttpTool(name=h.name, url=h.url, description=h.description, method=h.method,
                                headers=dict(h.headers), parameters=params(h.parameters), json=h.json_,
                                timeout=h.timeout) for h in t.http),
            set=dict(t.set) if isinstance(t.set, dict) else {n: "" for n in t.set}, return_=ret,
        )

    async def do_return(self, step: ReturnStep, values: dict[str, Any] | None) -> _Stop:
        returned = self.value(values) if values else {}
        self.last = returned
        return _Stop("returned", returned)


S = TypeVar("S", bound=StepBase)
#: A step's handler: ``(runner, step, step.action) -> signal`` (None: on with the next step).
Handler = Callable[[_Runner, S, Any], Awaitable[_Signal]]


class StepHandlers:
    """The one table from a step model class to the ``_Runner`` method that runs it; ``add``
    pairs them so a type checker sees each handler take its own step class."""

    def __init__(self) -> None:
        self._by_class: dict[type[StepBase], Handler[Any]] = {}

    def add(self, cls: type[S], handler: Handler[S]) -> None:
        self._by_class[cls] = handler

    def handler(self, step: StepBase) -> Handler[Any]:
        try:
            return self._by_class[type(step)]
        except KeyError:
            raise FlowError(f"no handler for {step.kind!r} steps") from None

    def missing(self) -> list[str]:
        """Step kinds of the flow format without a handler (a test keeps this empty)."""
        return [kind for kind, cls in STEP_TYPES.items() if cls not in self._by_class]


HANDLERS = StepHandlers()
HANDLERS.add(AnswerStep, _Runner.do_answer)
HANDLERS.add(HangupStep, _Runner.do_hangup)
HANDLERS.add(PlayStep, _Runner.do_play)
HANDLERS.add(SayStep, _Runner.do_say)
HANDLERS.add(HoursStep, _Runner.do_hours)
HANDLERS.add(AmdStep, _Runner.do_amd)
HANDLERS.add(MenuStep, _Runner.do_menu)
HANDLERS.add(GatherStep, _Runner.do_gather)
HANDLERS.add(TransferStep, _Runner.do_transfer)
HANDLERS.add(DirectoryStep, _Runner.do_directory)
HANDLERS.add(RecordStep, _Runner.do_record)
HANDLERS.add(VoicemailStep, _Runner.do_voicemail)
HANDLERS.add(SetStep, _Runner.do_set)
HANDLERS.add(IfStep, _Runner.do_if)
HANDLERS.add(SwitchStep, _Runner.do_switch)
HANDLERS.add(GotoStep, _Runner.do_goto)
HANDLERS.add(SubflowStep, _Runner.do_subflow)
HANDLERS.add(HttpStep, _Runner.do_http)
HANDLERS.add(PauseStep, _Runner.do_pause)
HANDLERS.add(LogStep, _Runner.do_log)
HANDLERS.add(AttachDataStep, _Runner.do_attach_data)
HANDLERS.add(AgentStep, _Runner.do_agent)
HANDLERS.add(ReturnStep, _Runner.do_return)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


async def _run(flow: Flow, call: CallApi, params: dict[str, Any] | None, budget: StepBudget,
               vars_: dict[str, Any] | None, *, hung_up: bool = False, resume: FlowPosition | None = None,
               parent: _Runner | None = None, observer: PositionObserver | None = None) -> FlowOutcome:
    unknown = sorted(set(params or {}) - set(flow.params))
    if unknown:
        raise FlowError(f"flow {flow.name!r} has no parameter {unknown[0]!r} (it takes: {', '.join(flow.params) or 'none'})")
    merged = {**flow.params, **(params or {})}
    if vars_ is None:
        vars_ = {}
    for name, value in flow.vars.items():
        vars_.setdefault(name, value)
    runner = _Runner(flow, call, merged, vars_, budget, parent=parent, observer=observer)
    runner.hung_up_mode = hung_up
    section, stack = "steps", None
    if resume is not None:
        section, stack = runner.restore(resume)  # PositionError when it does not fit this flow
    if parent is not None:
        parent.child = runner
    try:
        return await _run_sections(runner, section, stack, hung_up=hung_up)
    finally:
        if parent is not None:
            parent.child = None


async def _run_sections(runner: _Runner, section: str, stack: list[list[Any]] | None, *, hung_up: bool) -> FlowOutcome:
    """``steps``, then ``on_error`` on a failure or ``on_hangup`` when the caller leaves;
    ``section`` and ``stack``: a resumed run continues there."""
    flow, call, budget = runner.flow, runner.call, runner.budget
    start = budget.used
    try:
        try:
            if section == "on_error":
                return await _recover(runner, runner.error or "", start, stack)
            if section == "on_hangup":
                await _after_hangup(runner, stack)
                return FlowOutcome("caller_hangup", steps=budget.used - start)
            stop = await runner.run_steps(flow.steps, start=stack)
        except CallHangup:
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - any step failure goes to on_error
            message = str(exc) or type(exc).__name__
            log.warning("flow %s: %s", flow.name, message)
            call.call_record.errors.append(message)
            if not flow.on_error or hung_up:
                return FlowOutcome("error", error=message, steps=budget.used - start)
            runner.error = message
            budget.limit = max(budget.limit, budget.used + ERROR_ALLOWANCE)
            return await _recover(runner, message, start)
    except CallHangup:
        if not hung_up and flow.on_hangup:
            await _after_hangup(runner)
        return FlowOutcome("caller_hangup", steps=budget.used - start)
    if stop is None:
        return FlowOutcome("completed", steps=budget.used - start)
    return FlowOutcome(stop.status, returned=stop.returned, steps=budget.used - start)


async def _recover(runner: _Runner, message: str, start: int, stack: list[list[Any]] | None = None) -> FlowOutcome:
    """Run on_error (``error`` set); CallHangup propagates."""
    budget = runner.budget
    try:
        await runner.run_steps(runner.flow.on_error, start=stack)
    except CallHangup:
        raise
    except Exception as again:  # noqa: BLE001
        return FlowOutcome("error", error=f"{message}; then on_error failed: {again}", steps=budget.used - start)
    return FlowOutcome("error", error=message, handled=True, steps=budget.used - start)


async def _after_hangup(runner: _Runner, stack: list[list[Any]] | None = None) -> None:
    """Run on_hangup with audio steps skipped; its failures are logged (nobody is left to tell)."""
    runner.hung_up_mode = True
    runner.budget.limit = max(runner.budget.limit, runner.budget.used + ERROR_ALLOWANCE)
    try:
        await runner.run_steps(runner.flow.on_hangup, start=stack)
    except Exception as exc:  # noqa: BLE001 - nobody is left to tell; log it
        log.warning("flow %s: on_hangup failed: %s", runner.flow.name, exc)


def _budget_of(call: CallApi, max_steps: int) -> StepBudget:
    """The call's budget (made with ``max_steps`` by the first flow that runs on it): one per
    call, shared by the flow, every subflow it runs and a Python flow's subflows."""
    if call.flow_budget is None:
        call.flow_budget = StepBudget(max_steps)
    return call.flow_budget


async def _run_path(call: CallApi, path: Path, params: dict[str, Any], budget: StepBudget, *, hung_up: bool = False,
                    parent: _Runner | None = None) -> dict[str, Any]:
    """Run a subflow file; its ``return`` values (or {}) come back. Errors propagate.
    ``parent``: the runner of the subflow step (its position includes the subflow's, and a
    resumed parent hands the subflow the position to continue from)."""
    runnable = _load_cached(path)
    resume = None
    if parent is not None:
        resume, parent.resume_subflow = parent.resume_subflow, None
    if isinstance(runnable, YamlFlow):
        outcome = await _run(runnable.flow, call, params, budget, {}, hung_up=hung_up, resume=resume, parent=parent)
        if outcome.status == "error" and not outcome.handled:
            raise FlowError(f"subflow {path.name}: {outcome.error}")
        if outcome.status == "caller_hangup":
            raise runnable_hangup()
        return outcome.returned or {}
    result = await runnable.run(call, params=params)
    return result if isinstance(result, dict) else ({} if result is None else {"result": result})


_CACHE: dict[Path, tuple[tuple[int, int], Any]] = {}


def _load_cached(path: Path) -> Any:
    """load_any with a cache keyed by the file's mtime and size (subflows run per call)."""
    from . import load_any

    key = path.resolve()
    try:
        st = key.stat()
    except OSError:
        return load_any(path)  # raises the proper "file not found" FlowLoadError
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    runnable = load_any(path)
    if len(_CACHE) > 256:
        _CACHE.clear()
    _CACHE[key] = (stamp, runnable)
    return runnable


def runnable_hangup() -> BaseException:
    return CallHangup("caller hung up during a subflow")


async def run_flow(flow: Flow, call: CallApi, *, params: dict[str, Any] | None = None,
                   max_steps: int = MAX_STEPS, resume: FlowPosition | None = None,
                   on_position: PositionObserver | None = None) -> FlowOutcome:
    """Run ``flow`` on ``call`` to its end; step failures become ``FlowOutcome("error")``
    (after ``on_error``), a caller hang-up ``"caller_hangup"`` (after ``on_hangup``).
    Raises :class:`FlowError` only for ``params`` the flow does not declare, and
    :class:`~ivr.flow.position.PositionError` for a ``resume`` position that does not fit the
    flow (another version of the file, a frame that is not there).

    The flow's variables live in ``call.vars`` (initial ``vars:`` fill in names not set
    yet). ``max_steps`` bounds the steps of this call, subflows included.

    ``resume``: continue from a position ``on_position`` was given (in this process or
    another): its variables, parameters and step count come back, and the step it points at
    runs (again, if it was running: a prompt replays, a gather starts afresh; inside a YAML
    subflow, the subflow step resumes the subflow there). ``on_position`` is told the
    position after every step and as a step that waits starts."""
    from .python_call import FlowCall

    if isinstance(call, FlowCall):  # a Python flow running a YAML flow itself: its steps are not actions
        call = call.call
    vars_ = call.vars
    budget = _budget_of(call, max_steps)
    if resume is not None:  # the call's step count goes on where the position left it
        budget.used = resume.steps_run
        budget.limit = max(budget.limit, resume.step_limit)
    return await _run(flow, call, params, budget, vars_, resume=resume, observer=on_position)


class YamlFlow:
    """A loaded YAML flow as the worker runs it: ``await YamlFlow(flow).run(call)``."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.path = flow.path
        self.name = flow.name

    async def run(self, call: CallApi, params: dict[str, Any] | None = None, *, resume: FlowPosition | None = None,
                  on_position: PositionObserver | None = None) -> FlowOutcome:
        """Run the flow (from ``resume``, telling ``on_position``: see :func:`run_flow`);
        re-raises CallHangup, raises FlowError for an unhandled error."""
        outcome = await run_flow(self.flow, call, params=params, resume=resume, on_position=on_position)
        if outcome.status == "caller_hangup":
            raise runnable_hangup()
        if outcome.status == "error" and not outcome.handled:
            raise FlowError(outcome.error)
        return outcome

    def __repr__(self) -> str:
        return f"YamlFlow({str(self.path or self.name)!r})"
