"""Python flows: a module file with ``async def main(call) -> None``.

    # flows/pin.py
    async def main(call):
        await call.answer()
        result = await call.gather(prompt="pin_prompt.wav", max_digits=4)
        ...

Loaded by path (not by import name), so flows need not live on ``sys.path``. A flow may also
accept parameters: ``async def main(call, **params)`` - subflow and ``run(params=...)`` pass
them as keyword arguments.

Each Call action the flow awaits is a step of the call record (``menu`` at ``pin.py:6``) and,
with tracing on, a step span (``ivr.step menu``); the Call reports it itself
(:mod:`ivr.call.actions`), so nothing here wraps it: :meth:`PythonFlow.run` only sets the
recorder as the call's observer (:mod:`ivr.call.action_steps`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ivr.audio.prompts import flow_folder

from .diagnostics import Diagnostic, FlowLoadError
from .position import FlowPosition
from .replay import Journal, ReplayMismatch

if TYPE_CHECKING:
    from ivr.call.api import CallApi

__all__ = ["PythonFlow", "current_flow_dir", "load_python_flow"]

#: The folder of the Python flow running in this task (None outside one): relative subflow
#: paths and prompt names are looked up from it.
current_flow_dir = flow_folder
log = logging.getLogger("ivr.flow")

_counter = 0


def _module_name(path: Path) -> str:
    global _counter
    _counter += 1
    safe = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"ivr_flow_{safe}_{_counter}"


def _fail(path: Path, line: int, message: str) -> FlowLoadError:
    return FlowLoadError([Diagnostic(str(path), line, 1 if line else 0, "error", message)])


def load_python_flow(path: str | Path) -> PythonFlow:
    """Import the module at ``path`` and check it defines ``async def main(call)``.

    Raises :class:`FlowLoadError` (file:line: message) for a missing file, a syntax error,
    an exception while importing, or a missing / non-async ``main``."""
    p = Path(path)
    if not p.is_file():
        raise _fail(p, 0, "file not found" if not p.exists() else "not a file")
    name = _module_name(p)
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise _fail(p, 0, "cannot load as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise FlowLoadError([Diagnostic(str(p), exc.lineno or 0, exc.offset or 0, "error",
                                        f"syntax error: {exc.msg}")]) from None
    except Exception as exc:  # noqa: BLE001 - importing user code may raise anything
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == p]
        line = frames[-1].lineno if frames else 0
        raise _fail(p, line or 0, f"error while importing: {type(exc).__name__}: {exc}") from None
    finally:
        sys.modules.pop(name, None)
    main = getattr(module, "main", None)
    if main is None:
        raise _fail(p, 0, "no 'main' function: a Python flow defines 'async def main(call)'")
    if not inspect.iscoroutinefunction(main):
        line = getattr(getattr(main, "__code__", None), "co_firstlineno", 0)
        raise _fail(p, line, "'main' must be 'async def main(call)', not a plain function")
    return PythonFlow(p, module, main, hashlib.sha256(p.read_bytes()).hexdigest()[:12])


class PythonFlow:
    """A loaded Python flow: ``await flow.run(call, params)`` calls ``main(call, **params)``."""

    def __init__(self, path: Path, module: ModuleType, main: Any, version: str = "") -> None:
        self.path = path
        self.name = path.stem
        self.module = module
        self.main = main
        self.version = version  # the file's content hash, as the worker's flow library has it

    async def run(self, call: CallApi, params: dict[str, Any] | None = None, *, resume: FlowPosition | None = None,
                  on_position: Callable[[FlowPosition], None] | None = None) -> Any:
        """Run ``main`` with the call's proxy (``FlowCall``: each action it awaits is a step,
        recorded in the call record as the interpreter records YAML steps); a Python flow can
        call other flows with ``call.subflow(path, **params)``.

        ``on_position`` is told the flow's journal (its position) as each action starts and
        ends; ``resume`` (a position told before, in this process or another) runs ``main``
        again answering the actions it holds from it (``ivr/flow/replay.py``); when the code
        asks for other actions than it holds, the flow starts again from the top, live."""
        from ivr.call.action_steps import record_actions  # on use: loading a flow needs no Call

        from .python_call import FlowCall

        record_actions(call.observers, call.call_record)
        params = dict(params or {})
        # Relative paths given to call.subflow() mean "next to this flow file"; prompt names
        # are looked up from here as a YAML flow's are (ivr.audio.prompts.prompt_search_path).
        token = current_flow_dir.set(self.path.resolve().parent)
        try:
            if resume is None and on_position is None:
                return await self.main(FlowCall(call), **params)
            journal = self._journal(call, params, on_position, resume)
            initial = dict(call.vars)
            try:
                result = await self.main(FlowCall(call, journal), **params)
                if (leftover := journal.leftover()) is not None:
                    raise ReplayMismatch(leftover)
                return result
            except ReplayMismatch as exc:
                log.warning("flow %s: call %s cannot resume by replay (%s); it starts again from the top",
                            self.path.name, call.call_id, exc)
                taken = call.call_record.taken_over
                if taken is not None:
                    taken["resumed"] = False
                    taken["replay"] = str(exc)
                call.vars.clear()
                call.vars.update(initial)
                journal = self._journal(call, params, on_position, None)
                return await self.main(FlowCall(call, journal), **params)
            finally:
                taken = call.call_record.taken_over
                if resume is not None and taken is not None and taken.get("resumed"):
                    taken["replayed_actions"] = journal.replayed
        finally:
            current_flow_dir.reset(token)

    def _journal(self, call: CallApi, params: dict[str, Any], on_position: Callable[[FlowPosition], None] | None,
                 resume: FlowPosition | None) -> Journal:
        return Journal(str(self.path), self.version, params=params, variables=lambda: call.vars,
                       on_position=on_position, resume=resume)

    def __repr__(self) -> str:
        return f"PythonFlow({str(self.path)!r})"
