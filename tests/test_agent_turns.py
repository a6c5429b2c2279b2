"""The agent's listening rules (ivr/agent/turns.py), fed times: no loop, no sleeping."""

from ivr.agent.turns import ListenRules


def rules(speaking: bool = False) -> ListenRules:
    return ListenRules(100.0, silence_timeout=8.0, deadline=130.0, speaking=speaking)


def test_a_quiet_caller_is_given_up_on_after_the_silence_timeout():
    r = rules()
    assert r.wake_at() == 108.0
    assert r.gave_up(107.99) is None  # a timer a clock tick early decides nothing
    assert r.gave_up(108.0) == "silence"


def test_while_the_caller_speaks_only_the_deadline_counts():
    r = rules()
    r.speech_started()
    assert r.wake_at() == 130.0
    assert r.gave_up(120.0) is None
    assert r.gave_up(130.0) == "timeout"


def test_a_start_taken_back_restarts_the_silence_timer():
    r = rules()
    r.speech_started()
    r.speech_cancelled(106.0)  # a cough at 105, taken back at 106
    assert r.wake_at() == 114.0
    assert r.gave_up(110.0) is None
    assert r.gave_up(114.0) == "silence"


def test_the_deadline_ends_the_turn_before_the_silence_does():
    r = ListenRules(100.0, silence_timeout=8.0, deadline=103.0)
    assert r.wake_at() == 103.0
    assert r.gave_up(103.0) == "timeout"


def test_a_turn_that_starts_in_a_barge_in_waits_for_the_end_of_the_utterance():
    r = rules(speaking=True)
    assert r.wake_at() == 130.0
    assert r.gave_up(109.0) is None
