"""Text helpers shared by adapters: sentence splitting for streaming TTS, phrase normalising."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (or …) followed by space, unless the word before is a common
# abbreviation or a single initial ("Dr. Smith", "J. Doe").
_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")
_ABBREV = {"mr", "mrs", "ms", "dr", "prof", "st", "no", "vs", "etc", "e.g", "i.e", "inc", "ltd", "jr", "sr"}


def split_sentences(text: str) -> list[str]:
    """Split text into sentences (and at line breaks) so TTS can start on the first one early."""
    out: list[str] = []
    for line in text.splitlines():
        line, start = line.strip(), 0
        for m in _END.finditer(line):
            words = line[start:m.start()].rstrip(".!?…\"')]").split()
            if words and (words[-1].lower() in _ABBREV or (len(words[-1]) == 1 and words[-1].isupper())):
                continue
            out.append(line[start:m.end()].strip())
            start = m.end()
        if line[start:].strip():
            out.append(line[start:].strip())
    return [s for s in out if any(c.isalnum() for c in s)]


_NOT_WORD = re.compile(r"[^\w' ]+")


def normalize_phrase(phrase: str) -> str:
    """Lower case, punctuation to spaces (apostrophes kept), single spaces: "Sales!" -> "sales"."""
    return " ".join(_NOT_WORD.sub(" ", phrase.lower().replace("-", " ")).split())
