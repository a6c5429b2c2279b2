"""Who watches a call: :class:`CallObserver` (steps started and ended, listening, transfer,
hangup) and :class:`CallObservers`, the call's list of them.

Layers above the Call add an observer instead of setting hook attributes on it: the worker's
tracing (``ivr.worker.tracing``), a Python flow's step recorder (``ivr.call.action_steps``),
the live view of ``ivr dev``. The YAML interpreter reports its steps and a Python flow's proxy
(``ivr.flow.python_call``) the actions the flow awaits; the Call itself reports listening,
transfers and hangups. An observer that raises is logged and skipped: watching never breaks
a call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["CallObserver", "CallObservers", "Step"]

log = logging.getLogger("ivr.call")


class Step(Protocol):
    """A step as observers see it: a YAML step model, or a Python flow's action."""

    @property
    def kind(self) -> str: ...

    @property
    def id(self) -> str | None: ...


class CallObserver:
    """Told what happens on one call; every method does nothing unless overridden.

    ``step_started`` info: ``where`` (``menu.yaml:12:5`` or ``pin.py:12``), ``file``, ``line``,
    ``label`` (what a live view shows), for a Python action also ``function``.
    ``step_ended`` info: ``result`` and ``duration`` (loop-clock seconds), or ``error`` (the
    exception) when the step raised."""

    def step_started(self, step: Step, info: Mapping[str, Any]) -> None:
        return None

    def step_ended(self, step: Step, info: Mapping[str, Any]) -> None:
        return None

    def listening(self, on: bool, count: int) -> None:
        """A gather or menu started (``on``, the ``count``-th time) or stopped waiting for keys."""
        return None

    def transfer(self, info: Mapping[str, Any]) -> None:
        """A transfer ended: ``destination``, ``mode``, ``status``..."""
        return None

    def hangup(self, info: Mapping[str, Any]) -> None:
        """The call ended: ``by`` (``caller`` or ``ivr``), ``detail``."""
        return None


class CallObservers(CallObserver):
    """A call's observers, told in the order they were added; also what a live view reads:
    ``current_step``, the label of the step started last."""

    def __init__(self) -> None:
        self._observers: list[CallObserver] = []
        self.current_step = ""

    def add(self, observer: CallObserver) -> None:
        if observer not in self._observers:
            self._observers.append(observer)

    def remove(self, observer: CallObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def __contains__(self, observer: object) -> bool:
        return observer in self._observers

    def __iter__(self) -> Any:
        return iter(list(self._observers))

    def __len__(self) -> int:
        return len(self._observers)

    def step_started(self, step: Step, info: Mapping[str, Any]) -> None:
        self.current_step = str(info.get("label") or self.current_step)
        for o in list(self._observers):
            _safely(o.step_started, step, info)

    def step_ended(self, step: Step, info: Mapping[str, Any]) -> None:
        for o in list(self._observers):
            _safely(o.step_ended, step, info)

    def listening(self, on: bool, count: int) -> None:
        for o in list(self._observers):
            _safely(o.listening, on, count)

    def transfer(self, info: Mapping[str, Any]) -> None:
        for o in list(self._observers):
            _safely(o.transfer, info)

    def hangup(self, info: Mapping[str, Any]) -> None:
        for o in list(self._observers):
            _safely(o.hangup, info)


def _safely(method: Any, *args: Any) -> None:
    try:
        method(*args)
    except Exception:  # an observer must never break the call it watches
        log.exception("call observer %s failed", getattr(method, "__qualname__", method))
