"""Flow files: the YAML flow language and Python flows, one interpreter over the Call.

Public API:

- :func:`load_flow` (YAML -> validated :class:`Flow`, or :class:`FlowLoadError` listing
  every problem as ``file:line:col: error: message``)
- :func:`render`, :func:`evaluate` (sandboxed Jinja2)
- :func:`run_flow` (a Flow over a Call -> :class:`FlowOutcome`)
- :func:`load_any` (.yaml/.yml/.py -> a runnable with ``async run(call, params=None)``)
- :func:`run_subflow` (what a Python flow's ``call.subflow(path, **params)`` runs)

See ``docs/flows.md`` for the format.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ivr.templating.templates import TemplateError, evaluate, render, render_value

from .diagnostics import Diagnostic, FlowLoadError
from .loader import load_flow, load_flow_text
from .schema import Flow, StepBase, flow_json_schema

if TYPE_CHECKING:  # annotations only
    from ivr.call.api import CallApi

__all__ = [
    "Diagnostic",
    "Flow",
    "FlowError",
    "FlowLoadError",
    "FlowOutcome",
    "StepBase",
    "TemplateError",
    "evaluate",
    "flow_json_schema",
    "load_any",
    "load_flow",
    "load_flow_text",
    "render",
    "render_value",
    "run_flow",
    "run_subflow",
]

YAML_SUFFIXES = (".yaml", ".yml")


def load_any(path: str | Path) -> Any:
    """Load a YAML or Python flow; either way the result has ``async run(call, params=None)``.

    Raises :class:`FlowLoadError` for an invalid file or an unknown suffix."""
    p = Path(path)
    if p.suffix in YAML_SUFFIXES:
        from .interpreter import YamlFlow

        return YamlFlow(load_flow(p))
    if p.suffix == ".py":
        from .python_flow import load_python_flow

        return load_python_flow(p)
    raise FlowLoadError([Diagnostic(str(path), 0, 0, "error",
                                    f"unknown flow type {p.suffix or '(no suffix)'!r}: use .yaml, .yml or .py")])


async def run_subflow(call: CallApi, path: str | Path, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the flow file at ``path`` on ``call`` with its own variables; returns what its
    ``return`` step gave back ({} if none). Errors raise :class:`FlowError`; the caller
    hanging up raises ``CallHangup``."""
    from .interpreter import MAX_STEPS, _budget_of, _run_path
    from .python_flow import current_flow_dir

    p = Path(path)
    here = current_flow_dir.get()
    if not p.is_absolute() and here is not None:
        p = here / p
    return await _run_path(call, p, dict(params or {}), _budget_of(call, MAX_STEPS))


def __getattr__(name: str) -> Any:
    # The interpreter imports the call layer; load it only when someone runs a flow.
    if name in ("run_flow", "FlowOutcome", "FlowError"):
        from . import interpreter

        return getattr(interpreter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
