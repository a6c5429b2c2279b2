"""Flows that read the PBX's own configuration (issue 16, section 2): office hours from the PBX
(each forced mode, a holiday with hours, break time, a department following the system's hours,
the flow's schedule as the fallback), dial-by-name from the PBX's users (one match, several,
none, too many, by speech), presence-aware transfers and the ``pbx`` template object.

Every call runs through the real worker against the emulator over loopback, the emulator
serving /xapi/v1 from a PBX description file; presence and forced modes are changed through the
emulator's control endpoints over HTTP.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ivr.call.record import Outcome
from ivr.emulator.xapi import PbxDescription, load_description

PBX = """\
system:
  timezone: W. Europe Standard Time
  hours: {mon-fri: "08:00-18:00"}
  break: {mon-fri: "12:00-13:00"}
  holidays:
    - {name: Christmas Day, date: "12-25"}
    - {name: New Year's Eve, date: "2026-12-31", hours: "12:00-24:00"}
users:
  - {number: "101", first_name: Anna, last_name: Miller}
  - {number: "102", first_name: Ben, last_name: Parker, presence: Away}
  - {number: "103", first_name: Carla, last_name: Parsons}
  - {number: "104", first_name: Dieter, last_name: Palmer, registered: false}
  - {number: "105", first_name: Eva, last_name: Page, hidden: true}
  - {number: "106", first_name: Frank, last_name: Paul, enabled: false}
  - {number: "107", first_name: George, last_name: Powell, queue_status: LoggedOut}
departments:
  - name: Sales
    hours: system
    break: system
    members: ["101", "102"]
  - name: Support
    hours: {mon-fri: "07:00-20:00"}
    timezone: Europe/London
    members: ["103", "104"]
queues:
  - {number: "810", name: Sales queue, agents: ["101", "102"]}
  - {number: "811", name: Night queue, agents: ["104", "107"]}
"""

MONDAY_10 = datetime.fromisoformat("2026-11-23T10:00:00+01:00")  # Berlin: open
MONDAY_1230 = datetime.fromisoformat("2026-11-23T12:30:00+01:00")  # the system's break
MONDAY_19 = datetime.fromisoformat("2026-11-23T19:00:00+01:00")  # system closed; Support (London 18:00) open
CHRISTMAS = datetime.fromisoformat("2026-12-25T10:00:00+01:00")
NYE_10 = datetime.fromisoformat("2026-12-31T10:00:00+01:00")  # the holiday starts at noon
NYE_14 = datetime.fromisoformat("2026-12-31T14:00:00+01:00")

HOURS_BRANCHES = """\
      open: [{log: open}]
      closed: [{log: closed}]
      break: [{log: break}]
      holiday: [{log: "holiday {{ last.holiday }}"}]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def pbx(tmp_path: Path) -> PbxDescription:
    """The description, loaded once from a file: calls given the same one share an emulator."""
    return load_description(write(tmp_path, "pbx.yaml", PBX))


def hours_flow(tmp_path: Path, pbx_option: str, extra: str = "") -> Path:
    return write(tmp_path, "hours.yaml", f"""\
steps:
  - answer
  - hours:
      pbx: {pbx_option}
{extra}{HOURS_BRANCHES}""")


async def hours_of(ivr_sim: Any, flow: Path, pbx: PbxDescription, at: datetime) -> dict[str, Any]:
    """Call the flow at ``at``; the hours step's result as the call record has it."""
    caller = await ivr_sim.call(flow, pbx=pbx, at=at)
    record = await caller.record()
    assert not record.errors, record.errors
    return next(s.result for s in record.steps if s.step == "hours")


async def control(caller: Any, path: str, body: dict[str, Any]) -> None:
    """Change the emulated PBX over its control endpoint, then let the worker read it again."""
    async with aiohttp.ClientSession() as http, \
            http.put(f"{caller.emulator.url}/_emulator/xapi/{path}", json=body) as resp:
        assert resp.status == 200, await resp.text()
    await caller.harness.refresh_pbx()


# --- office hours -----------------------------------------------------------------------------


async def test_pbx_hours_open_break_closed_and_holidays(ivr_sim, tmp_path, pbx) -> None:
    flow = hours_flow(tmp_path, "true")
    cases = [(MONDAY_10, "open", None), (MONDAY_1230, "break", None), (MONDAY_19, "closed", None),
             (CHRISTMAS, "holiday", "Christmas Day"), (NYE_10, "open", None), (NYE_14, "holiday", "New Year's Eve")]
    for at, state, holiday in cases:
        got = await hours_of(ivr_sim, flow, pbx, at)
        assert (got["state"], got["holiday"], got["source"]) == (state, holiday, "pbx"), (at, got)
        assert got["open"] is (state == "open")


async def test_department_following_the_system_schedule_and_its_own(ivr_sim, tmp_path, pbx) -> None:
    sales = hours_flow(tmp_path, "{department: Sales}")
    assert (await hours_of(ivr_sim, sales, pbx, MONDAY_10))["state"] == "open"
    assert (await hours_of(ivr_sim, sales, pbx, MONDAY_1230))["state"] == "break"  # break: system
    assert (await hours_of(ivr_sim, sales, pbx, MONDAY_19))["state"] == "closed"
    support = write(tmp_path, "support.yaml", hours_flow(tmp_path, "{department: support}").read_text())
    # 19:00 in Berlin is 18:00 in London: Support's own hours (07-20 London) are open, no break
    assert (await hours_of(ivr_sim, support, pbx, MONDAY_19))["state"] == "open"
    assert (await hours_of(ivr_sim, support, pbx, MONDAY_1230))["state"] == "open"


async def test_each_forced_mode_first_and_its_expiry(ivr_sim, tmp_path, pbx) -> None:
    flow = hours_flow(tmp_path, "{department: Sales}")
    first = await ivr_sim.call(flow, pbx=pbx, at=MONDAY_10)  # starts the emulator and worker for 10:00
    await first.record()
    expected = {"ForceOpened": "open", "ForceClosed": "closed", "ForceBreak": "break", "ForceHoliday": "holiday",
                "ForceCustomOperator": "closed"}
    for mode, state in expected.items():
        await control(first, "departments/Sales/forced", {"mode": mode})
        got = await hours_of(ivr_sim, flow, pbx, MONDAY_10)
        assert (got["state"], got["forced"]) == (state, mode), got
    # an override that has expired no longer counts
    await control(first, "departments/Sales/forced", {"mode": "ForceClosed", "until": "2026-11-23T08:30:00Z"})
    got = await hours_of(ivr_sim, flow, pbx, MONDAY_10)
    assert (got["state"], got["forced"]) == ("open", None)
    # forced open at night beats the closed schedule
    night = await ivr_sim.call(flow, pbx=pbx, at=MONDAY_19)
    await night.record()
    await control(night, "departments/Sales/forced", {"mode": "ForceOpened", "until": "2026-11-24T08:00:00Z"})
    got = await hours_of(ivr_sim, flow, pbx, MONDAY_19)
    assert (got["state"], got["forced"]) == ("open", "ForceOpened")


async def test_branches_run_and_unwritten_break_runs_closed(ivr_sim, tmp_path, pbx) -> None:
    flow = write(tmp_path, "f.yaml", """\
steps:
  - answer
  - hours:
      pbx: true
      into: is_open
      open: [{say: "We are open"}]
      closed: [{say: "We are closed"}]
      holiday: [{say: "Closed for {{ last.holiday }}"}]
""")
    caller = await ivr_sim.call(flow, pbx=pbx, at=MONDAY_1230)
    await caller.hears("We are closed")  # break with no `break` branch: closed runs
    assert caller.call.vars["is_open"] is False
    caller = await ivr_sim.call(flow, pbx=pbx, at=CHRISTMAS)
    await caller.hears("Closed for Christmas Day")
    caller = await ivr_sim.call(flow, pbx=pbx, at=MONDAY_10)
    await caller.hears("We are open")


async def test_the_flow_schedule_is_the_fallback(ivr_sim, tmp_path, pbx) -> None:
    fallback = """\
      timezone: Europe/Berlin
      weekly: {mon-fri: "09:00-11:00"}
      holidays: ["12-24"]
"""
    unknown_department = hours_flow(tmp_path, "{department: Nowhere}", fallback)
    got = await hours_of(ivr_sim, unknown_department, pbx, MONDAY_10)
    assert (got["state"], got["source"]) == ("open", "flow")
    # no PBX description: the worker does not read the PBX at all; the schedule decides
    no_pbx = write(tmp_path, "nopbx.yaml", hours_flow(tmp_path, "true", fallback).read_text())
    caller = await ivr_sim.call(no_pbx, at=datetime.fromisoformat("2026-12-24T10:00:00+01:00"))
    record = await caller.record()
    got = next(s.result for s in record.steps if s.step == "hours")
    assert (got["state"], got["source"]) == ("holiday", "flow")


async def test_unknown_hours_without_a_fallback_fail_the_step(ivr_sim, tmp_path) -> None:
    flow = write(tmp_path, "f.yaml", """\
steps:
  - answer
  - hours: {pbx: true, open: [{say: open}], closed: [{say: closed}]}
on_error: [{say: "Sorry: {{ error }}"}]
""")
    caller = await ivr_sim.call(flow)
    said = await caller.hears("Sorry")
    assert "has not been read" in said and "no weekly schedule" in said and "xapi: {enabled: true}" in said


# --- dial-by-name -----------------------------------------------------------------------------

DIRECTORY = """\
steps:
  - answer
  - directory:
      match: last
      into: person
      on_no_match: [{say: "Nobody found"}]
      on_no_input: [{say: "Nothing typed"}]
"""


@pytest.fixture
def directory_flow(tmp_path: Path) -> Path:
    return write(tmp_path, "dir.yaml", DIRECTORY)


async def test_directory_one_match(ivr_sim, directory_flow, pbx) -> None:
    caller = await ivr_sim.call(directory_flow, pbx=pbx)
    await caller.hears("first letters of the person's last name")
    await caller.press("6455#")  # M-I-L-L
    await caller.hears("For Anna Miller, press 1")
    await caller.press("1")
    await caller.expect_transfer("101")
    record = await caller.record()
    assert record.outcome == Outcome.TRANSFERRED
    person = caller.call.vars["person"]
    assert (person["status"], person["number"], person["letters"]) == ("found", "101", "6455")
    assert person["transfer"]["status"] == "answered"


async def test_directory_several_matches_hidden_and_disabled_left_out(ivr_sim, directory_flow, pbx) -> None:
    caller = await ivr_sim.call(directory_flow, pbx=pbx)
    await caller.press("72#")  # Pa..: Parker, Parsons, Palmer; Page is hidden, Paul disabled
    await caller.hears("For Dieter Palmer, press 1")
    await caller.hears("For Ben Parker, press 2")
    await caller.hears("For Carla Parsons, press 3")
    await caller.press("3")
    await caller.expect_transfer("103")
    person = caller.call.vars["person"]
    assert [m["number"] for m in person["matches"]] == ["104", "102", "103"]


async def test_directory_none_then_too_many_then_found(ivr_sim, directory_flow, pbx) -> None:
    caller = await ivr_sim.call(directory_flow, pbx=pbx)
    await caller.press("999#")
    await caller.hears("There is no one by that name")
    await caller.press("7#")  # P.. (4 listed users) is more than 3
    await caller.hears("too many names")
    await caller.press("727#")  # Par..: Parker, Parsons
    await caller.hears("For Ben Parker, press 1")
    await caller.press("1")
    await caller.expect_transfer("102")
    assert caller.call.vars["person"]["attempts"] == 3


async def test_directory_gives_up_after_the_last_try(ivr_sim, directory_flow, pbx) -> None:
    caller = await ivr_sim.call(directory_flow, pbx=pbx)
    for _ in range(3):
        await caller.press("999#")
        await caller.hears("There is no one by that name" if _ < 2 else "Nobody found")
    record = await caller.record()
    assert caller.call.vars["person"]["status"] == "no_match"
    assert record.transferred_to in (None, "")


async def test_directory_star_searches_again(ivr_sim, directory_flow, pbx) -> None:
    caller = await ivr_sim.call(directory_flow, pbx=pbx)
    await caller.press("6455#")
    await caller.hears("Anna Miller")
    await caller.press("*")
    await caller.hears("first letters")
    await caller.press("77#")  # nobody's last name starts with P/Q/R/S twice
    await caller.hears("There is no one by that name")
    await caller.press("7693#")  # P-O-W-E
    await caller.hears("For George Powell, press 1")
    await caller.press("1")
    await caller.expect_transfer("107")


# Runs the YAML flow `flow`, appending each position to `log` (JSON lines), from the position
# in the file `resume` when given (as a worker taking over the call does).
RESUMING = """\
from pathlib import Path

from ivr.flow import load_flow
from ivr.flow.interpreter import YamlFlow
from ivr.flow.position import FlowPosition


async def main(call, flow, log, resume=""):
    def keep(position):
        with Path(log).open("a") as out:
            out.write(position.model_dump_json() + "\\n")

    start = FlowPosition.model_validate_json(Path(resume).read_text()) if resume else None
    await YamlFlow(load_flow(flow)).run(call, resume=start, on_position=keep)
"""


async def test_directory_taken_over_at_its_second_try_has_only_the_tries_left(ivr_sim, directory_flow, pbx,
                                                                               tmp_path) -> None:
    from ivr.call.results import DirectoryMark
    from ivr.flow.position import FlowPosition

    wrapper = write(tmp_path, "wrapper.py", RESUMING)
    first_log = tmp_path / "first.jsonl"
    caller = await ivr_sim.call(wrapper, params={"flow": str(directory_flow), "log": str(first_log)}, pbx=pbx)
    await caller.press("999#")
    await caller.hears("There is no one by that name")  # the second try has started
    await caller.hangup()
    await caller.record()
    at_second = FlowPosition.model_validate_json(first_log.read_text().splitlines()[-1])
    assert at_second.waiting_for == "input"
    assert at_second.attempt == DirectoryMark(number=2, after="none", letters="999")

    # Resumed there: the second try's prompt (what ended the first, then the question), and
    # only the third try after it: 3 in all, not 3 more.
    resume = tmp_path / "at_second.json"
    resume.write_text(at_second.model_dump_json())
    caller = await ivr_sim.call(wrapper, params={"flow": str(directory_flow), "log": str(tmp_path / "second.jsonl"),
                                                 "resume": str(resume)}, pbx=pbx)
    await caller.hears("There is no one by that name")
    await caller.hears("first letters of the person's last name")
    await caller.press("7#")  # P..: too many
    await caller.hears("too many names")
    await caller.press("999#")
    await caller.hears("Nobody found")
    person = caller.call.vars["person"]
    assert (person["status"], person["attempts"], person["letters"]) == ("no_match", 3, "999")
    later = [FlowPosition.model_validate_json(line) for line in (tmp_path / "second.jsonl").read_text().splitlines()]
    assert [(p.attempt.number, p.attempt.after) for p in later if p.attempt is not None] == [
        (2, "none"), (3, "too_many")]


@pytest.mark.speech
async def test_directory_by_speech(ivr_sim, tmp_path, pbx) -> None:
    flow = write(tmp_path, "dir.yaml", DIRECTORY.replace("match: last", "match: last\n      speech: true"))
    caller = await ivr_sim.call(flow, pbx=pbx)
    await caller.hears("or say the name")
    await caller.says("Anna Miller", when_listening=True)
    await caller.hears("For Anna Miller, press 1")
    await caller.press("1")
    await caller.expect_transfer("101")
    person = caller.call.vars["person"]
    assert (person["source"], person["number"]) == ("speech", "101")


# --- presence-aware transfer --------------------------------------------------------------------

PRESENCE = """\
steps:
  - answer
  - gather: {prompt: {say: "Extension?"}, max_digits: 3, into: ext}
  - transfer:
      to: "{{ ext }}"
      timeout: 5
      check_presence: true
      into: tried
      on_unavailable: [{say: "Sorry. {{ last.reason }}."}, hangup]
"""


@pytest.mark.parametrize("ext, said", [("102", "Ben is away"), ("104", "Dieter cannot take calls right now")])
async def test_transfer_to_an_unavailable_user_rings_nobody(ivr_sim, tmp_path, pbx, ext, said) -> None:
    caller = await ivr_sim.call(write(tmp_path, "p.yaml", PRESENCE), pbx=pbx)
    await caller.press(ext)
    await caller.hears(said)
    await caller.expect_hangup()
    assert caller.call.vars["tried"]["status"] == "unavailable"
    events = [e.get("event") for e in caller.emulator.call_info(caller.callid).get("log", [])]
    assert not {"routed", "transferred", "diverted"} & set(events), events


async def test_presence_changed_by_the_admin_is_seen(ivr_sim, tmp_path, pbx) -> None:
    flow = write(tmp_path, "p.yaml", PRESENCE)
    caller = await ivr_sim.call(flow, pbx=pbx)
    await caller.press("101")
    await caller.expect_transfer("101")  # available: rung as usual
    await control(caller, "users/101", {"presence": "Out of office"})
    caller = await ivr_sim.call(flow, pbx=pbx)
    await caller.press("101")
    await caller.hears("Anna is out of office today")
    await control(caller, "users/101", {"presence": "Available"})
    caller = await ivr_sim.call(flow, pbx=pbx)
    await caller.press("101")
    await caller.expect_transfer("101")


async def test_directory_with_presence_check(ivr_sim, tmp_path, pbx) -> None:
    flow = write(tmp_path, "d.yaml", """\
steps:
  - answer
  - directory:
      match: last
      check_presence: true
      on_unavailable: [{say: "{{ last.transfer.reason }}. Goodbye."}]
""")
    caller = await ivr_sim.call(flow, pbx=pbx)
    await caller.press("7275#")  # Parker
    await caller.hears("For Ben Parker, press 1")
    await caller.press("1")
    await caller.hears("Ben is away. Goodbye")


# --- templates ----------------------------------------------------------------------------------


async def test_templates_read_pbx_facts(ivr_sim, tmp_path, pbx) -> None:
    flow = write(tmp_path, "t.yaml", """\
steps:
  - answer
  - say: "Sales has {{ pbx.queue('810').logged_in }} agents, night has {{ pbx.queue('811').logged_in }}"
  - if: "pbx.queue('811').logged_in == 0"
    then: [{say: "Nobody is on the night shift. Press 1 for a callback."}]
  - say: "{{ pbx.user('102').reason }}; Carla is {{ pbx.user('103').presence }}; Sales is {{ pbx.department('Sales').state }}"
  - say: "unknown {{ pbx.user('999') is none }}"
""")
    caller = await ivr_sim.call(flow, pbx=pbx, at=MONDAY_10)
    await caller.hears("Sales has 2 agents, night has 0")  # 104 no phone, 107 logged out
    await caller.hears("Press 1 for a callback")
    await caller.hears("Ben is away; Carla is available; Sales is open")
    await caller.hears("unknown True")


# --- Python flows -------------------------------------------------------------------------------

PY_FLOW = '''\
async def main(call):
    await call.answer()
    hours = await call.pbx_hours("Sales")
    await call.say(f"Sales is {hours.state}")
    if not hours.open:
        return
    person = await call.directory(match="last")
    if not person.found:
        await call.say("Nobody")
        return
    presence = await call.presence(person.number)
    if not presence.available:
        await call.say(presence.reason)
        return
    await call.transfer(person.number, timeout=5)
'''


async def test_python_flow_same_behaviour(ivr_sim, tmp_path, pbx) -> None:
    flow = write(tmp_path, "flow.py", PY_FLOW)
    caller = await ivr_sim.call(flow, pbx=pbx, at=MONDAY_10)
    await caller.hears("Sales is open")
    await caller.press("7275#")
    await caller.hears("For Ben Parker, press 1")
    await caller.press("1")
    await caller.hears("Ben is away")
    caller = await ivr_sim.call(flow, pbx=pbx, at=MONDAY_10)
    await caller.press("6455#")
    await caller.press("1")
    await caller.expect_transfer("101")
    record = await caller.record()
    steps = [s.step for s in record.steps]
    assert steps[:4] == ["answer", "pbx_hours", "say", "directory"], steps
    assert next(s.result for s in record.steps if s.step == "pbx_hours")["state"] == "open"
    caller = await ivr_sim.call(flow, pbx=pbx, at=MONDAY_1230)
    await caller.hears("Sales is break")


# --- ivr validate -------------------------------------------------------------------------------


def test_validate_checks_pbx_hours_directory_and_presence(tmp_path: Path) -> None:
    from ivr.validate import validate_paths

    good = write(tmp_path, "good.yaml", """\
steps:
  - hours: {pbx: {department: Sales}, timezone: Europe/Berlin, weekly: {mon-fri: "08:00-18:00"},
            break: [{say: "break"}], holiday: [{say: "holiday"}]}
  - hours: {pbx: true, closed: [hangup]}
  - directory: {match: first, speech: {min_confidence: 0.6}, check_presence: true, on_unavailable: []}
  - directory: {transfer: false, into: who, on_found: [{transfer: {to: "{{ who.number }}", check_presence: true}}]}
  - say: "{{ pbx.user('101').reason }}"
""")
    assert [d for d in validate_paths([good]) if d.severity == "error"] == []
    bad = write(tmp_path, "bad.yaml", """\
steps:
  - hours: {weekly: {mon-fri: "08:00-18:00"}}
  - hours: {timezone: Europe/Berlin, weekly: {mon: open}, break: []}
  - hours: {pbx: true, timezone: Europe/Berlin}
  - hours: {pbx: {departmnt: Sales}}
  - transfer: {to: "101", on_unavailable: []}
  - directory: {speech: {phrases: [anna]}}
  - directory: {transfer: false, on_busy: []}
  - directory: {max_matches: 12}
vars: {pbx: 1}
""")
    errors = [f"{d.line}:{d.col}: {d.message}" for d in validate_paths([bad]) if d.severity == "error"]
    expected = ["hours needs 'timezone'", "'break' needs 'pbx'", "needs 'weekly' too", "departmnt",
                "on_unavailable needs check_presence", "directory speech takes no phrases",
                "'on_busy' needs transfer: true", "max_matches", "'pbx' is reserved"]
    for want in expected:
        assert any(want in e for e in errors), (want, errors)
    lines = sorted({int(e.split(":")[0]) for e in errors})
    assert lines == [2, 3, 4, 5, 6, 7, 8, 9, 10], errors


async def test_directory_plays_a_recorded_name_when_the_flow_has_one(ivr_sim, tmp_path, pbx) -> None:
    import numpy as np
    import soundfile

    (tmp_path / "names").mkdir()
    soundfile.write(str(tmp_path / "names" / "101.wav"), np.zeros(4000, np.float32), 8000, subtype="PCM_16")
    flow = write(tmp_path, "dir.yaml",
                 DIRECTORY.replace("match: last", 'match: last\n      name_prompt: "names/{{ number }}.wav"'))
    caller = await ivr_sim.call(flow, pbx=pbx)
    await caller.press("72#")
    await caller.hears("For Dieter Palmer, press 1")  # no recording: spoken
    await caller.press("*")
    await caller.press("6455#")
    await caller.hears("For")
    played = await caller.hears("101")  # Anna Miller's recorded name
    assert played.endswith("names/101.wav")
    await caller.hears("press 1")
    await caller.press("1")
    await caller.expect_transfer("101")
