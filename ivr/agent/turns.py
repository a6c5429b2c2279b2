"""When the agent stops listening for the caller, without I/O: told the inputs and ``now``.

The agent's turn waits for an utterance. It gives up on a caller who stays quiet for
``silence_timeout`` seconds (the agent then reprompts), and on the conversation's deadline
(``max_seconds``). While the caller speaks, only the deadline counts: a long utterance is not
silence. A start of speech the VAD takes back (a cough, a click) restarts the silence timer.
The asyncio side (``AgentLoop._listen``) waits for the next input until :meth:`ListenRules.wake_at`
and feeds what came; these rules decide, as the digit collector does for keys.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["GaveUp", "ListenRules"]

#: Why a turn ended without an utterance: the caller stayed quiet, or time is up.
GaveUp = Literal["silence", "timeout"]


class ListenRules:
    """One turn's listening; ``speaking``: the caller was already speaking as it started
    (a barge-in into the agent's reply)."""

    def __init__(self, now: float, *, silence_timeout: float, deadline: float, speaking: bool = False) -> None:
        self.silence_timeout = silence_timeout
        self.deadline = deadline
        self.speaking = speaking
        self.silence_at = now + silence_timeout

    def wake_at(self) -> float:
        """When to decide again if nothing is heard."""
        return self.deadline if self.speaking else min(self.deadline, self.silence_at)

    def speech_started(self) -> None:
        self.speaking = True

    def speech_cancelled(self, now: float) -> None:
        """The VAD took a start back: not speech after all, so the quiet starts again now."""
        self.speaking = False
        self.silence_at = now + self.silence_timeout

    def gave_up(self, now: float) -> GaveUp | None:
        """``timeout`` at the deadline, ``silence`` after the quiet; None: keep listening
        (a timer may fire a clock tick early)."""
        if now >= self.deadline:
            return "timeout"
        if not self.speaking and now >= self.silence_at:
            return "silence"
        return None
