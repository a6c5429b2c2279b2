"""The shipped PBX-aware main menu (flows/pbx_menu.yaml) against the shipped PBX description
(examples/pbx.yaml): hours, lunch break and holidays from the PBX, dial-by-name, presence, and
the sales queue's logged-in agents, through the worker and the emulator over loopback."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from ivr.call.record import Outcome
from ivr.emulator.xapi import PbxDescription, load_description

ROOT = Path(__file__).resolve().parents[2]
FLOW = ROOT / "flows" / "pbx_menu.yaml"
MONDAY_10 = datetime.fromisoformat("2026-11-23T10:00:00+01:00")


@pytest.fixture
def pbx() -> PbxDescription:
    return load_description(ROOT / "examples" / "pbx.yaml")


async def test_dial_by_name_transfers(ivr_sim, pbx) -> None:
    caller = await ivr_sim.call(FLOW, pbx=pbx, at=MONDAY_10)
    await caller.hears("welcome")
    await caller.press("2")
    await caller.hears("first letters")
    await caller.press("7246#")  # S-C-H-M: Schmidt, not Schulz
    await caller.hears("For Anna Schmidt, press 1")
    await caller.press("1")
    await caller.expect_transfer("101")
    assert (await caller.record()).outcome == Outcome.TRANSFERRED


async def test_an_away_person_gets_a_message_instead(ivr_sim, pbx) -> None:
    caller = await ivr_sim.call(FLOW, pbx=pbx, at=MONDAY_10)
    await caller.press("2")
    await caller.press("6523#")  # Okafor
    await caller.hears("For Ben Okafor, press 1")
    await caller.press("1")
    await caller.hears("Ben is away. Please leave a message")
    await caller.hears("vm greeting")
    record = await caller.record()  # the caller says nothing: the recording ends on silence
    assert any("/voicemail/102/" in r for r in record.recordings), record.recordings


@pytest.mark.parametrize("at, said", [
    ("2026-11-23T12:30:00+01:00", "We are at lunch"),
    ("2026-12-25T10:00:00+01:00", "We are closed today for Christmas Day"),
    ("2026-12-31T15:00:00+01:00", "We are closed today for New Year's Eve"),
])
async def test_break_and_holidays_from_the_pbx(ivr_sim, pbx, at, said) -> None:
    caller = await ivr_sim.call(FLOW, pbx=pbx, at=datetime.fromisoformat(at))
    await caller.hears(said)
    await caller.hears("vm greeting")  # then the voicemail
    await caller.hangup()
    await caller.record()


async def test_no_sales_agent_logged_in_offers_a_message(ivr_sim, pbx) -> None:
    caller = await ivr_sim.call(FLOW, pbx=pbx, at=MONDAY_10)
    await caller.hangup()
    await caller.record()
    async with aiohttp.ClientSession() as http:
        for number in ("101", "102"):
            async with http.put(f"{caller.emulator.url}/_emulator/xapi/users/{number}",
                                json={"queue_status": "LoggedOut"}) as resp:
                assert resp.status == 200
    await caller.harness.refresh_pbx()
    caller = await ivr_sim.call(FLOW, pbx=pbx, at=MONDAY_10)
    await caller.press("1")
    await caller.hears("Nobody in sales can take your call right now")
    await caller.hears("vm greeting")
    await caller.hangup()
    await caller.record()
