"""A call's step budget: how many flow steps it has run and may run.

One per call (``Call.flow_budget``), made by the first flow that runs on the call and shared
by its subflows, YAML or Python, and a Python flow's subflows: a loop across flow files still
ends. ``on_error`` and ``on_hangup`` raise the limit a little so they can run after it is hit.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StepBudget"]


@dataclass
class StepBudget:
    limit: int
    used: int = 0
