"""Diagnostics: one problem in a flow file, at a line and column, and the load error."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Diagnostic", "FlowLoadError", "Severity"]

Severity = Literal["error", "warning"]

# Every character str.splitlines() breaks on, shown as its escape instead.
_ESCAPE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


@dataclass(frozen=True, order=True)
class Diagnostic:
    """A problem at ``file:line:col`` (1-based; 0 when the position is unknown)."""

    file: str
    line: int
    col: int
    severity: Severity
    message: str

    def format(self) -> str:
        """``file:line:col: error: message`` - the form editors and CI annotate.

        A problem with the whole file (line 0: not found, too large) is shown at 1:1 so
        every line keeps the same parseable shape. Line breaks inside the message (a key
        or value quoted from the file may hold any) are escaped: one diagnostic, one line."""
        message = self.message.translate(_ESCAPE_BREAKS)
        return f"{self.file}:{max(self.line, 1)}:{max(self.col, 1)}: {self.severity}: {message}"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        return self.format()


class FlowLoadError(Exception):
    """A flow file could not be loaded; ``diagnostics`` lists every problem found."""

    def __init__(self, diagnostics: Iterable[Diagnostic] | str) -> None:
        if isinstance(diagnostics, str):  # already formatted text (e.g. several files joined)
            self.diagnostics: list[Diagnostic] = []
            super().__init__(diagnostics)
            return
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.file, d.line, d.col, d.message))
        super().__init__("\n".join(d.format() for d in self.diagnostics))

    @classmethod
    def from_text(cls, text: str) -> FlowLoadError:
        """An error carrying already formatted lines (no structured diagnostics)."""
        return cls(text)

    @property
    def errors(self) -> list[Diagnostic]:
        """Only the errors (warnings are kept for context)."""
        return [d for d in self.diagnostics if d.is_error]
