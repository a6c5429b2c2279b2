"""The shipped main menu, tested the way a flow author would: with the ivr_sim fixture."""

from __future__ import annotations

from datetime import datetime

import pytest

from ivr.call.record import Outcome

MONDAY_MORNING = datetime.fromisoformat("2026-11-23T10:00:00+01:00")
SUNDAY = datetime.fromisoformat("2026-11-22T10:00:00+01:00")
CHRISTMAS = datetime.fromisoformat("2026-12-25T10:00:00+01:00")
FLOW = "flows/main_menu.yaml"


@pytest.fixture
def sim(ivr_sim):
    ivr_sim.at = MONDAY_MORNING
    return ivr_sim


@pytest.mark.parametrize("key, extension", [("1", "101"), ("2", "102")])
async def test_menu_key_transfers_to_its_department(sim, key, extension):
    caller = await sim.call(FLOW, caller="+4930123")
    await caller.hears("welcome")
    await caller.hears("main menu")
    await caller.press(key)
    await caller.hears("transferring")
    await caller.expect_transfer(extension)
    record = await caller.record()
    assert record.outcome == Outcome.TRANSFERRED
    assert record.transferred_to == extension
    assert record.digits == [key]


async def test_zero_goes_to_the_operator(sim):
    caller = await sim.call(FLOW)
    await caller.press("0")
    await caller.hears("operator")
    await caller.expect_transfer("100")


async def test_busy_department_offers_voicemail(sim):
    caller = await sim.call(FLOW, extensions={"102": "busy"})
    await caller.press("2")
    await caller.expect_transfer("102", result="busy")
    await caller.hears("busy")
    await caller.hears("vm greeting")
    await caller.press("#", when_listening=False)  # ends the message
    record = await caller.record()
    assert record.outcome == Outcome.IVR_HANGUP
    assert len(record.recordings) == 1


async def test_invalid_key_reprompts_then_matches(sim):
    caller = await sim.call(FLOW)
    await caller.press("7")
    await caller.hears("invalid")
    await caller.press("1")
    await caller.expect_transfer("101")


@pytest.mark.parametrize("when", [SUNDAY, CHRISTMAS], ids=["sunday", "holiday"])
async def test_closed_goes_to_voicemail(ivr_sim, when):
    caller = await ivr_sim.call(FLOW, at=when)
    await caller.hears("welcome")
    await caller.hears("after hours")
    await caller.hears("vm greeting")
    await caller.hangup()
    record = await caller.record()
    assert record.outcome == Outcome.CALLER_HANGUP
