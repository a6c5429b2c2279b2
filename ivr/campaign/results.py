"""A campaign's lasting outputs: its state file (resume) and its results CSV (one row a contact).

The state is written after every change, atomically (a temporary file renamed over the old
one), so a campaign killed at any moment resumes from its last decision. Result rows are
appended as contacts finish; a resumed campaign appends the rest, never a contact twice.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .contacts import Contact
from .plan import ContactState

BASE_COLUMNS = ("number", "name", "result", "attempts", "first_attempt", "last_attempt", "outcome", "call_id")


class CampaignFileError(ValueError):
    """A state or results file that cannot be read or written; one line."""


class StateFile:
    """The plan's JSON state on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CampaignFileError(f"{self.path}: cannot read the campaign state: {exc.strerror}") from None
        except ValueError:
            raise CampaignFileError(f"{self.path}: the campaign state is not valid JSON (delete it to start over)") from None
        if not isinstance(data, dict) or data.get("version") != 1:
            raise CampaignFileError(f"{self.path}: not a campaign state file of this version")
        return data

    def save(self, state: dict[str, Any]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(state, separators=(",", ":")))
            os.replace(tmp, self.path)
        except OSError as exc:
            raise CampaignFileError(f"{self.path}: cannot write the campaign state: {exc.strerror}") from None


class ResultsCsv:
    """Appends one row per finished contact: fixed columns, the list's own columns, the flow
    variables named in ``variables``, and every flow variable as JSON in ``flow_variables``."""

    def __init__(self, path: str | Path, list_columns: Sequence[str], variables: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.columns = [*BASE_COLUMNS, *[c for c in list_columns if c not in BASE_COLUMNS],
                        *[v for v in variables if v not in BASE_COLUMNS and v not in list_columns], "flow_variables"]
        self.variables = list(variables)

    def append(self, contact: Contact, state: ContactState) -> None:
        attempts = state.attempts
        row: dict[str, Any] = {
            "number": contact.number, "name": contact.name, "result": state.result, "attempts": len(attempts),
            "first_attempt": attempts[0].started if attempts else "", "last_attempt": attempts[-1].started if attempts else "",
            "outcome": state.outcome or "", "call_id": next((a.call_id for a in reversed(attempts) if a.call_id), ""),
            **contact.variables,
            **{v: _cell(state.variables.get(v, "")) for v in self.variables},
            "flow_variables": json.dumps(state.variables, default=str, separators=(",", ":")) if state.variables else "",
        }
        new = not self.path.exists() or self.path.stat().st_size == 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", newline="") as out:
                writer = csv.DictWriter(out, fieldnames=self.columns, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow({k: _safe(v) for k, v in row.items()})
        except OSError as exc:
            raise CampaignFileError(f"{self.path}: cannot write results: {exc.strerror}") from None


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _safe(value: Any) -> Any:
    """A spreadsheet must not run what a caller said: cells that start like a formula get a quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    return text.lstrip("+-").replace(".", "", 1).replace(" ", "").isdigit()
