"""The DTMF collection rules (ivr/call/collector.py), driven with explicit times.

Each test is named after the rule it checks; docs/dtmf-timers.md lists the same rules.
No sleeping and no asyncio: time is a number handed to the collector.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ivr.call.clock import VirtualClock
from ivr.call.collector import (
    DTMF_KEYS,
    AttemptMark,
    DigitCollector,
    DigitRules,
    GatherSession,
    Outcome,
    PromptPlan,
    menu,
)

# --- a tiny event loop over virtual time ----------------------------------------------------


@dataclass
class Run:
    outcome: Outcome | None
    decided_at: float | None
    collector: DigitCollector
    deadlines: list[tuple[float, float | None]] = field(default_factory=list)  # (now, deadline after)


def drive(
    rules: DigitRules,
    keys: list[tuple[float, str]],
    *,
    prompt: tuple[float, float] | None = None,
    pending: str = "",
    extra_polls: tuple[float, ...] = (),
    finish: bool = True,
) -> Run:
    """Play a script the way the asyncio Call does: timers due by an event's time fire first;
    a key that wants barge-in stops the prompt at once. ``prompt`` = (start, natural end);
    None means ``start(0.0)``. ``extra_polls`` are spurious wake-ups that must change nothing."""
    clock = VirtualClock()
    c = DigitCollector(rules, pending=pending)
    run = Run(c.outcome, None, c)

    def note(out: Outcome | None) -> None:
        run.deadlines.append((clock(), c.deadline))
        if out is not None:
            assert run.outcome is None, "an outcome is decided only once"
            run.outcome, run.decided_at = out, clock()

    def advance(t: float) -> None:
        while c.deadline is not None and c.deadline <= t:
            due = c.deadline
            clock.advance_to(due)
            note(c.poll(clock()))
            assert c.deadline != due, f"poll({due}) at the deadline did not fire the timer"
        clock.advance_to(t)

    events: list[tuple[float, int, str]] = [(t, 2, k) for t, k in keys]
    events += [(t, 3, "") for t in extra_polls]
    if run.outcome is None:
        if prompt is None:
            events.append((0.0, 0, "start"))
        else:
            events += [(prompt[0], 0, "prompt_started"), (prompt[1], 1, "prompt_finished")]
    prompt_playing = False
    for t, kind, arg in sorted(events, key=lambda e: (e[0], e[1])):
        advance(t)
        if kind == 0 and arg == "start":
            c.start(t)
            note(None)
        elif kind == 0:
            c.prompt_started(t)
            prompt_playing = True
            note(None)
        elif kind == 1:
            if prompt_playing:  # not already stopped by barge-in
                c.prompt_finished(t)
                prompt_playing = False
            note(None)
        elif kind == 2:
            barge = prompt_playing and c.barge_in_wanted(arg)
            note(c.digit(arg, t))
            if barge:
                c.prompt_finished(t)
                prompt_playing = False
                note(None)
        else:
            note(c.poll(t))
    if finish:
        advance(clock() + 10 * 600)  # far past any timer
    return run


R = DigitRules  # short alias for the many rule sets below


# --- DigitRules validation ------------------------------------------------------------------


def test_rules_defaults_match_the_spec():
    r = DigitRules()
    assert (r.min_digits, r.max_digits, r.terminator) == (1, 1, "#")
    assert (r.first_digit_timeout, r.inter_digit_timeout, r.final_timeout) == (5.0, 3.0, 0.0)
    assert r.valid_keys == "0123456789*ABCD"
    assert r.pattern is None and r.type_ahead and r.barge_in


def test_rules_are_frozen_and_reject_unknown_fields():
    r = DigitRules()
    with pytest.raises(ValidationError):
        r.max_digits = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="max_digit"):
        DigitRules(max_digit=3)  # type: ignore[call-arg]


def test_rules_max_digits_below_min_digits_rejected():
    with pytest.raises(ValidationError, match=r"max_digits \(2\) must be >= min_digits \(4\)"):
        DigitRules(min_digits=4, max_digits=2)


@pytest.mark.parametrize("bad", ["x", "##", "a", 12, "E"])
def test_rules_terminator_must_be_one_dtmf_key(bad):
    with pytest.raises(ValidationError, match="terminator must be one DTMF key"):
        DigitRules(terminator=bad)


def test_rules_terminator_none_or_empty_disables_and_yaml_int_is_a_key():
    assert DigitRules(terminator=None).terminator is None
    assert DigitRules(terminator="").terminator is None
    assert DigitRules(terminator=None).valid_keys == DTMF_KEYS
    r = DigitRules(terminator=0)
    assert r.terminator == "0" and "0" not in r.valid_keys


def test_rules_valid_digits_default_is_every_key_but_the_terminator():
    assert DigitRules(terminator="*").valid_keys == "0123456789#ABCD"


def test_rules_valid_digits_must_not_contain_the_terminator():
    with pytest.raises(ValidationError, match="must not contain the terminator '#'"):
        DigitRules(valid_digits="0123#")


@pytest.mark.parametrize("bad, msg", [("12x", "'x' not DTMF keys"), ("", "is empty"), (["1"], "string of DTMF")])
def test_rules_valid_digits_must_be_dtmf_keys(bad, msg):
    with pytest.raises(ValidationError, match=msg):
        DigitRules(valid_digits=bad)


def test_rules_pattern_must_compile():
    with pytest.raises(ValidationError, match=r"pattern '\[0-9' is not a valid regular expression"):
        DigitRules(pattern="[0-9")
    assert DigitRules(pattern=r"\d{4}").pattern == r"\d{4}"


@pytest.mark.parametrize("name", ["first_digit_timeout", "inter_digit_timeout"])
@pytest.mark.parametrize("bad, msg", [(0, "must be > 0"), (-1, "must be > 0"), (math.nan, "finite"),
                                      (math.inf, "finite"), (5000, "not milliseconds"), (True, "number of seconds"),
                                      ("5s", "number of seconds")])
def test_rules_timeouts_are_positive_finite_seconds(name, bad, msg):
    with pytest.raises(ValidationError, match=msg):
        DigitRules(**{name: bad})


def test_rules_final_timeout_may_be_zero_but_not_negative():
    assert DigitRules(final_timeout=0).final_timeout == 0.0
    with pytest.raises(ValidationError, match="final_timeout must be >= 0"):
        DigitRules(final_timeout=-0.5)


def test_rules_counts_reject_booleans():
    with pytest.raises(ValidationError, match="min_digits must be a whole number, not true"):
        DigitRules(min_digits=True)


def test_barge_in_acts_only_with_type_ahead():
    c = DigitCollector(DigitRules(type_ahead=False))  # barge_in defaults to true: no error
    c.prompt_started(0.0)
    assert not c.barge_in_wanted("1")  # the key would be dropped, so it must not cut the prompt


# --- one attempt: the rules -----------------------------------------------------------------


def test_terminator_ends_input_and_is_consumed():
    run = drive(R(max_digits=6), [(1.0, "1"), (1.5, "2"), (2.0, "#")])
    assert run.outcome == Outcome(status="match", digits="12", terminator="#", reason="terminator")
    assert run.decided_at == 2.0 and run.collector.leftover() == ""


def test_terminator_before_min_digits_is_no_match():
    run = drive(R(min_digits=3, max_digits=6), [(1.0, "1"), (1.2, "#")])
    assert run.outcome == Outcome(status="no_match", digits="1", terminator="#", reason="too_few_digits")
    assert run.decided_at == 1.2


def test_terminator_alone_is_no_match_not_no_input():
    run = drive(R(max_digits=4), [(0.5, "#")])
    assert run.outcome == Outcome(status="no_match", digits="", terminator="#", reason="too_few_digits")


def test_terminator_alone_matches_empty_input_when_min_digits_is_zero():
    run = drive(R(min_digits=0, max_digits=4), [(0.5, "#")])
    assert run.outcome == Outcome(status="match", digits="", terminator="#", reason="terminator")


def test_invalid_digit_is_no_match_at_once():
    run = drive(R(max_digits=4, valid_digits="0123456789"), [(1.0, "1"), (1.4, "*"), (1.5, "2")])
    assert run.outcome == Outcome(status="no_match", digits="1", reason="invalid_digit")
    assert run.decided_at == 1.4
    assert run.collector.leftover() == "2"  # the rejected key is consumed, later keys are not


def test_max_digits_matches_at_once_when_final_timeout_is_zero():
    run = drive(R(max_digits=3), [(1.0, "1"), (1.1, "2"), (1.2, "3")])
    assert run.outcome == Outcome(status="match", digits="123", reason="max_digits")
    assert run.decided_at == 1.2


def test_terminator_after_max_digits_with_final_timeout_zero_decides_nothing_but_is_consumed():
    # The match is at max_digits; the "#" the caller was told to press is taken, not left over
    # (issue 14: it cut the next prompt). Other late keys stay leftover (tests below).
    run = drive(R(max_digits=3), [(1.0, "1"), (1.1, "2"), (1.2, "3"), (1.3, "#")])
    assert run.outcome.terminator is None and run.outcome.digits == "123"
    assert run.collector.leftover() == ""


def test_final_timeout_waits_for_the_terminator_which_is_consumed():
    run = drive(R(max_digits=3, final_timeout=2.0), [(1.0, "1"), (1.1, "2"), (1.2, "3"), (2.5, "#")])
    assert run.outcome == Outcome(status="match", digits="123", terminator="#", reason="terminator")
    assert run.decided_at == 2.5 and run.collector.leftover() == ""


def test_final_timeout_expiry_matches():
    run = drive(R(max_digits=3, final_timeout=2.0), [(1.0, "1"), (1.1, "2"), (1.2, "3")])
    assert run.outcome == Outcome(status="match", digits="123", reason="final_timeout")
    assert run.decided_at == pytest.approx(3.2)


def test_final_timeout_is_not_waited_without_a_terminator():
    run = drive(R(max_digits=2, terminator=None, final_timeout=2.0), [(1.0, "1"), (1.1, "2")])
    assert run.outcome.reason == "max_digits" and run.decided_at == 1.1


def test_extra_digit_while_waiting_for_the_terminator_is_too_many_digits():
    run = drive(R(max_digits=2, final_timeout=2.0), [(1.0, "1"), (1.1, "2"), (1.5, "3")])
    assert run.outcome == Outcome(status="no_match", digits="12", reason="too_many_digits")
    run = drive(R(max_digits=2, final_timeout=2.0, valid_digits="12"), [(1.0, "1"), (1.1, "2"), (1.5, "9")])
    assert run.outcome.reason == "invalid_digit"


def test_inter_digit_timeout_with_min_digits_matches():
    run = drive(R(min_digits=2, max_digits=6), [(1.0, "1"), (2.0, "2")])
    assert run.outcome == Outcome(status="match", digits="12", reason="inter_digit_timeout")
    assert run.decided_at == 5.0


def test_inter_digit_timeout_below_min_digits_is_too_few_digits():
    run = drive(R(min_digits=3, max_digits=6), [(1.0, "1"), (2.0, "2")])
    assert run.outcome == Outcome(status="no_match", digits="12", reason="too_few_digits")
    assert run.decided_at == 5.0


def test_inter_digit_timer_restarts_on_every_digit():
    keys = [(1.0 + 2.9 * i, str(i)) for i in range(5)]  # each gap just under 3 s
    run = drive(R(max_digits=9), keys)
    assert run.outcome.digits == "01234" and run.decided_at == pytest.approx(keys[-1][0] + 3.0)


def test_first_digit_timeout_is_no_input_counted_from_the_prompt_end():
    run = drive(R(), [], prompt=(0.0, 4.0))
    assert run.outcome == Outcome(status="no_input", digits="", reason="first_digit_timeout")
    assert run.decided_at == 9.0


def test_no_timer_runs_while_the_prompt_plays():
    c = DigitCollector(R(max_digits=4, barge_in=False))
    c.prompt_started(0.0)
    c.digit("1", 1.0)
    assert c.poll(59.0) is None and c.deadline is None
    c.prompt_finished(60.0)
    assert c.deadline == 63.0


def test_start_without_a_prompt_runs_the_timers_at_once():
    c = DigitCollector(R())
    c.start(10.0)
    assert c.deadline == 15.0
    assert c.poll(14.999) is None
    assert c.poll(15.0) == Outcome(status="no_input", reason="first_digit_timeout")


def test_pattern_mismatch_is_no_match():
    r = R(max_digits=6, pattern=r"1\d+")
    assert drive(r, [(1, "2"), (2, "3"), (3, "#")]).outcome == Outcome(
        status="no_match", digits="23", terminator="#", reason="pattern")
    assert drive(r, [(1, "2"), (2, "3")]).outcome.reason == "pattern"  # on timeout as well
    assert drive(r, [(1, "1"), (2, "3"), (3, "#")]).outcome.status == "match"


def test_pattern_is_checked_at_max_digits_without_waiting_for_the_terminator():
    run = drive(R(max_digits=2, final_timeout=2.0, pattern="1."), [(1.0, "2"), (1.1, "2")])
    assert run.outcome.reason == "pattern" and run.decided_at == 1.1


def test_type_ahead_keys_during_the_prompt_are_kept_and_timed_from_the_prompt_end():
    rules = R(max_digits=4, barge_in=False)  # the prompt plays out: the timer starts at its end
    run = drive(rules, [(1.0, "1"), (2.0, "2")], prompt=(0.0, 8.0))
    assert run.outcome.digits == "12" and run.outcome.reason == "inter_digit_timeout"
    assert run.decided_at == 11.0  # 8.0 + 3.0, not 2.0 + 3.0


def test_barge_in_key_stops_the_prompt_and_starts_the_timers():
    run = drive(R(max_digits=4), [(1.0, "1")], prompt=(0.0, 8.0))
    assert run.decided_at == 4.0 and run.outcome.digits == "1"


def test_barge_in_wanted_only_for_a_kept_key_during_the_prompt():
    c = DigitCollector(R(max_digits=4))
    assert not c.barge_in_wanted("1")  # nothing is playing yet
    c.prompt_started(0.0)
    assert c.barge_in_wanted("1") and c.barge_in_wanted("#")
    c.prompt_finished(1.0)
    assert not c.barge_in_wanted("1")
    quiet = DigitCollector(R(max_digits=4, barge_in=False))
    quiet.prompt_started(0.0)
    assert not quiet.barge_in_wanted("1")
    one = DigitCollector(menu("12"))
    one.prompt_started(0.0)
    one.digit("1", 0.5)
    assert not one.barge_in_wanted("2")  # the attempt is over; the key is leftover


def test_without_type_ahead_keys_during_the_prompt_are_dropped():
    run = drive(R(max_digits=4, type_ahead=False), [(1.0, "1"), (9.0, "2")], prompt=(0.0, 8.0))
    assert run.outcome.digits == "2" and run.collector.leftover() == ""


def test_without_type_ahead_pending_keys_are_dropped():
    c = DigitCollector(R(type_ahead=False), pending="1")
    assert c.outcome is None and c.digits == ""


def test_pending_type_ahead_can_decide_before_the_prompt():
    c = DigitCollector(menu("123"), pending="2")
    assert c.outcome == Outcome(status="match", digits="2", reason="max_digits")
    with pytest.raises(RuntimeError, match="skip the prompt"):
        c.prompt_started(0.0)
    c.start(0.0)  # harmless: no prompt, nothing left to time


def test_pending_type_ahead_digits_start_the_inter_digit_timer_at_the_prompt_end():
    run = drive(R(max_digits=4), [], prompt=(0.0, 2.0), pending="12")
    assert run.outcome.digits == "12" and run.decided_at == 5.0


def test_outcome_decided_during_a_non_bargeable_prompt_is_returned_at_once():
    run = drive(R(max_digits=2, barge_in=False), [(1.0, "1"), (1.5, "2"), (2.0, "3")], prompt=(0.0, 8.0))
    assert run.outcome.digits == "12" and run.decided_at == 1.5
    assert run.collector.leftover() == "3"


def test_final_timeout_reached_during_the_prompt_runs_after_the_prompt():
    rules = R(max_digits=2, final_timeout=1.0, barge_in=False)
    run = drive(rules, [(1.0, "1"), (1.5, "2")], prompt=(0.0, 8.0))
    assert run.outcome.reason == "final_timeout" and run.decided_at == 9.0


def test_keys_after_the_outcome_are_leftover_in_order():
    c = DigitCollector(R(max_digits=2))
    c.start(0.0)
    c.digits_in("12", 1.0)
    assert c.digits_in("3#4", 1.1) is None
    assert c.leftover() == "3#4" and c.poll(100.0) is None and c.deadline is None


def test_several_keys_in_one_event_are_fed_in_order():
    c = DigitCollector(R(max_digits=9))
    c.start(0.0)
    assert c.digits_in("123#9", 1.0) == Outcome(status="match", digits="123", terminator="#", reason="terminator")
    assert c.leftover() == "9"


def test_a_key_arriving_when_a_timer_is_due_loses_to_the_timer():
    c = DigitCollector(R(max_digits=4))
    c.start(0.0)
    c.digit("1", 1.0)
    out = c.digit("2", 4.0)  # the inter-digit deadline is 4.0: the timer fires first
    assert out == Outcome(status="match", digits="1", reason="inter_digit_timeout")
    assert c.leftover() == "2"


def test_star_and_letter_keys_collect_and_lowercase_is_accepted():
    run = drive(R(max_digits=3), [(1, "*"), (2, "a"), (3, "D")])
    assert run.outcome.digits == "*AD"


@pytest.mark.parametrize("bad", ["", "12", "x", 1, None])
def test_a_non_dtmf_key_is_rejected_with_a_clear_error(bad):
    c = DigitCollector(R())
    c.start(0.0)
    with pytest.raises(ValueError, match="digit: expected one DTMF key"):
        c.digit(bad, 1.0)
    with pytest.raises(ValueError, match="pending: expected one DTMF key"):
        DigitCollector(R(), pending="1x")


def test_time_going_backwards_or_not_finite_is_rejected():
    c = DigitCollector(R())
    c.start(5.0)
    with pytest.raises(ValueError, match="time went backwards"):
        c.digit("1", 4.0)
    with pytest.raises(ValueError, match="finite number of seconds"):
        c.poll(math.nan)


def test_calls_out_of_order_are_rejected():
    c = DigitCollector(R())
    with pytest.raises(RuntimeError, match="call prompt_started\\(\\) first"):
        c.prompt_finished(0.0)
    c.prompt_started(0.0)
    with pytest.raises(RuntimeError, match="prompt_started\\(\\) called while prompting"):
        c.prompt_started(0.1)
    with pytest.raises(RuntimeError, match="start\\(\\) called while prompting"):
        c.start(0.2)


# --- menu -----------------------------------------------------------------------------------


def test_menu_key_in_choices_matches_at_once():
    run = drive(menu(["1", "2", "9"]), [(0.7, "9")])
    assert run.outcome == Outcome(status="match", digits="9", reason="max_digits") and run.decided_at == 0.7


@pytest.mark.parametrize("key", ["3", "#", "*"])
def test_menu_key_not_in_choices_is_no_match(key):
    assert drive(menu("12"), [(0.7, key)]).outcome == Outcome(status="no_match", reason="invalid_digit")


def test_menu_accepts_a_mapping_with_yaml_int_keys():
    r = menu({1: "sales", 2: "support", "*": "operator"}, first_digit_timeout=7)
    assert (r.valid_keys, r.terminator, r.max_digits, r.first_digit_timeout) == ("12*", None, 1, 7.0)


@pytest.mark.parametrize("bad, msg", [(["12"], "a menu key is one DTMF key"), ([], "at least one"),
                                      (["1", 1], "listed twice"), (["x"], "one DTMF key")])
def test_menu_rejects_bad_choices(bad, msg):
    with pytest.raises(ValueError, match=msg):
        menu(bad)


# --- prompts and retries --------------------------------------------------------------------


PLAN = PromptPlan(initial="menu", no_input=("ni1", "ni2"), no_match=("nm1",))


def test_prompt_attempt_one_plays_the_initial_prompt():
    assert PLAN.for_attempt(1) == ("menu",)
    assert PromptPlan().for_attempt(1) == ()


def test_prompt_escalation_uses_the_count_of_that_status_and_repeats_the_last_entry():
    assert PLAN.for_attempt(2, "no_input", 1) == ("ni1", "menu")
    assert PLAN.for_attempt(3, "no_input", 2) == ("ni2", "menu")
    assert PLAN.for_attempt(4, "no_input", 3) == ("ni2", "menu")
    assert PLAN.for_attempt(3, "no_match", 2) == ("nm1", "menu")


def test_prompt_reprompt_replaces_the_initial_prompt_on_retries():
    plan = PromptPlan(initial="long menu", no_match="wrong key", reprompt="short menu")
    assert plan.for_attempt(2, "no_match", 1) == ("wrong key", "short menu")
    assert plan.for_attempt(2, "no_input", 1) == ("short menu",)
    bare = PromptPlan(initial="menu", no_input=("ni",), repeat_initial=False)
    assert bare.for_attempt(2, "no_input", 1) == ("ni",)


def test_prompt_plan_rejects_empty_prompts_and_bad_retry_arguments():
    with pytest.raises(ValidationError, match="no_match: a prompt must not be empty"):
        PromptPlan(no_match=["ok", " "])
    with pytest.raises(ValueError, match="a retry needs after="):
        PLAN.for_attempt(2, "match", 1)


def _no_input(attempt) -> None:
    c = attempt.collector
    c.start(0.0)
    c.poll(c.deadline)


def test_gather_retries_then_ends_with_the_last_status():
    s = GatherSession(R(), retries=2, prompts=PLAN)
    played = []
    while (a := s.next_attempt()) is not None:
        played.append(a.prompts)
        _no_input(a)
        s.record()
    assert played == [("menu",), ("ni1", "menu"), ("ni2", "menu")]
    res = s.result
    assert (res.status, res.reason, res.attempts) == ("no_input", "first_digit_timeout", 3)
    assert len(res.outcomes) == 3


def test_gather_stops_at_the_first_match():
    s = GatherSession(menu("12"), retries=3, prompts=PLAN)
    a = s.next_attempt()
    a.collector.start(0.0)
    a.collector.digit("7", 1.0)
    s.record()
    b = s.next_attempt()
    assert b.after == "no_match" and b.prompts == ("nm1", "menu") and b.number == 2
    b.collector.start(0.0)
    b.collector.digit("2", 1.0)
    s.record()
    assert s.next_attempt() is None
    assert (s.result.status, s.result.digits, s.result.attempts) == ("match", "2", 2)


def test_gather_started_at_a_mark_plays_that_attempt_and_has_only_the_rest():
    marks = []
    s = GatherSession(menu("1"), retries=3, prompts=PLAN)
    while (a := s.next_attempt()) is not None:
        marks.append(a.mark)
        a.collector.start(0.0)
        a.collector.digit("5", 1.0) if a.number == 1 else a.collector.poll(a.collector.deadline)
        s.record()
    assert marks[0] == AttemptMark() and marks[2] == AttemptMark(number=3, after="no_input", no_input=1, no_match=1)
    # Resumed at the third attempt (a takeover): its prompt, then the fourth, then over.
    resumed = GatherSession(menu("1"), retries=3, prompts=PLAN, start=marks[2])
    played = []
    while (a := resumed.next_attempt()) is not None:
        played.append((a.number, a.prompts, a.mark))
        _no_input(a)
        resumed.record()
    assert played == [(3, ("ni1", "menu"), marks[2]),
                      (4, ("ni2", "menu"), AttemptMark(number=4, after="no_input", no_input=2, no_match=1))]
    assert (resumed.result.status, resumed.result.attempts, len(resumed.result.outcomes)) == ("no_input", 4, 2)
    # A mark past the last attempt (fewer retries than when it was taken) runs the last one.
    short = GatherSession(menu("1"), retries=1, prompts=PLAN, start=marks[3])
    a = short.next_attempt()
    assert a is not None and a.number == 2
    _no_input(a)
    short.record()
    assert short.next_attempt() is None and short.result.attempts == 2


def test_gather_with_zero_retries_has_one_attempt():
    s = GatherSession(R(), retries=0)
    _no_input(s.next_attempt())
    s.record()
    assert s.next_attempt() is None and s.result.attempts == 1


def test_gather_escalation_counts_each_status_separately():
    s = GatherSession(menu("1"), retries=3, prompts=PLAN)
    a = s.next_attempt()
    a.collector.start(0.0)
    a.collector.digit("5", 1.0)  # no_match #1
    s.record()
    a = s.next_attempt()
    _no_input(a)  # no_input #1
    s.record()
    a = s.next_attempt()
    assert a.prompts == ("ni1", "menu")  # first silence: first no_input entry, not the second


def test_gather_flushes_type_ahead_after_a_no_match():
    s = GatherSession(R(max_digits=4, valid_digits="0123456789"), retries=1)
    a = s.next_attempt()
    a.collector.start(0.0)
    a.collector.digits_in("1*23", 1.0)  # '*' is invalid; "23" was typed on
    s.record()
    assert a.collector.leftover() == "23"
    b = s.next_attempt()
    assert b.collector.digits == "" and b.collector.outcome is None
    assert s.leftover() == ""


def test_gather_keeps_type_ahead_after_a_no_input():
    s = GatherSession(menu("12"), retries=1)
    a = s.next_attempt()
    _no_input(a)
    a.collector.digit("2", 6.0)  # pressed while the no_input prompt was being chosen
    s.record()
    b = s.next_attempt()
    assert b.collector.outcome == Outcome(status="match", digits="2", reason="max_digits")
    s.record()
    assert s.result.status == "match" and s.result.attempts == 2


def test_gather_passes_leftover_on_to_the_next_gather():
    first = GatherSession(menu("12"), retries=0)
    a = first.next_attempt()
    a.collector.start(0.0)
    a.collector.digits_in("1234#", 1.0)
    first.record()
    assert first.leftover() == "234#"
    second = GatherSession(R(max_digits=5), pending=first.leftover())
    b = second.next_attempt()
    assert b.collector.outcome == Outcome(status="match", digits="234", terminator="#", reason="terminator")


def test_gather_final_no_match_flushes_the_leftover_too():
    s = GatherSession(menu("1"), retries=0)
    a = s.next_attempt()
    a.collector.start(0.0)
    a.collector.digits_in("99", 1.0)
    s.record()
    assert s.result.status == "no_match" and s.leftover() == ""


def test_gather_calls_out_of_order_are_rejected():
    s = GatherSession(R())
    with pytest.raises(RuntimeError, match="call next_attempt\\(\\) first"):
        s.record()
    with pytest.raises(RuntimeError, match="not over yet"):
        _ = s.result
    a = s.next_attempt()
    with pytest.raises(RuntimeError, match="attempt 1 has no outcome yet"):
        s.next_attempt()
    with pytest.raises(RuntimeError, match="has not decided an outcome yet"):
        s.record()
    _no_input(a)
    s.record()


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_gather_retries_must_be_a_whole_number(bad):
    with pytest.raises(ValueError, match="retries must be a whole number >= 0"):
        GatherSession(R(), retries=bad)


# --- properties -----------------------------------------------------------------------------

PATTERNS = [None, r"\d+", r"1.*", r"[0-9*]{2,}", r"(12|34)#?"]


@st.composite
def rule_sets(draw):
    lo = draw(st.integers(0, 4))
    hi = draw(st.integers(max(lo, 1), 6))
    term = draw(st.sampled_from([None, "#", "*"]))
    keys = draw(st.sampled_from([None, "0123456789", "123", "12*#"]))
    if term is not None and keys is not None and term in keys:
        keys = keys.replace(term, "") or None
    return DigitRules(
        min_digits=lo,
        max_digits=hi,
        terminator=term,
        valid_digits=keys,
        first_digit_timeout=draw(st.sampled_from([0.5, 2.0, 5.0])),
        inter_digit_timeout=draw(st.sampled_from([0.25, 1.0, 3.0])),
        final_timeout=draw(st.sampled_from([0.0, 0.0, 0.5, 2.0])),
        pattern=draw(st.sampled_from(PATTERNS)),
        type_ahead=draw(st.booleans()),
        barge_in=draw(st.booleans()),
    )


@st.composite
def scripts(draw):
    gaps = draw(st.lists(st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.0, 2.9, 3.0, 4.0]), max_size=10))
    keys = draw(st.lists(st.sampled_from("0123*#9A"), min_size=len(gaps), max_size=len(gaps)))
    t, script = 0.0, []
    for gap, key in zip(gaps, keys):
        t = round(t + gap, 6)
        script.append((t, key))
    prompt = draw(st.one_of(st.none(), st.sampled_from([(0.0, 0.0), (0.0, 1.5), (0.0, 6.0)])))
    pending = draw(st.text(alphabet="12#", max_size=3))
    return script, prompt, pending


FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(rule_sets(), scripts())
def test_property_an_outcome_always_obeys_the_rules(rules, script):
    keys, prompt, pending = script
    run = drive(rules, keys, prompt=prompt, pending=pending)
    out = run.outcome
    assert out is not None, "after the last timer every attempt has an outcome"
    assert len(out.digits) <= rules.max_digits
    assert all(k in rules.valid_keys for k in out.digits)
    assert out.terminator in (None, rules.terminator)
    if out.status == "match":
        assert rules.min_digits <= len(out.digits)
        assert rules.pattern is None or re.fullmatch(rules.pattern, out.digits)
    if out.status == "no_input":
        assert out.digits == "" and out.terminator is None


@FAST
@given(rule_sets(), scripts(), st.lists(st.floats(0, 30, allow_nan=False), max_size=6))
def test_property_same_keys_and_times_give_the_same_outcome_however_often_it_is_polled(rules, script, polls):
    keys, prompt, pending = script
    a = drive(rules, keys, prompt=prompt, pending=pending)
    b = drive(rules, keys, prompt=prompt, pending=pending)
    c = drive(rules, keys, prompt=prompt, pending=pending, extra_polls=tuple(polls))
    assert a.outcome == b.outcome == c.outcome
    assert a.decided_at == b.decided_at == c.decided_at
    assert a.collector.leftover() == c.collector.leftover()


@FAST
@given(rule_sets(), scripts())
def test_property_no_deadline_is_ever_in_the_past(rules, script):
    keys, prompt, pending = script
    run = drive(rules, keys, prompt=prompt, pending=pending)
    for now, deadline in run.deadlines:
        assert deadline is None or deadline > now


@FAST
@given(rule_sets(), scripts())
def test_property_one_poll_at_the_deadline_decides_an_idle_attempt(rules, script):
    keys, prompt, pending = script
    run = drive(rules, keys, prompt=prompt, pending=pending, finish=False)
    c = run.collector
    if c.outcome is None and c.deadline is not None:
        assert c.poll(c.deadline) is not None


@FAST
@given(rule_sets(), scripts())
def test_property_every_key_is_accounted_for_exactly_once(rules, script):
    keys, _, pending = script
    run = drive(rules, keys, pending=pending)  # no prompt: no key is dropped as type-ahead
    out = run.outcome
    fed = (pending if rules.type_ahead else "") + "".join(k for _, k in keys)
    rejected = 1 if out.reason in ("invalid_digit", "too_many_digits") else 0
    late = run.collector.late_terminator_taken  # the terminator typed right after max_digits
    used = len(out.digits) + (out.terminator is not None) + rejected + late
    assert fed[: len(out.digits)] == out.digits  # collected in the order pressed
    if out.terminator is not None:
        assert fed[len(out.digits)] == out.terminator
    if late:
        assert out.reason == "max_digits" and fed[len(out.digits)] == rules.terminator
    assert fed[used:] == run.collector.leftover()


def test_pending_keys_after_an_outcome_stay_leftover():
    c = DigitCollector(menu("123"), pending="23")
    assert c.outcome.digits == "2" and c.leftover() == "3"


# --- a terminator typed after max_digits belongs to that gather ---------------------------


def test_terminator_right_after_max_digits_is_consumed_not_left_over() -> None:
    rules = DigitRules(max_digits=4, inter_digit_timeout=3.0)
    c = DigitCollector(rules)
    c.start(0.0)
    c.digits_in("1234", 1.0)
    assert c.outcome is not None and c.outcome.reason == "max_digits"
    assert c.late_terminator_until(1.0) == 4.0
    c.digit("#", 1.4)
    assert c.leftover() == "" and c.late_terminator_until(1.4) is None
    c.digit("#", 1.5)  # a second one is the next input's
    assert c.leftover() == "#"


def test_terminator_in_type_ahead_after_max_digits_is_consumed() -> None:
    c = DigitCollector(DigitRules(max_digits=4), pending="1234#5")
    assert c.outcome is not None and c.outcome.digits == "1234"
    assert c.leftover() == "5"


@pytest.mark.parametrize("keys, at, leftover", [
    ("5#", 1.5, "5#"),  # another key first: the caller moved on
    ("#", 4.5, "#"),  # after the caller's rhythm (inter_digit_timeout): the next input's
])
def test_late_terminator_window(keys: str, at: float, leftover: str) -> None:
    c = DigitCollector(DigitRules(max_digits=4, inter_digit_timeout=3.0))
    c.start(0.0)
    c.digits_in("1234", 1.0)
    c.digits_in(keys, at)
    assert c.leftover() == leftover


def test_no_late_terminator_without_a_max_digits_match() -> None:
    for rules, keys in ((DigitRules(max_digits=4, terminator=None), "1234"), (DigitRules(max_digits=4), "12#")):
        c = DigitCollector(rules)
        c.start(0.0)
        c.digits_in(keys, 1.0)
        assert c.late_terminator_until(1.0) is None
