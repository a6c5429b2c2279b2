"""Windows time-zone names (what 3CX stores in ``TimeZoneId``) to IANA names.

The table is CLDR's windowsZones, as shipped and kept current by ``tzlocal``.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal.windows_tz import win_tz

__all__ = ["UnknownTimeZone", "to_iana", "zone"]


class UnknownTimeZone(ValueError):
    """Neither a Windows nor an IANA time-zone name."""


def to_iana(name: str) -> str:
    """``"W. Europe Standard Time"`` -> ``"Europe/Berlin"``; an IANA name is returned as it is.

    Raises :class:`UnknownTimeZone` naming the value."""
    text = (name or "").strip()
    mapped = win_tz.get(text)
    if mapped:
        return mapped
    if text:
        try:
            ZoneInfo(text)
            return text
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise UnknownTimeZone(f"unknown time zone {name!r} (a Windows name like 'W. Europe Standard Time' or an IANA name)")


def zone(name: str) -> ZoneInfo:
    """The :class:`ZoneInfo` for a Windows or IANA name."""
    return ZoneInfo(to_iana(name))
