"""A Python flow's journal: the actions it completed, so another process can resume it by replay.

A YAML flow's position names the step to run next. A Python flow's code has no such name, so
its position is the list of the actions it completed, in the order it called them, each with
its result as JSON (``plain()``) and a digest of its arguments. Resuming runs ``main`` again
from the top; the first actions it asks for are answered from the journal without being
performed (no audio, no PBX request, no observer sees them) as long as each has the kind and
arguments recorded; the first action not in the journal (the one that was in progress) runs
for real, and so does everything after it. A gather, menu or directory in progress also left
the attempt it was at (``FlowPosition.attempt``, checkpointed as each attempt from the second
on starts): run again, it starts there (:meth:`Journal.tries`). This is deterministic
replay, as durable-execution engines (Temporal) do it: the flow's code must take the same path
given the same results (the rule for flow authors is in docs/flows.md, "Python flows after a
takeover").

When the code asks for another action than the journal holds (the file changed in a way the
content hash cannot see, or the code is not deterministic), :class:`ReplayMismatch` stops the
run; :class:`~ivr.flow.python_flow.PythonFlow` then starts the flow again from the top, live.
Nothing was performed during the replay, so the restart is as if the call had just arrived.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from ivr.call.collector import AttemptMark
from ivr.call.results import DirectoryMark

from .position import FlowPosition, Frame, plain

__all__ = ["MISS", "TRIED", "Journal", "ReplayMismatch", "decode_result", "encode_result"]

log = logging.getLogger("ivr.flow")

#: ``Journal.begin`` found nothing recorded for the action: run it.
MISS: Any = object()

#: The actions that take tries: the position of one in progress keeps the try it is at
#: (``FlowPosition.attempt``), and the one resumed starts there.
TRIED = ("gather", "menu", "directory")


class ReplayMismatch(BaseException):
    """The flow asked for another action than its journal recorded: replay is not possible."""


def _result_types() -> dict[str, type]:
    """The action results replay rebuilds (by class name); any other result comes back plain."""
    from ivr.agent.result import AgentResult
    from ivr.call.machine import MachineResult
    from ivr.call.pbx_view import HoursAnswer, Presence
    from ivr.call.results import DirectoryResult, GatherResult, PlayResult, RecordResult, TransferResult

    types: list[type] = [PlayResult, GatherResult, TransferResult, RecordResult, DirectoryResult, HoursAnswer,
                         Presence, AgentResult, MachineResult]
    return {t.__name__: t for t in types}


def encode_result(result: Any) -> dict[str, Any]:
    """An action's result as JSON: a known result class by name and fields, else its plain value."""
    if is_dataclass(result) and not isinstance(result, type) and type(result).__name__ in _result_types():
        values = {f.name: getattr(result, f.name) for f in fields(result) if f.init}
        return {"type": type(result).__name__, "fields": plain(values)}
    return {"value": plain(result)}


def decode_result(encoded: Mapping[str, Any]) -> Any:
    """What :func:`encode_result` stored, as the flow saw it (a result class again, or the value)."""
    name = encoded.get("type")
    if name is None:
        return encoded.get("value")
    cls = _result_types().get(str(name))
    if cls is None:
        raise ReplayMismatch(f"unknown result type {name!r} in the journal")
    values = dict(encoded.get("fields") or {})
    if name == "RecordResult" and values.get("path") is not None:
        values["path"] = Path(values["path"])
    try:
        return cls(**values)
    except TypeError as exc:  # another version of the class: cannot rebuild it
        raise ReplayMismatch(f"cannot rebuild a {name}: {exc}") from None


def _stable(value: Any) -> Any:
    # A function (an ``announce``, an ``on_attempt``) by its name: its text has an address,
    # and a flow's module a load counter, that differ in the process that replays.
    if callable(value) and hasattr(value, "__qualname__"):
        return f"function {value.__qualname__}"
    return value


