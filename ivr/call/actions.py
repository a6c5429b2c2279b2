"""Python-flow actions as flow steps, for the Call's ``step_observer`` (the call record's steps, tracing).

YAML steps reach the observer through the interpreter. A Python flow calls the Call's methods
itself, so each public action (play, menu, transfer, subflow, ...) is wrapped with
:func:`flow_action`: when an observer is set and the method was called by code outside the
``ivr`` package (the flow file, or a helper module of the flow), the call is reported as a
step named after the method, with the calling line as ``where``. Calls made from inside
``ivr`` are not steps: the YAML interpreter (its step is reported already), a Call method using
another (menu -> gather -> play), the agent, the worker's fallback transfer.

A Python flow always has an observer (:mod:`ivr.call.action_steps` records its actions as
the call record's steps). With no observer (a YAML flow with tracing off, a Call used alone)
the wrapper only checks one attribute and hands back the method's own coroutine: no extra
frame, no frame inspection.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["FlowAction", "flow_action"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

# Callers whose code lives under this folder are ivr itself, not a flow.
_IVR_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class FlowAction:
    """The ``step`` a Python-flow action is reported as: ``kind`` is the Call method's name,
    ``where`` the awaiting line (``pin.py:12``); ``id`` is None (only YAML steps have ids)."""

    __slots__ = ("id", "kind", "where")

    def __init__(self, kind: str, where: str) -> None:
        self.kind = kind
        self.id: str | None = None
        self.where = where

    def __repr__(self) -> str:
        return f"FlowAction({self.kind!r})"


def flow_action(method: F) -> F:
    """Report ``method`` to the call's step observer when a flow (not ivr) awaits it."""
    kind = method.__name__

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        observe = self.step_observer
        if observe is None:
            return method(self, *args, **kwargs)
        caller = sys._getframe(1)
        filename = caller.f_code.co_filename
        if filename.startswith(_IVR_DIR) or (
                not os.path.isabs(filename) and os.path.abspath(filename).startswith(_IVR_DIR)):
            return method(self, *args, **kwargs)
        line = caller.f_lineno
        where = f"{os.path.basename(filename)}:{line}"
        info = {"where": where, "file": filename, "line": line, "function": caller.f_code.co_name}
        return _observed(observe, FlowAction(kind, where), info, method(self, *args, **kwargs))

    # The wrapper returns the method's coroutine (or the observing one) but is a plain function:
    # mark it, so Call's actions still look async to asyncio and to mocks (create_autospec).
    if hasattr(inspect, "markcoroutinefunction"):  # Python 3.12+
        inspect.markcoroutinefunction(wrapper)
    else:
        wrapper._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


async def _observed(observe: Callable[[str, Any, dict[str, Any]], None], step: FlowAction,
                    info: dict[str, Any], action: Awaitable[Any]) -> Any:
    clock = asyncio.get_running_loop().time
    started = clock()
    observe("start", step, info)
    try:
        result = await action
    except BaseException as exc:
        observe("error", step, {"error": exc})
        raise
    observe("end", step, {"result": result, "duration": clock() - started})
    return result
