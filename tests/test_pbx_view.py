"""The pure parts of a call's view of the PBX (ivr/call/pbx_view.py): keypad spelling, directory
matching, spoken-name phrases, presence, and the flow schedule as the hours fallback."""

from __future__ import annotations

from datetime import datetime

import pytest

from ivr.call.pbx_view import (
    HoursUnknown,
    directory_matches,
    directory_phrases,
    hours_state,
    keypad,
    presence_of,
)
from ivr.call.speech_input import SpeechOptions
from ivr.pbx.hours import parse_schedule
from ivr.pbx.xapi import User


def user(number: str, first: str, last: str, **kw: object) -> User:
    kw.setdefault("DisplayName", f"{first} {last}")
    return User(Number=number, FirstName=first, LastName=last, **kw)


def test_keypad_spells_names_with_accents_and_punctuation() -> None:
    assert keypad("O'Brien") == "627436"
    assert keypad("Müller") == keypad("Muller") == "685537"
    assert keypad("Strauß") == "7872877"
    assert keypad("Ñúñez") == "68639"
    assert keypad("Lee-2") == "5332"
    assert keypad("李") == ""  # no letters on the keypad: never matches


def test_matches_by_last_first_or_either_and_unlisted_left_out() -> None:
    users = [user("1", "Anna", "Parker"), user("2", "Paul", "Adams"), user("3", "Pia", "Page", HideInPhonebook=True),
             user("4", "Pat", "Paley", Enabled=False), User(Number="5", DisplayName="Anne Marie")]
    assert [u.Number for u in directory_matches(users, "72", "last")] == ["1"]
    assert [u.Number for u in directory_matches(users, "72", "first")] == ["2"]
    assert [u.Number for u in directory_matches(users, "72", "either")] == ["2", "1"]  # by last name
    assert [u.Number for u in directory_matches(users, "266", "first")] == ["5", "1"]  # a display name alone
    assert directory_matches(users, "", "either") == []


def test_shared_names_are_no_speech_phrase_for_anyone() -> None:
    users = [user("1", "Anna", "Smith"), user("2", "Ben", "Smith"), user("3", "Carl", "Jones")]
    phrases = directory_phrases(users)
    assert phrases == {"1": ["Anna Smith"], "2": ["Ben Smith"], "3": ["Carl Jones", "Jones"]}
    SpeechOptions(phrases=phrases)  # valid: no phrase names two people
    twins = [user("1", "Anna", "Smith"), user("2", "Anna", "Smith")]
    assert directory_phrases(twins) == {}


@pytest.mark.parametrize("fields, state, reason", [
    ({}, "available", ""),
    ({"CurrentProfileName": "Away"}, "away", "Anna is away"),
    ({"CurrentProfileName": "Out of office"}, "out_of_office", "Anna is out of office today"),
    ({"CurrentProfileName": "OutOfOffice"}, "out_of_office", "Anna is out of office today"),
    ({"CurrentProfileName": "Do Not Disturb"}, "dnd", "Anna does not want to be disturbed"),
    ({"CurrentProfileName": "Custom 1"}, "custom", ""),
    ({"IsRegistered": False}, "unregistered", "Anna cannot take calls right now"),
    ({"Enabled": False, "IsRegistered": False}, "disabled", "Anna cannot take calls"),
])
def test_presence(fields: dict[str, object], state: str, reason: str) -> None:
    p = presence_of(user("101", "Anna", "Schmidt", **fields))
    assert (p.state, p.reason, p.available) == (state, reason, state in ("available", "custom"))


def test_hours_fallback_and_unknown() -> None:
    schedule = parse_schedule("Europe/Berlin", {"mon-fri": "09:00-17:00"}, ["12-24"])
    at = datetime.fromisoformat("2026-12-24T10:00:00+01:00")
    assert hours_state(None, at, None, schedule).to_dict() == {
        "open": False, "state": "holiday", "source": "flow", "forced": None, "holiday": "holiday"}
    assert hours_state(None, at.replace(day=23), None, schedule).state == "open"
    with pytest.raises(HoursUnknown, match="has not been read"):
        hours_state(None, at)
