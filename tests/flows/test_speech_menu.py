"""The shipped speech menu (flows/speech_menu.yaml): say a department or press its key.

The caller's words are synthesized with the offline hibari TTS and recognised by the worker
with pocketsphinx, over the emulator's audio stream: nothing is faked. ``ivr call --say`` is
run in-process through ``ivr.cli.main`` and its printed report checked.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from ivr.call.record import Outcome
from ivr.cli import _parser, main

ROOT = Path(__file__).resolve().parents[2]
FLOW = str(ROOT / "flows" / "speech_menu.yaml")
MONDAY_MORNING = datetime.fromisoformat("2026-11-23T10:00:00+01:00")


@pytest.fixture
def sim(ivr_sim):
    ivr_sim.at = MONDAY_MORNING  # office hours: the menu is offered
    return ivr_sim


def menu_result(record):
    """What the menu step returned, as recorded in the call record."""
    return next(s.result for s in record.steps if s.step == "menu")


@pytest.mark.speech
async def test_saying_support_transfers_to_102(sim):
    caller = await sim.call(FLOW)
    await caller.hears("welcome")
    await caller.hears("speech menu")
    await caller.says("support")
    await caller.hears("transferring")
    await caller.expect_transfer("102")
    record = await caller.record()
    assert record.outcome == Outcome.TRANSFERRED and record.transferred_to == "102"
    heard = menu_result(record)
    assert heard["source"] == "speech" and heard["transcript"] == "support" and heard["choice"] == "2"
    assert caller.call.vars["dept"] == "2"  # `into` gets the key whether pressed or said


@pytest.mark.speech
async def test_pressing_1_still_transfers_to_101(sim):
    caller = await sim.call(FLOW)
    await caller.hears("speech menu")
    await caller.press("1")
    await caller.expect_transfer("101")
    record = await caller.record()
    assert record.transferred_to == "101" and record.digits == ["1"]
    assert menu_result(record)["source"] == "dtmf"


@pytest.mark.speech
def test_ivr_call_say_prints_what_was_said_and_where_the_call_went(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = main(["call", "flows/speech_menu.yaml", "--say", "support", "--at", "2026-11-23T10:00+01:00"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "played    audio/speech_menu.wav" in out
    assert 'said      "support" -> 2 (menu, confidence' in out
    assert "digits    (none)" in out
    assert "routed    destination=102, result=answered" in out
    assert "outcome   transferred - routeto 102" in out


def test_caller_options_keep_their_command_line_order():
    args = _parser().parse_args(["call", "f.yaml", "--digits", "7,", "--say", "sales", "--speak", "a.wav",
                                 "--say", "operator"])
    assert args.script == [("press", "7"), ("press", ""), ("say", "sales"), ("speak", "a.wav"), ("say", "operator")]
    assert _parser().parse_args(["demo"]).digits == "1"  # the demo presses 1 when told nothing


def test_say_and_speak_problems_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["call", FLOW, "--say", " "])
    assert exit_.value.code == 2 and "--say: expected the words the caller says" in capsys.readouterr().err
    missing = tmp_path / "nope.wav"
    assert main(["call", FLOW, "--speak", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"ivr: speak {missing}: No such file or directory"
