"""The live view of one call: what changed since the last look, as JSON-ready messages.

The worker's :class:`~ivr.call.Call` and its call record are updated while the call runs and
the emulator keeps a log per call; :class:`LiveView` polls both and reports only differences,
so the page receives a short message a few times a second, not a full snapshot.

Every step that starts is noted as it starts (:func:`follow_steps`, from the Call's step
observer), so the path through the flow's diagram is complete even for steps that take no
time; the page gets the diagram once per call (``diagram``) and then, in ``live``, the
``path`` (node ids in the order the call reached them) and the ``current`` node.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ivr.call import Call
from ivr.call.observer import CallObserver
from ivr.emulator import Emulator
from ivr.flow.schema import StepBase

from .diagram import Diagram, flow_diagram, step_label

MAX_TRAIL = 2000  # steps noted per call (an endless goto loop stops at the step budget anyway)

# Emulator log events that only add noise to the page (one per audio stream open/close).
_QUIET_EVENTS = frozenset({"stream_opened", "stream_closed"})


def json_safe(value: Any) -> Any:
    """``value`` with anything JSON cannot carry turned into its ``str()``."""
    return json.loads(json.dumps(value, default=str))


class StepTrail(CallObserver):
    """The flow steps of one call as they start: ``(file, line, label)`` of each, in order."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, int, str]] = []

    def step_started(self, step: Any, info: Mapping[str, Any]) -> None:
        if isinstance(step, StepBase) and len(self.steps) < MAX_TRAIL:
            file, line = info.get("file"), info.get("line")
            if isinstance(file, str) and isinstance(line, int) and line:
                self.steps.append((file, line, step_label(step)))


_trails: weakref.WeakKeyDictionary[Call, StepTrail] = weakref.WeakKeyDictionary()


def follow_steps(call: Call) -> StepTrail:
    """Note every step of ``call`` as it starts (call before its flow runs)."""
    trail = StepTrail()
    call.observers.add(trail)
    _trails[call] = trail
    return trail


_diagrams: dict[tuple[str, int], Diagram | None] = {}


def diagram_of(flow: str) -> Diagram | None:
    """The flow's diagram, drawn once per version of the file."""
    try:
        stamp = Path(flow).stat().st_mtime_ns
    except OSError:
        return None
    key = (flow, stamp)
    if key not in _diagrams:
        if len(_diagrams) > 32:
            _diagrams.clear()
        _diagrams[key] = flow_diagram(flow)
    return _diagrams[key]


class LiveView:
    """Polls one emulated call (and, once known, the worker's Call for it) for changes."""

    def __init__(self, emu: Emulator, callid: int) -> None:
        self.emu = emu
        self.callid = callid
        self.call: Call | None = None
        self._log_index = 0
        self._steps = 0
        self._last: dict[str, Any] = {}
        self.state = ""  # the emulator call's state at the last poll (dialing ... ended)
        self.diagram: Diagram | None = None
        self._diagram_sent = False

    def poll(self) -> list[dict[str, Any]]:
        """Messages for what changed: ``event`` (one per new emulator log entry) and ``live``."""
        out: list[dict[str, Any]] = []
        info = self.emu.call_info(self.callid)
        log = info["log"]
        for entry in log[self._log_index :]:
            if entry.get("event") not in _QUIET_EVENTS:
                out.append({"type": "event", "callid": self.callid, "entry": json_safe(entry)})
        self._log_index = len(log)
        self.state = info["state"]
        state = {"state": info["state"], "location": info["location"], "held": info["held"]}
        call = self.call
        if call is not None:
            rec = call.call_record
            state.update(
                activity=_activity(call),
                vars=json_safe(call.vars),
                digits=list(rec.digits),
                prompts=list(rec.prompts),
                transcript=json_safe(rec.transcript),
                errors=list(rec.errors),
                flow=rec.flow,
                flow_version=rec.flow_version,
            )
            if not self._diagram_sent and rec.flow:
                self._diagram_sent = True
                self.diagram = diagram_of(rec.flow)
                out.append({"type": "diagram", "callid": self.callid, "flow": rec.flow,
                            "svg": self.diagram.svg if self.diagram is not None else None})
            if self.diagram is not None:
                state.update(self._path(call, self.diagram))
            new_steps = rec.steps[self._steps :]
            if new_steps:
                state["new_steps"] = [json_safe(vars(s)) for s in new_steps]
                self._steps = len(rec.steps)
        changed = {k: v for k, v in state.items() if k == "new_steps" or self._last.get(k) != v}
        self._last.update(state)
        self._last.pop("new_steps", None)
        if changed:
            out.append({"type": "live", "callid": self.callid, **changed})
        return out


    def _path(self, call: Call, diagram: Diagram) -> dict[str, Any]:
        """The diagram nodes the call went through (in order, repeats kept when it came
        back) and the one running now (None once the call ended)."""
        trail = _trails.get(call)
        path: list[str] = []
        for file, line, label in trail.steps if trail is not None else []:
            node = diagram.node_for(file, line, label)
            if node is not None and (not path or path[-1] != node):
                path.append(node)
        current = path[-1] if path and call.call_record.outcome is None else None
        return {"path": path, "current": current}


def _activity(call: Call) -> str:
    """What the flow is doing now, in a few words (steps are recorded when they finish)."""
    rec = call.call_record
    if rec.outcome is not None:
        return f"ended: {rec.outcome}" + (f" ({rec.outcome_detail})" if rec.outcome_detail else "")
    step = f"{call.current_step}: " if call.current_step else ""
    if call.listening.is_set():
        return f"{step}listening for keys"
    if call.media.playback.busy and rec.prompts:
        return f"{step}playing {rec.prompts[-1]}"
    if step:
        return step.rstrip(": ")
    last = rec.steps[-1] if rec.steps else None
    return f"after step {last.step}{' #' + last.id if last.id else ''}" if last else "starting"
