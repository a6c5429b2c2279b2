"""What an agent conversation returns to the flow."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["AgentResult", "AgentStatus", "STATUSES"]

AgentStatus = Literal["returned", "transferred", "hangup", "max_turns", "timeout", "no_input", "error", "key"]
#: Every way a conversation ends; a YAML ``agent`` step has an ``on_<status>`` branch for each
#: (and for ``key``, one branch per key in ``keys:``).
STATUSES: tuple[str, ...] = ("returned", "transferred", "hangup", "max_turns", "timeout", "no_input", "error", "key")


@dataclass
class AgentResult:
    """How the conversation ended.

    ``status``: ``returned`` (the model called the return tool; ``data`` holds its fields),
    ``transferred`` (an allowed transfer was answered; ``data`` has ``destination`` and
    ``number``), ``hangup`` (the model hung up), ``max_turns``, ``timeout`` (max_seconds,
    also while the model is replying), ``no_input`` (the caller stayed silent through every
    reprompt), ``key`` (the caller pressed one of the agent's ``keys``; ``data`` has ``key``)
    or ``error`` (an adapter failed; ``error`` says which and how - the caller has heard the
    apology).
    ``turns`` counts the caller's utterances answered; ``transcript`` is this conversation's
    part of the call record's transcript.
    """

    status: AgentStatus
    data: dict[str, Any] = field(default_factory=dict)
    turns: int = 0
    transcript: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The plain mapping a flow sees in ``into`` and ``last``."""
        return {"status": self.status, "data": dict(self.data), "turns": self.turns,
                "transcript": [dict(e) for e in self.transcript], "error": self.error}
