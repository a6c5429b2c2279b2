"""Where a flow run is, as a plain value: what a checkpoint stores and a resume starts from.

(A Python flow's position is its journal, ``actions``, with one frame counting them:
``ivr/flow/replay.py``. The rest of this text is about YAML flows.)

A :class:`FlowPosition` names the flow (file and content version), the step to run next as a
chain of frames through nested branches, the flow's variables and parameters, ``digits``,
``last``, ``error``, the steps the call has run, what the call waits for when the position was
taken inside a step, and, inside a ``subflow`` step, the subflow's own position. It holds only
JSON values, so ``FlowPosition.model_validate_json(p.model_dump_json())`` gives it back.

Frames mirror the interpreter's stack: the first names a section (``steps``, ``on_error``,
``on_hangup``) and the index of the step to run next in it; each further frame is a branch of
the step just before the previous frame's index (its key path in the YAML mapping, e.g.
``["menu", "choices", "1"]``, as :class:`~ivr.flow.schema.Outcome` declares it). Indices and
keys, not object ids: the position means the same thing in another process that loaded the
same file.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ivr.call.collector import AttemptMark
from ivr.call.results import DirectoryMark

from .schema import Flow, StepBase

__all__ = ["FlowPosition", "Frame", "PositionError", "frames_of", "plain", "stack_of"]

Section = Literal["steps", "on_error", "on_hangup"]
#: Deepest nesting of values a position keeps (variables are the flow's; a deeper value is cut).
MAX_DEPTH = 32


class PositionError(ValueError):
    """A position does not fit the flow it is given to (another version, a bad frame)."""


def plain(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON values: mappings with text keys, lists, text, finite numbers, booleans,
    None; anything else becomes its text, so a position never fails to serialise."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {str(k): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    if value is None:
        return None
    for kind in (bool, int, str):  # subclasses (a rendered template, an IntEnum) as the plain type
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    return str(value)


class Frame(BaseModel):
    """One list on the way to the next step: which list (``branch``) and the next index."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    branch: tuple[str, ...] = Field(min_length=1)
    at: int = Field(ge=0)


class FlowPosition(BaseModel):
    """A flow run's position; see the module text. ``waiting_for`` is set when the position
    was taken as the step at it started and waits for something (``input``, ``prompt``,
    ``transfer``, ``recording``, ``http``, ``conversation``: the step model's ``waits_for``);
    resuming runs that step again either way (a prompt replays). A gather or menu past its
    first attempt also has ``attempt`` (a directory past its first try: a
    :class:`~ivr.call.results.DirectoryMark`): the resumed step starts at that attempt, with
    its prompt and only the tries the caller had left. A Python flow's position has it for
    its action in progress."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = 1
    flow: str = Field(description="The flow file (or the name of a flow built in code).")
    version: str = Field(description="The flow's content hash; a resume checks it.")
    frames: list[Frame] = Field(min_length=1)
    waiting_for: str | None = None
    waiting_since: float | None = Field(None, description="Wall-clock time (Unix seconds) the waiting step started.")
    attempt: AttemptMark | DirectoryMark | None = Field(
        None, description="A gather or menu (a directory: its try) and the attempt that started (absent: the first).")
    params: dict[str, Any] = Field(default_factory=dict)
    vars: dict[str, Any] = Field(default_factory=dict)
    digits: str = ""
    last: Any = None
    error: str | None = None
    hung_up: bool = False
    steps_run: int = Field(0, ge=0, description="Steps the call has run (the per-call budget).")
    step_limit: int = Field(0, ge=0, description="The call's step budget then (on_error raises it).")
    subflow: FlowPosition | None = Field(None, description="Inside a subflow step: where the subflow is.")
    actions: list[dict[str, Any]] | None = Field(
        None, description="A Python flow's journal: the actions it completed (ivr/flow/replay.py); the one frame "
        "counts them.")

    @field_validator("params", "vars", "last", "actions", mode="before")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        return plain(value)

    @property
    def section(self) -> str:
        return self.frames[0].branch[0]

    def innermost(self) -> FlowPosition:
        """The position of the deepest subflow (itself when not in a subflow)."""
        return self if self.subflow is None else self.subflow.innermost()


def frames_of(flow: Flow, stack: list[list[Any]], *, in_step: bool = False) -> list[Frame]:
    """The interpreter's stack (``[step list, next index]`` frames) as frames. ``in_step``: a
    step of the top frame is running, so the position points at it (``next - 1``)."""
    stack = [list(f) for f in stack]
    if not in_step:  # a list run to its end is the same as "after the step that owns it"
        while len(stack) > 1 and stack[-1][1] >= len(stack[-1][0]):
            stack.pop()
    sections = {id(steps): name for name, steps in flow.sections()}
    if not stack or id(stack[0][0]) not in sections:
        raise PositionError("the run's first list is not a section of the flow")
    frames = [Frame(branch=(sections[id(stack[0][0])],), at=stack[0][1])]
    for (items, nxt), (branch, at) in pairwise(stack):
        owner: StepBase = items[nxt - 1]
        path = next((o.path for o in owner.outcomes() if o.steps is branch), None)
        if path is None:
            raise PositionError(f"a running list is not a branch of the {owner.kind} step before it")
        frames.append(Frame(branch=path, at=at))
    if in_step:
        frames[-1] = Frame(branch=frames[-1].branch, at=max(frames[-1].at - 1, 0))
    return frames


def stack_of(flow: Flow, frames: list[Frame]) -> tuple[str, list[list[Any]]]:
    """The section and the interpreter stack the frames mean in ``flow``;
    :class:`PositionError` naming the frame when they do not fit."""
    sections = dict(flow.sections())
    first = frames[0]
    if len(first.branch) != 1 or first.branch[0] not in sections:
        raise PositionError(f"frame 1: {'.'.join(first.branch)!r} is not a section (steps, on_error, on_hangup)")
    section = first.branch[0]
    stack: list[list[Any]] = []
    items: list[StepBase] = sections[section]
    for n, frame in enumerate(frames, 1):
        if n > 1:
            prev_items, prev_at = stack[-1]
            if not 0 < prev_at <= len(prev_items):
                raise PositionError(f"frame {n}: no step before index {prev_at} to branch from")
            owner = prev_items[prev_at - 1]
            found = next((o.steps for o in owner.outcomes() if o.path == frame.branch and o.steps), None)
            if found is None:
                raise PositionError(f"frame {n}: the {owner.kind} step has no branch {'.'.join(frame.branch)!r}")
            items = found
        if frame.at > len(items):
            raise PositionError(f"frame {n}: index {frame.at} is past the end of {'.'.join(frame.branch)!r} "
                                f"({len(items)} steps)")
        stack.append([items, frame.at])
    return section, stack
