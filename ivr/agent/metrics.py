"""Per-turn latency of the agent: end of the caller's speech -> first reply audio at the PBX.

Each turn records loop times of its milestones and reports them in milliseconds after the
moment the VAD decided the caller had stopped speaking (``speech_end``):

``stt_ms``           the STT's final transcript
``first_token_ms``   the LLM's first text delta (or tool call)
``first_audio_ms``   the first TTS chunk of the reply
``first_byte_ms``    the first 20 ms frame of the reply handed to the PBX audio stream

plus ``vad_hangover_ms``, the silence the VAD waited for before deciding (so the caller's
perceived gap is ``vad_hangover_ms + first_byte_ms``; about ``end_of_turn_ms`` plus
webrtcvad's own ~120 ms overhang), and ``speech_ms``, the utterance's length (first to last
voiced frame: a turn cut at a pause in the sentence shows as a short one). A milestone that did not happen (the
model only called a tool, the caller barged in first) is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MILESTONES", "TurnMetrics"]

MILESTONES = ("stt", "first_token", "first_audio", "first_byte")


@dataclass
class TurnMetrics:
    """Milestones of one turn, as loop times (seconds)."""

    turn: int
    speech_end: float
    vad_hangover: float = 0.0
    speech: float = 0.0  # the utterance's length (s)
    marks: dict[str, float] = field(default_factory=dict)
    barge_in: bool = False
    llm_rounds: int = 0
    tools: list[str] = field(default_factory=list)

    def mark(self, name: str, at: float) -> None:
        """Record milestone ``name`` at loop time ``at``; only the first time counts."""
        if name not in MILESTONES:
            raise ValueError(f"unknown turn milestone {name!r} (one of {', '.join(MILESTONES)})")
        self.marks.setdefault(name, at)

    def has(self, name: str) -> bool:
        return name in self.marks

    def to_dict(self) -> dict[str, Any]:
        """The entry in ``call_record.metrics["agent_turns"]``."""
        out: dict[str, Any] = {"turn": self.turn, "vad_hangover_ms": round(self.vad_hangover * 1000, 1),
                               "speech_ms": round(self.speech * 1000, 1)}
        for name in MILESTONES:
            at = self.marks.get(name)
            out[f"{name}_ms"] = None if at is None else round((at - self.speech_end) * 1000, 1)
        out.update(barge_in=self.barge_in, llm_rounds=self.llm_rounds, tools=list(self.tools))
        return out
