"""A campaign's call list and do-not-call list, read from CSV with errors that say file:line.

The list has a header row. ``number`` (or ``phone``) is required; ``name`` and ``timezone``
(or ``tz``, an IANA zone) are optional; every other column is handed to the flow as a
variable of the same name. Numbers are kept as written for dialling and compared for the
do-not-call list in a normal form: digits only, with a leading ``+`` kept.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_LIST_BYTES = 64 * 1024 * 1024  # a call list larger than this is refused, not parsed
_NUMBER_COLUMNS = ("number", "phone", "phone_number", "destination")
_TZ_COLUMNS = ("timezone", "tz", "time_zone")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DIALLABLE = re.compile(r"^\+?[0-9*#]{2,32}$")


class ContactListError(ValueError):
    """A problem in a call list or a do-not-call list; ``str()`` says file:line: what."""


@dataclass(frozen=True)
class Contact:
    """One row of the call list."""

    key: str  # stable identity across restarts: the normalised number (+ a suffix for repeats)
    line: int  # line in the file, for messages
    number: str  # as dialled
    name: str = ""
    timezone: str | None = None
    variables: dict[str, str] = field(default_factory=dict)


def normalise(number: str) -> str:
    """``+49 (30) 123-456`` -> ``+4930123456``: what the do-not-call list is matched on."""
    text = number.strip()
    digits = re.sub(r"[^0-9*#]", "", text)
    return ("+" if text.startswith("+") else "") + digits


def _read_text(path: Path, what: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_LIST_BYTES:
            raise ContactListError(f"{path}: {what} is {size} bytes, more than {MAX_LIST_BYTES}")
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ContactListError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ContactListError(f"{path}: the {what} is not UTF-8 text (byte {exc.start})") from None


def read_contacts(path: str | Path) -> list[Contact]:
    """Every contact of the list, in file order; raises ContactListError naming file:line."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO(_read_text(path, "call list"), newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise ContactListError(f"{path}:1: the call list is empty (a header row with a 'number' column is needed)")
    reader.fieldnames = header
    lower = [h.lower() for h in header]
    number_col = next((header[lower.index(c)] for c in _NUMBER_COLUMNS if c in lower), None)
    if number_col is None:
        raise ContactListError(f"{path}:1: no 'number' column (the header has: {', '.join(header)})")
    tz_col = next((header[lower.index(c)] for c in _TZ_COLUMNS if c in lower), None)
    name_col = header[lower.index("name")] if "name" in lower else None
    for column in header:
        if column not in (number_col, tz_col, name_col) and not _VARIABLE.match(column):
            raise ContactListError(f"{path}:1: column {column!r} is not a usable variable name "
                                   "(letters, digits and _; not starting with a digit)")
    contacts: list[Contact] = []
    seen: dict[str, int] = {}
    zones: dict[str, bool] = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            raise ContactListError(f"{path}:{line}: more fields than the header has columns")
        if not any((v or "").strip() for v in row.values()):
            continue  # blank line
        number = (row.get(number_col) or "").strip()
        if not _DIALLABLE.match(normalise(number)):
            raise ContactListError(f"{path}:{line}: {number!r} is not a phone number")
        timezone = (row.get(tz_col) or "").strip() or None if tz_col else None
        if timezone is not None:
            if timezone not in zones:
                zones[timezone] = _known_zone(timezone)
            if not zones[timezone]:
                raise ContactListError(f"{path}:{line}: unknown time zone {timezone!r} (use an IANA name like Europe/Berlin)")
        key = normalise(number)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            key = f"{key}#{seen[key]}"  # the same number twice: two contacts, two keys
        variables = {k: (v or "").strip() for k, v in row.items() if k not in (number_col, tz_col, name_col)}
        contacts.append(Contact(key=key, line=line, number=number, name=(row.get(name_col) or "").strip() if name_col else "",
                                timezone=timezone, variables=variables))
    return contacts


def read_do_not_call(path: str | Path) -> frozenset[str]:
    """Normalised numbers from a do-not-call file: one number a line, or a CSV with a number column."""
    path = Path(path)
    text = _read_text(path, "do-not-call list")
    lines = text.splitlines()
    first = lines[0].strip().lower() if lines else ""
    if any(c in first.split(",") for c in _NUMBER_COLUMNS):
        return frozenset(normalise(c.number) for c in read_contacts(path))
    numbers = set()
    for n, raw in enumerate(lines, start=1):
        value = raw.strip()
        if not value or value.startswith("#"):
            continue  # blank, or a comment line
        if not _DIALLABLE.match(normalise(value)):
            raise ContactListError(f"{path}:{n}: {value!r} is not a phone number")
        numbers.add(normalise(value))
    return frozenset(numbers)


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