def digest(kind: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """A short digest of an action's arguments (as JSON values): a replay checks them too."""
    args, kwargs = tuple(_stable(a) for a in args), {k: _stable(v) for k, v in kwargs.items()}
    text = json.dumps([kind, plain(list(args)), plain(dict(kwargs))], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class Journal:
    """One run of a Python flow: numbers its actions in call order, replays the recorded ones,
    records the ones that complete, and tells ``on_position`` the position as an action starts
    (``waiting_for`` its kind) and after it ended."""

    def __init__(self, flow: str, version: str, *, params: Mapping[str, Any] | None = None,
                 variables: Callable[[], Mapping[str, Any]] | None = None,
                 on_position: Callable[[FlowPosition], None] | None = None,
                 resume: FlowPosition | None = None) -> None:
        self.flow = flow
        self.version = version
        self.params = dict(params or {})
        self.variables = variables or dict
        self.on_position = on_position
        self.next = 0  # the number the next action called gets
        self.done: dict[int, dict[str, Any]] = {}  # number -> entry, every action completed in this run
        self.recorded: dict[int, dict[str, Any]] = {}  # not replayed yet
        self.replayed = 0
        # The try the action in progress is at (``attempt_of`` its number): a checkpoint keeps it.
        self.attempt: AttemptMark | DirectoryMark | None = None
        self.attempt_of: int | None = None
        # The resumed position's: for the first action run for real, if of the kind it waited in.
        self._resumed_attempt: tuple[str, AttemptMark | DirectoryMark] | None = None
        if resume is not None:
            for entry in resume.actions or []:
                self.recorded[int(entry["n"])] = dict(entry)
            self.done = {n: dict(e) for n, e in self.recorded.items()}
            if resume.attempt is not None and resume.waiting_for in TRIED:
                self._resumed_attempt = (resume.waiting_for, resume.attempt)

    @property
    def replaying(self) -> bool:
        """Recorded actions are still to be asked for."""
        return bool(self.recorded)

    def begin(self, kind: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[int, str, Any]:
        """(number, digest, recorded result or MISS) for an action the flow calls now;
        :class:`ReplayMismatch` when the journal recorded another action under this number."""
        n, self.next = self.next, self.next + 1
        args_digest = digest(kind, args, kwargs)
        entry = self.recorded.pop(n, None)
        if entry is None:
            resumed, self._resumed_attempt = self._resumed_attempt, None  # the action in progress, if any
            if resumed is not None and resumed[0] == kind:
                self.attempt, self.attempt_of = resumed[1], n
            return n, args_digest, MISS
        if entry.get("kind") != kind or entry.get("args") != args_digest:
            what = "arguments" if entry.get("kind") == kind else f"a {kind}"
            raise ReplayMismatch(f"action {n + 1}: the flow asks for {what} where the journal has "
                                 f"{entry.get('kind')!r}")
        self.replayed += 1
        return n, args_digest, decode_result(entry.get("result") or {})

    def tries(self, n: int, kind: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments a gather, menu or directory runs with: ``start`` at the try the
        resumed position was at, if this is the action it waited in (it replaces the flow's own
        ``start``: it is later, reached from there), and an ``on_attempt`` that checkpoints each
        try from the second on, then calls the flow's own ``on_attempt``, if any."""
        own_hook = kwargs.get("on_attempt")
        start = self.attempt if self.attempt_of == n else kwargs.get("start")

        def started(mark: AttemptMark | DirectoryMark) -> None:
            if mark.number > 1 and (self.attempt_of != n or mark != self.attempt):
                self.attempt, self.attempt_of = mark, n
                self._tell(waiting_for=kind)
            if own_hook is not None:
                own_hook(mark)

        return {**kwargs, "start": start, "on_attempt": started}

    def started(self, n: int, kind: str) -> None:
        if self.attempt_of not in (None, n):
            self.attempt = self.attempt_of = None
        self._tell(waiting_for=kind)

    def ended(self, n: int, kind: str, args_digest: str, result: Any) -> None:
        self.done[n] = {"n": n, "kind": kind, "args": args_digest, "result": encode_result(result)}
        if self.attempt_of == n:
            self.attempt = self.attempt_of = None
        self._tell()

    def leftover(self) -> str | None:
        """After the flow returned: why the replay did not fit (recorded actions never asked for)."""
        if not self.recorded:
            return None
        first = min(self.recorded)
        return f"the flow ended before action {first + 1} ({self.recorded[first].get('kind')!r}) the journal has"

    def position(self, waiting_for: str | None = None) -> FlowPosition:
        actions = [self.done[n] for n in sorted(self.done)]
        return FlowPosition.model_construct(
            format=1, flow=self.flow, version=self.version, frames=[Frame(branch=("steps",), at=len(actions))],
            waiting_for=waiting_for, waiting_since=time.time() if waiting_for else None,
            attempt=self.attempt if waiting_for else None, params=plain(self.params),
            vars=plain(dict(self.variables())), digits="", last=None, error=None, hung_up=False, steps_run=len(actions),
            step_limit=0, subflow=None, actions=actions)

    def _tell(self, waiting_for: str | None = None) -> None:
        if self.on_position is None or self.replaying:
            return  # replaying: the position resumed from still says it all
        try:
            self.on_position(self.position(waiting_for))
        except Exception:  # a checkpoint that fails must not stop the call (as for YAML flows)
            log.exception("flow %s: cannot hand on its position", self.flow)
