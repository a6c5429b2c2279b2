"""Office hours (ivr.pbx.hours): schedules, holidays, overnight ranges, DST edges."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ivr.pbx.hours import HoursError, is_open, parse_days, parse_ranges, parse_schedule

UTC = UTC


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_days_and_ranges() -> None:
    assert parse_days("mon-fri") == [0, 1, 2, 3, 4]
    assert parse_days("fri-mon") == [4, 5, 6, 0]
    assert parse_days("sat, sun") == [5, 6]
    assert parse_days("Monday") == [0]
    assert parse_days("daily") == list(range(7))
    assert parse_ranges("08:00-18:00") == [(480, 1080)]
    assert parse_ranges(["8:00-12:00", "13:00-24:00"]) == [(480, 720), (780, 1440)]
    assert parse_ranges("closed") == [] and parse_ranges("open") == [(0, 1440)]
    assert parse_ranges("22:00-06:00") == [(1320, 1800)]


@pytest.mark.parametrize(
    "weekly, message",
    [({"mon-fry": "08:00-18:00"}, "unknown day 'fry'"), ({"mon": "25:00-26:00"}, "bad time '25:00'"),
     ({"mon": "08:00"}, "bad time range"), ({"mon": "08:00-08:00"}, "empty time range"),
     ({"mon": "24:00-12:00"}, "bad time '24:00'")],
)
def test_bad_specs(weekly: dict, message: str) -> None:
    with pytest.raises(HoursError, match=message):
        parse_schedule("Europe/Berlin", weekly)


def test_bad_zone_and_holidays() -> None:
    with pytest.raises(HoursError, match="unknown time zone 'Mars/Base'"):
        parse_schedule("Mars/Base", {})
    with pytest.raises(HoursError, match="bad date"):
        parse_schedule("UTC", {}, ["2026-13-01"])
    with pytest.raises(HoursError, match="ends before"):
        parse_schedule("UTC", {}, ["2026-12-31..2026-12-01"])


def test_weekday_hours_in_zone() -> None:
    s = parse_schedule("Europe/Berlin", {"mon-fri": "08:00-18:00", "sat": "09:00-12:00"})
    # Wed 2026-01-14: CET = UTC+1
    assert not is_open(s, at(2026, 1, 14, 6, 59))
    assert is_open(s, at(2026, 1, 14, 7, 0))
    assert is_open(s, at(2026, 1, 14, 16, 59, 59))
    assert not is_open(s, at(2026, 1, 14, 17, 0))
    assert is_open(s, at(2026, 1, 17, 10, 0))  # Saturday 11:00 local
    assert not is_open(s, at(2026, 1, 18, 10, 0))  # Sunday


def test_naive_datetime_refused() -> None:
    s = parse_schedule("UTC", {"daily": "open"})
    with pytest.raises(ValueError, match="aware"):
        is_open(s, datetime(2026, 1, 1, 12))


def test_holidays_fixed_yearly_and_ranges() -> None:
    s = parse_schedule("Europe/Berlin", {"daily": "open"},
                       ["2026-12-25", date(2026, 12, 26), "01-01", "2026-08-03..2026-08-05"])
    assert not is_open(s, at(2026, 12, 25, 12))
    assert not is_open(s, at(2026, 12, 26, 12))
    assert not is_open(s, at(2031, 1, 1, 12))  # MM-DD repeats every year
    assert not is_open(s, at(2026, 8, 4, 12)) and is_open(s, at(2026, 8, 6, 12))
    # the holiday is the local date: 23:30 UTC on the 24th is already the 25th in Berlin
    assert not is_open(s, at(2026, 12, 24, 23, 30))
    assert is_open(s, at(2026, 12, 24, 22, 30))


def test_overnight_range_spills_into_next_morning() -> None:
    s = parse_schedule("UTC", {"fri": "22:00-06:00"}, ["2026-01-17"])
    assert is_open(s, at(2026, 1, 9, 23))  # Friday night
    assert is_open(s, at(2026, 1, 10, 5, 59))  # Saturday early morning
    assert not is_open(s, at(2026, 1, 10, 6, 0))
    assert is_open(s, at(2026, 1, 16, 23)) is not False  # Friday 16th open
    assert not is_open(s, at(2026, 1, 17, 3))  # ... but Saturday 17th is a holiday


def test_spring_forward_berlin() -> None:
    # 2026-03-29: 02:00 CET -> 03:00 CEST at 01:00 UTC
    s = parse_schedule("Europe/Berlin", {"sun": "01:00-03:30", "mon-fri": "08:00-18:00"})
    assert is_open(s, at(2026, 3, 29, 0, 59))  # 01:59 CET
    assert is_open(s, at(2026, 3, 29, 1, 0))  # 03:00 CEST: 02:xx never existed
    assert is_open(s, at(2026, 3, 29, 1, 29))  # 03:29 CEST
    assert not is_open(s, at(2026, 3, 29, 1, 30))  # 03:30 CEST
    # opening time follows the wall clock across the change
    assert not is_open(s, at(2026, 3, 27, 6, 59)) and is_open(s, at(2026, 3, 27, 7, 0))  # CET
    assert not is_open(s, at(2026, 3, 30, 5, 59)) and is_open(s, at(2026, 3, 30, 6, 0))  # CEST


def test_fall_back_berlin() -> None:
    # 2026-10-25: 03:00 CEST -> 02:00 CET at 01:00 UTC; 02:15 happens twice
    s = parse_schedule("Europe/Berlin", {"sun": "02:00-02:30", "mon-fri": "08:00-18:00"})
    assert is_open(s, at(2026, 10, 25, 0, 15))  # 02:15 CEST
    assert not is_open(s, at(2026, 10, 25, 0, 45))  # 02:45 CEST
    assert is_open(s, at(2026, 10, 25, 1, 15))  # 02:15 CET, the second time
    assert not is_open(s, at(2026, 10, 25, 1, 30))  # 02:30 CET
    assert is_open(s, at(2026, 10, 23, 6, 0)) and not is_open(s, at(2026, 10, 23, 5, 59))  # CEST
    assert is_open(s, at(2026, 10, 26, 7, 0)) and not is_open(s, at(2026, 10, 26, 6, 59))  # CET


def test_southern_hemisphere_and_half_hour_zone() -> None:
    s = parse_schedule("Australia/Adelaide", {"daily": "09:00-17:00"})
    # Adelaide: UTC+10:30 in January (DST), UTC+9:30 in July
    assert is_open(s, at(2026, 1, 14, 22, 30)) and not is_open(s, at(2026, 1, 14, 22, 29))
    assert is_open(s, at(2026, 7, 14, 23, 30)) and not is_open(s, at(2026, 7, 14, 23, 29))
