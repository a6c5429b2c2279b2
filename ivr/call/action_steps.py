"""Python-flow actions as steps of the call record, the way the YAML interpreter records its steps.

The interpreter adds a step to ``record.steps`` for each YAML step it runs. A Python flow awaits
its call's methods itself, through the proxy it is given (``ivr.flow.python_call.FlowCall``),
which reports each one to the call's observers as a :class:`FlowAction`. An
:class:`ActionRecorder` (one per call, added as a Python flow starts) records each action that
ended as a step named after the method (``play``, ``menu``, ``transfer``...), with the awaiting
line as its ``id`` (``pin.py:12``), a short result and its duration on the loop clock. The
metrics (``ivr_step_duration_seconds``) and the trace (``ivr.call.steps``) read those steps.

YAML steps (a YAML subflow of a Python flow) are recorded by the interpreter already. As with
a YAML step, an action that raises leaves no step (the error that ends a flow is in
``record.errors``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ivr.call.observer import CallObserver, CallObservers
from ivr.call.record import CallRecord
from ivr.call.results import step_result

__all__ = ["ActionRecorder", "FlowAction", "action_result", "record_actions"]

log = logging.getLogger("ivr.call")

_SCALARS = (str, int, float, bool)
_ABSENT = object()


class FlowAction:
    """A Python-flow action as a step: ``kind`` is the Call method's name, ``where`` the
    awaiting line (``pin.py:12``); ``id`` is None (only YAML steps have ids)."""

    __slots__ = ("id", "kind", "where")

    def __init__(self, kind: str, where: str) -> None:
        self.kind = kind
        self.id: str | None = None
        self.where = where

    def __repr__(self) -> str:
        return f"FlowAction({self.kind!r})"


class ActionRecorder(CallObserver):
    """Records the Python-flow actions that ended as steps of ``record``."""

    __slots__ = ("record",)

    def __init__(self, record: CallRecord) -> None:
        self.record = record

    def step_ended(self, step: Any, info: Mapping[str, Any]) -> None:
        if not isinstance(step, FlowAction) or "error" in info:
            return
        try:
            self.record.add_step(step.kind, step.where, action_result(info.get("result")), info["duration"])
        except Exception:  # the record must never break a call
            log.exception("cannot record the %s step", step.kind)


def record_actions(observers: CallObservers, record: CallRecord | None) -> None:
    """Make a call record the actions its Python flows await; once per call."""
    if record is not None and not any(isinstance(o, ActionRecorder) for o in observers):
        observers.add(ActionRecorder(record))  # (a stand-in call of a test may have no record)


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

