"""The call a Python flow is given: :class:`FlowCall`, an explicit proxy of the Call.

``main(call)`` gets a ``FlowCall``, not the Call. Each action it offers (``play``, ``menu``,
``transfer``, ``subflow``, ``agent``...) is a step of the flow: the proxy reports it to the
call's observers (``ivr.call.observer``: the call record's steps, tracing, the live view) as a
:class:`~ivr.call.action_steps.FlowAction` named after the method, ``where`` being the line
that awaited it (``pin.py:12``), then runs it on the Call. What counts as a step is therefore
what the flow calls through its proxy; a Call method using another (menu -> gather -> play),
the agent and the worker call the Call itself and are not steps.

Everything else (``vars``, ``caller``, ``call_id``, ``now()``, ``log_event``...) reads
through to the Call.

With a :class:`~ivr.flow.replay.Journal`, the proxy numbers the actions, checkpoints the
journal as each starts and ends (a gather, menu or directory also as each try from the second
on starts), and on a resumed call answers the actions done before the takeover from the
journal (``ivr/flow/replay.py``); the action in progress then runs from the try it was at.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ivr.call.action_steps import FlowAction
from ivr.call.api import CallApi

from .replay import MISS, TRIED, Journal

__all__ = ["ACTIONS", "FlowCall"]

#: The Call methods a Python flow's proxy offers as steps (plus ``subflow`` and ``agent``).
ACTIONS = ("answer", "hangup", "attach_data", "sleep", "play", "say", "play_prompt", "gather", "menu",
           "transfer", "record", "directory", "presence", "pbx_hours", "detect_machine")


class FlowCall:
    """A Python flow's view of its call (see the module text)."""

    __slots__ = ("_call", "_journal")
    _call: CallApi
    _journal: Journal | None

    def __init__(self, call: CallApi, journal: Journal | None = None) -> None:
        object.__setattr__(self, "_call", call)
        object.__setattr__(self, "_journal", journal)

    @property
    def call(self) -> CallApi:
        """The Call behind the proxy (its actions are not reported as steps)."""
        return self._call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._call, name, value)

    def __repr__(self) -> str:
        return f"FlowCall({self._call!r})"

    async def subflow(self, path: str | Path, **params: Any) -> Any:
        """Run another flow file (YAML or Python) on this call; returns its `return` values."""
        from . import run_subflow

        return await run_subflow(self._call, path, params)

    async def agent(self, **options: Any) -> Any:
        """An LLM voice conversation inside the flow; returns an AgentResult (docs/agent.md)."""
        from ivr.agent import run_agent  # on use: flows without agents never load it

        return await run_agent(self._call, **options)


def _step(name: str) -> Callable[..., Awaitable[Any]]:
    """The proxy's ``name`` action: reported as a step, then run on the Call (or the proxy's
    own implementation, for ``subflow`` and ``agent``)."""
    own = FlowCall.__dict__.get(name)

    def action(self: FlowCall, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        # The awaiting line names the step (as a YAML step's file:line:col does); read here,
        # synchronously, where the flow's frame is the caller.
        caller = sys._getframe(1)
        filename = caller.f_code.co_filename
        where = f"{os.path.basename(filename)}:{caller.f_lineno}"
        info = {"where": where, "label": f"{name} ({where})", "file": filename, "line": caller.f_lineno,
                "function": caller.f_code.co_name}
        call, journal = self._call, self._journal
        if journal is None:
            run = own(self, *args, **kwargs) if own is not None else getattr(call, name)(*args, **kwargs)
            return _observed(call, FlowAction(name, where), info, run)
        n, args_digest, recorded = journal.begin(name, args, kwargs)  # ReplayMismatch when it does not fit
        if recorded is not MISS:
            return _replayed(recorded)  # done before the takeover: not performed again, not a step here
        if name in TRIED:  # checkpointed at each try; resumed at the one it was at
            kwargs = journal.tries(n, name, kwargs)
        run = own(self, *args, **kwargs) if own is not None else getattr(call, name)(*args, **kwargs)
        return _journaled(journal, n, name, args_digest, _observed(call, FlowAction(name, where), info, run))

    action.__name__ = action.__qualname__ = name
    action.__doc__ = (own.__doc__ if own is not None else None) or f"The Call's ``{name}``, as a step of the flow."
    _mark_async(action)
    return action


async def _observed(call: CallApi, step: FlowAction, info: dict[str, Any], run: Awaitable[Any]) -> Any:
    import asyncio

    clock = asyncio.get_running_loop().time
    started = clock()
    observers = call.observers
    observers.step_started(step, info)
    try:
        result = await run
    except BaseException as exc:
        observers.step_ended(step, {"error": exc})
        raise
    observers.step_ended(step, {"result": result, "duration": clock() - started})
    return result


async def _replayed(result: Any) -> Any:
    return result


async def _journaled(journal: Journal, n: int, kind: str, args_digest: str, run: Awaitable[Any]) -> Any:
    journal.started(n, kind)
    result = await run
    journal.ended(n, kind, args_digest, result)
    return result


def _mark_async(function: Callable[..., Any]) -> None:
    # A plain function returning a coroutine: mark it, so the actions still look async to
    # asyncio and to mocks (create_autospec) in a flow author's unit tests.
    import inspect

    if hasattr(inspect, "markcoroutinefunction"):  # Python 3.12+
        inspect.markcoroutinefunction(function)
    else:
        import asyncio

        function._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]


for _name in (*ACTIONS, "subflow", "agent"):
    setattr(FlowCall, _name, _step(_name))
del _name
