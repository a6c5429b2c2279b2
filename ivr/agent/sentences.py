"""Cut a stream of LLM text deltas into sentences, so each can go to TTS as soon as it ends.

The rules follow :func:`ivr.speech.text.split_sentences` (the same abbreviations and initials
do not end a sentence), applied incrementally: a sentence is complete once its end mark is
followed by whitespace, so ``"Dr."`` at the end of a delta waits for the next delta. A long
run without an end mark is cut at a comma or space after ``max_chars`` so the caller does not
wait for a run-on sentence.
"""

from __future__ import annotations

import re

from ivr.speech.text import _ABBREV

__all__ = ["SentenceSplitter", "speakable"]

_END = re.compile(r"(?<=[.!?…:;])[\"')\]]*\s+|\n+")
_SPACE_BEFORE_MARK = re.compile(r"\s+([,.:;!?])")
_MARKUP = re.compile(r"[*_#`~]+|^\s*(?:[-•]|\d+[.)])\s+", re.MULTILINE)


def speakable(text: str) -> str:
    """Text as TTS should read it: markdown marks and list bullets removed, spaces collapsed."""
    return _SPACE_BEFORE_MARK.sub(r"\1", " ".join(_MARKUP.sub(" ", text).split()))


class SentenceSplitter:
    """Feed text deltas, get complete sentences back; ``flush()`` returns the rest at the end."""

    def __init__(self, max_chars: int = 240) -> None:
        self.max_chars = max_chars
        self._buf = ""

    def feed(self, delta: str) -> list[str]:
        """Add ``delta``; return the sentences it completed (possibly none)."""
        self._buf += delta
        out: list[str] = []
        start = 0
        for m in _END.finditer(self._buf):
            if "\n" not in m.group() and _no_break(self._buf[start:m.start()]):
                continue
            self._emit(self._buf[start:m.end()], out)
            start = m.end()
        self._buf = self._buf[start:]
        while len(self._buf) > self.max_chars:
            cut = self._soft_cut(self._buf)
            self._emit(self._buf[:cut], out)
            self._buf = self._buf[cut:]
        return out

    def flush(self) -> list[str]:
        """The text not yet returned (the model's last sentence often has no end mark)."""
        out: list[str] = []
        self._emit(self._buf, out)
        self._buf = ""
        return out

    @property
    def pending(self) -> str:
        """Text received but not yet part of a returned sentence."""
        return self._buf

    def _soft_cut(self, text: str) -> int:
        window = text[: self.max_chars]
        for mark in (", ", "; ", " "):
            i = window.rfind(mark)
            if i > self.max_chars // 3:
                return i + len(mark)
        return self.max_chars

    @staticmethod
    def _emit(piece: str, out: list[str]) -> None:
        text = speakable(piece)
        if any(c.isalnum() for c in text):
            out.append(text)


def _no_break(piece: str) -> bool:
    """True when the full stop ending ``piece`` belongs to an abbreviation or an initial."""
    stripped = piece.rstrip("\"')]")
    if not stripped.endswith("."):
        return False
    words = stripped[:-1].split()
    if not words:
        return False
    word = words[-1]
    return word.lower() in _ABBREV or (len(word) == 1 and word.isupper())
