"""Python-flow actions as steps of the call record, the way the YAML interpreter records its steps.

The interpreter adds a step to ``record.steps`` for each YAML step it runs. A Python flow awaits
the Call's methods itself, so :func:`record_actions` (called when a Python flow starts, see
:class:`~ivr.flow.python_flow.PythonFlow`) makes an :class:`ActionRecorder` the Call's
``step_observer``: each action :func:`~ivr.call.actions.flow_action` reports becomes a step named
after the method (``play``, ``menu``, ``transfer``...), with the awaiting line as its ``id``
(``pin.py:12``), a short result and its duration on the loop clock. The metrics
(``ivr_step_duration_seconds``) and the trace (``ivr.call.steps``) read those steps.

The recorder passes every event on to the observer it replaced (the worker's tracing), so
spans are unchanged. YAML steps reaching it (a YAML subflow of a Python flow) are recorded by
the interpreter already and are only passed on. A YAML flow with tracing off keeps no
observer, unless it ran a Python subflow (the recorder stays installed for the call).

As with a YAML step, an action that raises leaves no step (the error that ends a flow is in
``record.errors``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ivr.call.actions import FlowAction
from ivr.call.results import step_result

__all__ = ["ActionRecorder", "action_result", "record_actions"]

log = logging.getLogger("ivr.call")

Observer = Callable[[str, Any, dict[str, Any]], None]

_SCALARS = (str, int, float, bool)
_ABSENT = object()


class ActionRecorder:
    """A Call's ``step_observer``: records Python-flow actions, passes every event on."""

    __slots__ = ("record", "forward")

    def __init__(self, record: Any, forward: Observer | None = None) -> None:
        self.record = record  # the CallRecord (anything with add_step)
        self.forward = forward  # the observer it replaced, e.g. the worker's tracing

    def __call__(self, event: str, step: Any, info: dict[str, Any]) -> None:
        if event == "end" and isinstance(step, FlowAction):
            try:
                self.record.add_step(step.kind, step.where, action_result(info.get("result")), info["duration"])
            except Exception:  # the record must never break a call
                log.exception("cannot record the %s step", step.kind)
        if self.forward is not None:
            self.forward(event, step, info)


def record_actions(call: Any) -> None:
    """Make ``call`` record the actions a Python flow awaits; once per call, keeping its observer."""
    observer = getattr(call, "step_observer", _ABSENT)
    record = getattr(call, "call_record", None)
    if observer is _ABSENT or isinstance(observer, ActionRecorder) or not hasattr(record, "add_step"):
        # a stand-in call without the hook or a record (tests of pieces), or recording already
        return
    call.step_observer = ActionRecorder(record, observer)  # type: ignore[arg-type]  # getattr: a StepObserver or None


def action_result(result: Any) -> Any:
    """An action's result as a step's: a few plain fields, never the whole object.

    Call results keep the fields the YAML step records; a subflow's return values only their
    names (values can be anything); an agent's result its ``status``, ``turns`` and ``error``
    (its transcript is the record's ``transcript``)."""
    if result is None:
        return None
    plain = step_result(result)  # the fields the YAML step records for the same action
    if plain is not None:
        return plain
    if isinstance(result, Mapping):
        return {"returned": sorted(str(k) for k in result)}
    out = {k: v for k in ("status", "turns", "error") if isinstance(v := getattr(result, k, None), _SCALARS)}
    return out or None

