"""The campaign's sans-I/O core: call lists, calling windows, pacing, retries, resume
(ivr/campaign/contacts.py, window.py, plan.py). Time is given, never read."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ivr.campaign.contacts import ContactListError, normalise, read_contacts, read_do_not_call
from ivr.campaign.plan import DONE, PENDING, CampaignPlan, CampaignSettings
from ivr.campaign.window import CallingWindow, WindowError

MONDAY_10_UTC = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_contacts_keep_their_columns_as_flow_variables(tmp_path):
    path = write(tmp_path, "list.csv", "number,name,timezone,appointment\n"
                 "+49 30 123456,Anna,Europe/Berlin,Tuesday 10:00\n\n+1 (212) 555-0100,Bob,,Friday\n")
    a, b = read_contacts(path)
    assert (a.number, a.name, a.timezone, a.variables, a.line) == (
        "+49 30 123456", "Anna", "Europe/Berlin", {"appointment": "Tuesday 10:00"}, 2)
    assert b.timezone is None and b.line == 4 and b.key == "+12125550100"


@pytest.mark.parametrize("text, message", [
    ("", "list.csv:1: the call list is empty"),
    ("phone_nr,name\n1,a\n", "list.csv:1: no 'number' column"),
    ("number,my-var\n123,x\n", "list.csv:1: column 'my-var' is not a usable variable name"),
    ("number\n123\nhello\n", "list.csv:3: 'hello' is not a phone number"),
    ("number,tz\n123,Mars/Base\n", "list.csv:2: unknown time zone 'Mars/Base'"),
    ("number\n123,456\n", "list.csv:2: more fields than the header has columns"),
])
def test_bad_lists_are_one_line_errors_naming_file_and_line(tmp_path, text, message):
    with pytest.raises(ContactListError) as info:
        read_contacts(write(tmp_path, "list.csv", text))
    assert str(info.value).endswith(message) or message in str(info.value)
    assert "\n" not in str(info.value)


def test_the_same_number_twice_is_two_contacts(tmp_path):
    a, b = read_contacts(write(tmp_path, "list.csv", "number\n+4930 1\n+49301\n"))
    assert a.key != b.key and normalise(a.number) == normalise(b.number)


def test_do_not_call_lists_as_lines_or_csv(tmp_path):
    assert read_do_not_call(write(tmp_path, "dnc.txt", "# opted out\n+49 30 123456\n\n0800-111\n")) == {
        "+4930123456", "0800111"}
    assert read_do_not_call(write(tmp_path, "dnc.csv", "number,why\n+49 30 123456,asked\n")) == {"+4930123456"}
    with pytest.raises(ContactListError, match=r"dnc.txt:1: 'call me' is not a phone number"):
        read_do_not_call(write(tmp_path, "dnc.txt", "call me\n"))


def test_calling_windows_in_the_contacts_zone():
    window = CallingWindow("mon-fri 09:00-12:00 14:00-18:00; sat 10:00-13:00")
    assert window.is_open(MONDAY_10_UTC, "Europe/Berlin")  # 11:00 there
    assert not window.is_open(MONDAY_10_UTC, "America/New_York")  # 05:00 there
    assert window.next_open(MONDAY_10_UTC, "America/New_York") == datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
    lunch = datetime(2026, 12, 7, 11, 30, tzinfo=UTC)  # 12:30 in Berlin
    assert window.next_open(lunch, "Europe/Berlin") == datetime(2026, 12, 7, 13, 0, tzinfo=UTC)
    sunday = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert window.next_open(sunday, "Europe/Berlin") == datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    assert CallingWindow("mon,wed 09:00-10:00, sat 10:00-14:00").weekly == {
        "mon,wed": ["09:00-10:00"], "sat": ["10:00-14:00"]}
    assert CallingWindow().always and CallingWindow().is_open(sunday, "UTC")


@pytest.mark.parametrize("spec, needle", [("mon 9-18", "bad time '9'"), ("xyz 09:00-10:00", "unknown day 'xyz'"),
                                          ("", "is empty"), ("09:00-10:00", "not 'DAYS HH:MM-HH:MM'")])
def test_bad_windows_say_what_is_wrong(spec, needle):
    with pytest.raises(WindowError) as info:
        CallingWindow(spec)
    assert needle in str(info.value) and repr(spec) in str(info.value)


def contacts(tmp_path: Path, n: int, extra: str = "") -> list:
    rows = "".join(f"+4930{i:06d}{extra}\n" for i in range(n))
    return read_contacts(write(tmp_path, "list.csv", "number" + (",timezone" if extra else "") + "\n" + rows))


def test_pacing_keeps_concurrency_and_rate(tmp_path):
    plan = CampaignPlan(contacts(tmp_path, 10), CampaignSettings(concurrency=3, rate=2.0))
    now = MONDAY_10_UTC
    started = []
    for _ in range(40):  # 10 s in 0.25 s steps, nobody hangs up
        contact = plan.next_due(now)
        if contact is not None:
            plan.started(contact, now)
            started.append(now)
        now += timedelta(seconds=0.25)
    assert len(started) == 3 and plan.in_flight == 3  # concurrency
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(started)] == [0.5, 0.5]  # 2 a second
    assert plan.next_due(now, free=5) is None
    assert plan.next_due(now, free=0) is None


def test_free_capacity_of_the_worker_limits_new_calls(tmp_path):
    plan = CampaignPlan(contacts(tmp_path, 3), CampaignSettings(concurrency=3, rate=100))
    assert plan.next_due(MONDAY_10_UTC, free=0) is None  # inbound calls took the room
    assert plan.next_due(MONDAY_10_UTC, free=1) is not None


def test_retries_per_result_with_their_delays_and_never_overlapping(tmp_path):
    settings = CampaignSettings(concurrency=5, rate=100, retries=2, retry_delay={"busy": 60, "no_answer": 600})
    plan = CampaignPlan(contacts(tmp_path, 1), settings)
    now = MONDAY_10_UTC
    contact = plan.next_due(now)
    plan.started(contact, now)
    assert plan.next_due(now + timedelta(seconds=5)) is None  # its attempt is in flight: no overlap
    st = plan.ended(contact, "busy", now + timedelta(seconds=5))
    assert st.status == PENDING
    assert plan.next_due(now + timedelta(seconds=30)) is None
    assert plan.next_wake(now + timedelta(seconds=30)) == now + timedelta(seconds=65)
    plan.started(plan.next_due(now + timedelta(seconds=65)), now + timedelta(seconds=65))
    plan.ended(contact, "no_answer", now + timedelta(seconds=90))
    again = now + timedelta(seconds=690)
    plan.started(plan.next_due(again), again)
    st = plan.ended(contact, "busy", again + timedelta(seconds=3))
    assert st.status == DONE and st.result == "busy" and len(st.attempts) == 3  # 1 + 2 retries
    assert plan.finished and plan.next_wake(again) is None


def test_answered_and_machine_are_final_unless_asked(tmp_path):
    plan = CampaignPlan(contacts(tmp_path, 2), CampaignSettings(rate=100))
    a = plan.next_due(MONDAY_10_UTC)
    plan.started(a, MONDAY_10_UTC)
    b = plan.next_due(MONDAY_10_UTC + timedelta(seconds=1))
    plan.started(b, MONDAY_10_UTC + timedelta(seconds=1))
    assert plan.ended(a, "answered", MONDAY_10_UTC, outcome="ivr_hangup", variables={"confirmed": "yes"}).result == "answered"
    assert plan.ended(b, "machine", MONDAY_10_UTC).result == "machine"
    retrying = CampaignPlan(contacts(tmp_path, 1), CampaignSettings(rate=100, retry_on=("machine",)))
    c = retrying.next_due(MONDAY_10_UTC)
    retrying.started(c, MONDAY_10_UTC)
    assert retrying.ended(c, "machine", MONDAY_10_UTC).status == PENDING
    with pytest.raises(ValueError, match="cannot retry on answered"):
        CampaignSettings(retry_on=("answered",))


def test_calls_wait_for_the_window_in_each_contacts_zone(tmp_path):
    settings = CampaignSettings(rate=100, window=CallingWindow("mon-fri 09:00-18:00"))
    plan = CampaignPlan(contacts(tmp_path, 1, ",America/New_York"), settings)
    assert plan.next_due(MONDAY_10_UTC) is None  # 05:00 in New York
    assert plan.next_wake(MONDAY_10_UTC) == datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
    assert plan.next_due(datetime(2026, 12, 7, 14, 0, tzinfo=UTC)) is not None


def test_do_not_call_numbers_are_never_called(tmp_path):
    plan = CampaignPlan(contacts(tmp_path, 2), CampaignSettings(rate=100), do_not_call=frozenset({"+4930000000"}))
    assert plan.counts()["do_not_call"] == 1
    first = plan.next_due(MONDAY_10_UTC)
    assert first is not None and first.number == "+4930000001"


def test_stop_and_resume_never_calls_anyone_twice(tmp_path):
    listed = contacts(tmp_path, 3)
    plan = CampaignPlan(listed, CampaignSettings(rate=100))
    a = plan.next_due(MONDAY_10_UTC)
    plan.started(a, MONDAY_10_UTC)
    plan.ended(a, "answered", MONDAY_10_UTC + timedelta(seconds=20))
    b = plan.next_due(MONDAY_10_UTC + timedelta(seconds=21))
    plan.started(b, MONDAY_10_UTC + timedelta(seconds=21))  # in flight when the process dies
    saved = json.loads(json.dumps(plan.to_json()))
    resumed = CampaignPlan(listed, CampaignSettings(rate=100), state=saved)
    assert resumed.states[a.key].result == "answered"
    assert resumed.states[b.key].result == "interrupted" and resumed.states[b.key].attempts[-1].result == "interrupted"
    nxt = resumed.next_due(MONDAY_10_UTC + timedelta(minutes=5))
    assert nxt is not None and nxt.key not in (a.key, b.key)
