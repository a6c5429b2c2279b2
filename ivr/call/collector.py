"""DTMF digit collection rules, sans-I/O.

Three layers, none of which sleeps, owns a task or reads a clock - every method that cares
about time takes ``now`` (seconds, monotonic, e.g. ``loop.time()``):

* :class:`DigitRules` - what to collect and the timers (VoiceXML 2.0 Appendix D terms:
  ``timeout``, ``interdigittimeout``, ``termtimeout``, ``termchar``). Frozen; the flow schema
  embeds it, so its validation messages are written for flow authors.
* :class:`DigitCollector` - ONE attempt: feed it prompt start/end, keys and the time; it
  says when to :meth:`~DigitCollector.poll` next and returns an :class:`Outcome`.
* :class:`GatherSession` - a whole ``gather``: attempts, retries, escalating no-input /
  no-match prompts (:class:`PromptPlan`) and the type-ahead buffer between attempts.

:func:`menu` builds the rules of a single-key menu. The rules, with the reasoning where
VoiceXML leaves room, are in ``docs/dtmf-timers.md``; the rule names used there are the
``reason`` strings of :class:`Outcome`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

__all__ = [
    "DTMF_KEYS",
    "Attempt",
    "AttemptMark",
    "DigitCollector",
    "DigitRules",
    "GatherResult",
    "GatherSession",
    "Outcome",
    "PromptPlan",
    "Status",
    "menu",
]

#: Every key a DTMF keypad can send, in keypad order.
DTMF_KEYS = "0123456789*#ABCD"

#: Longest timeout accepted; larger values are almost always milliseconds typed as seconds.
MAX_TIMEOUT = 600.0

Status = Literal["match", "no_input", "no_match"]


def _check_key(key: Any, where: str) -> str:
    """One DTMF key, upper-cased (the wire may send ``a``-``d``); ValueError otherwise."""
    if isinstance(key, str) and len(key) == 1 and key.upper() in DTMF_KEYS:
        return key.upper()
    raise ValueError(f"{where}: expected one DTMF key (0-9, *, #, A-D), got {key!r}")


def _keys_as_str(v: Any) -> Any:
    """YAML reads ``0`` or ``123`` as an int; a key or key set is meant."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


# --- rules ----------------------------------------------------------------------------------


class DigitRules(BaseModel):
    """What one gather collects and when each timer fires. All times are in seconds.

    ``valid_digits=None`` means every DTMF key except the terminator; use
    :attr:`valid_keys` for the effective set.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_digits: int = Field(1, ge=0, description="fewest digits that can match (0: a lone terminator matches '')")
    max_digits: int = Field(1, ge=1, description="most digits; reaching it ends input (>= min_digits)")
    terminator: str | None = Field("#", description="key that ends input, never collected; null disables")
    first_digit_timeout: float = Field(5.0, description="VXML timeout: no key this long after the prompt -> no_input")
    inter_digit_timeout: float = Field(3.0, description="VXML interdigittimeout: silence after a digit ends input")
    final_timeout: float = Field(0.0, description="VXML termtimeout: after max_digits, wait this long for the terminator")
    valid_digits: str | None = Field(None, description="keys that may be collected; null: all but the terminator")
    pattern: str | None = Field(None, description="regular expression the digits must fullmatch")
    type_ahead: bool = Field(True, description="keep keys pressed before the timers start (during the prompt)")
    # barge_in only acts with type_ahead: a key that stops the prompt is input, and without
    # type-ahead keys during the prompt are dropped (VoiceXML bargein=false), so nothing stops it.
    barge_in: bool = Field(True, description="a kept key pressed during the prompt stops the prompt (needs type_ahead)")

    @field_validator("min_digits", "max_digits", mode="before")
    @classmethod
    def _no_bool_count(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, bool):
            raise ValueError(f"{info.field_name} must be a whole number, not {str(v).lower()}")
        return v

    @field_validator("first_digit_timeout", "inter_digit_timeout", "final_timeout", mode="before")
    @classmethod
    def _seconds(cls, v: Any, info: ValidationInfo) -> Any:
        name = info.field_name
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{name} must be a number of seconds, got {v!r}")
        if not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number of seconds, got {v!r}")
        if v > MAX_TIMEOUT:
            raise ValueError(
                f"{name} = {v:g} s is over {MAX_TIMEOUT:g} s; timeouts are in seconds, not milliseconds"
            )
        # final_timeout 0 means "do not wait"; the others must be > 0 so that a deadline is
        # always strictly in the future.
        if name == "final_timeout" and v < 0:
            raise ValueError(f"final_timeout must be >= 0 seconds (0: do not wait for the terminator), got {v:g}")
        if name != "final_timeout" and v <= 0:
            raise ValueError(f"{name} must be > 0 seconds, got {v:g}")
        return float(v)

    @field_validator("terminator", mode="before")
    @classmethod
    def _terminator(cls, v: Any) -> Any:
        v = _keys_as_str(v)
        if v is None or v == "":  # VXML termchar="" disables it too
            return None
        if not (isinstance(v, str) and len(v) == 1 and v in DTMF_KEYS):
            raise ValueError(f"terminator must be one DTMF key (0-9, *, #, A-D) or null to disable, got {v!r}")
        return v

    @field_validator("valid_digits", mode="before")
    @classmethod
    def _valid_digits(cls, v: Any) -> Any:
        v = _keys_as_str(v)
        if v is None:
            return None
        if not isinstance(v, str):
            raise ValueError(f"valid_digits must be a string of DTMF keys such as '0123456789', got {v!r}")
        if v == "":
            raise ValueError("valid_digits is empty: no key could ever be collected")
        bad = sorted({k for k in v if k not in DTMF_KEYS})
        if bad:
            raise ValueError(f"valid_digits: {''.join(bad)!r} not DTMF keys (allowed: 0-9, *, #, A-D)")
        return v

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"pattern {v!r} is not a valid regular expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DigitRules:
        if self.max_digits < self.min_digits:
            raise ValueError(f"max_digits ({self.max_digits}) must be >= min_digits ({self.min_digits})")
        if self.terminator is not None and self.valid_digits is not None and self.terminator in self.valid_digits:
            raise ValueError(
                f"valid_digits must not contain the terminator {self.terminator!r}: it ends input and is "
                "never collected (remove it, or set terminator: null)"
            )
        return self

    @property
    def valid_keys(self) -> str:
        """The keys that may be collected: ``valid_digits``, or every key but the terminator."""
        if self.valid_digits is not None:
            return self.valid_digits
        return DTMF_KEYS.replace(self.terminator, "") if self.terminator else DTMF_KEYS


def menu(
    choices: Iterable[Any],
    *,
    first_digit_timeout: float = 5.0,
    type_ahead: bool = True,
    barge_in: bool = True,
) -> DigitRules:
    """Rules for a single-key menu: one key out of ``choices``, no terminator.

    ``choices`` is an iterable of keys (a dict iterates its keys; YAML ints 0-9 are accepted).
    A key not in ``choices`` ends the attempt with ``no_match`` / ``invalid_digit``.
    """
    keys: list[str] = []
    for choice in choices:
        key = _keys_as_str(choice)
        if not (isinstance(key, str) and len(key) == 1 and key in DTMF_KEYS):
            raise ValueError(f"menu choice {choice!r}: a menu key is one DTMF key (0-9, *, #, A-D)")
        if key in keys:
            raise ValueError(f"menu choice {key!r} is listed twice")
        keys.append(key)
    if not keys:
        raise ValueError("menu needs at least one choice")
    return DigitRules(
        min_digits=1,
        max_digits=1,
        terminator=None,
        valid_digits="".join(keys),
        first_digit_timeout=first_digit_timeout,
        type_ahead=type_ahead,
        barge_in=barge_in,
    )


class Outcome(BaseModel):
    """How one attempt ended.

    ``digits`` are the collected keys (never the terminator, never a rejected key, never more
    than ``max_digits``); ``terminator`` is the terminator if it ended input (it is consumed);
    ``reason`` names the rule that decided the status (see ``docs/dtmf-timers.md``).
    """

    model_config = ConfigDict(frozen=True)

    status: Status
    digits: str = ""
    terminator: str | None = None
    reason: str


# --- one attempt ----------------------------------------------------------------------------


class DigitCollector:
    """One collection attempt, sans-I/O.

    Drive it like this (``now`` is the caller's monotonic time)::

        c = DigitCollector(rules, pending=leftover_from_before)
        if c.outcome is None:                 # type-ahead may already have decided it
            c.prompt_started(now)             # or c.start(now) when there is no prompt
            ...on a key:       if c.barge_in_wanted(k): stop the prompt
                               outcome = c.digit(k, now)
            ...prompt ended:   c.prompt_finished(now)
            ...at c.deadline:  outcome = c.poll(now)

    Timers run only after :meth:`prompt_finished` / :meth:`start`. Keys that decide the
    outcome (terminator, ``max_digits``, a rejected key) decide it at once, even during the
    prompt. Every method taking ``now`` first fires a timer that is due (``now >=
    deadline``), so a key arriving late loses to the timer. Keys after the outcome are kept
    in :meth:`leftover` for the next gather.
    """

    def __init__(self, rules: DigitRules, pending: str = "") -> None:
        """``pending``: type-ahead keys pressed before this attempt (e.g. a previous ``leftover()``)."""
        self.rules = rules
        self._digits: list[str] = []
        self._leftover: list[str] = []
        self._outcome: Outcome | None = None
        self._phase: Literal["idle", "prompting", "running"] = "idle"
        self._awaiting_terminator = False  # max_digits reached, final_timeout running
        self._timers_from: float | None = None  # when the prompt ended / start() was called
        self._last_digit_at: float | None = None  # time of the last collected digit (None: pending)
        self._now: float | None = None  # latest time seen, to reject time going backwards
        self._deadline: float | None = None
        self._decided_at: float | None = None  # when the outcome was decided (None: type-ahead)
        self._late_terminator_taken = False  # the terminator typed after max_digits was consumed
        keys = [_check_key(key, "pending") for key in pending]
        if rules.type_ahead:  # without type-ahead, keys pressed before the timers start are dropped
            for key in keys:
                if self._outcome is not None:
                    if not self._takes_late_terminator(key, None):
                        self._leftover.append(key)
                else:
                    self._key(key)

    # -- what the driver reads

    @property
    def outcome(self) -> Outcome | None:
        """The outcome once decided, else None."""
        return self._outcome

    @property
    def done(self) -> bool:
        """True once the outcome is decided."""
        return self._outcome is not None

    @property
    def deadline(self) -> float | None:
        """The time at which :meth:`poll` must be called next; None while no timer runs."""
        return self._deadline

    @property
    def digits(self) -> str:
        """Digits collected so far (for logging and live display)."""
        return "".join(self._digits)

    def leftover(self) -> str:
        """Keys received after the outcome, in order: type-ahead for whatever comes next."""
        return "".join(self._leftover)

    @property
    def late_terminator_taken(self) -> bool:
        """True once a terminator typed after a max_digits match was consumed (see below)."""
        return self._late_terminator_taken

    def late_terminator_until(self, now: float) -> float | None:
        """Until when a terminator still belongs to this attempt, or None. ``now`` stands in
        for the time of an outcome that type-ahead decided before any time was given.

        After a ``max_digits`` match the caller who was told "then press #" presses it
        next: that key belongs here, not to whatever the flow does next (it would cut the
        next prompt, or end the next gather as a no_match). It is taken if it is the first
        key after the outcome and comes within ``inter_digit_timeout`` of it - the caller's
        own typing rhythm. A driver that returns before it comes applies the same rule to
        the next key (``CallMedia.absorb_late_key``).
        """
        if not self._late_terminator_open():
            return None
        return (self._decided_at if self._decided_at is not None else now) + self.rules.inter_digit_timeout

    def barge_in_wanted(self, key: str) -> bool:
        """Should ``key``, arriving now, stop the prompt? Ask before :meth:`digit`."""
        _check_key(key, "barge_in_wanted")
        return (
            self._phase == "prompting"
            and self._outcome is None
            and self.rules.barge_in
            and self.rules.type_ahead
        )

    # -- events

    def prompt_started(self, now: float) -> None:
        """The prompt began playing. Keys from now on are type-ahead until it ends."""
        self._tick(now)
        if self._outcome is not None:
            raise RuntimeError("prompt_started(): the attempt already has an outcome (from type-ahead); skip the prompt")
        if self._phase != "idle":
            raise RuntimeError(f"prompt_started() called while {self._phase}; call it once, before any start()")
        self._phase = "prompting"

    def prompt_finished(self, now: float) -> None:
        """The prompt ended (played out or stopped by barge-in): timers start at ``now``."""
        self._tick(now)
        if self._outcome is not None:
            return  # a key during the prompt decided the attempt; nothing left to time
        if self._phase != "prompting":
            raise RuntimeError(f"prompt_finished() called while {self._phase}; call prompt_started() first")
        self._run_timers_from(now)

    def start(self, now: float) -> None:
        """No prompt this attempt: timers start at ``now``."""
        self._tick(now)
        if self._outcome is not None:
            return
        if self._phase != "idle":
            raise RuntimeError(f"start() called while {self._phase}; with a prompt use prompt_finished()")
        self._run_timers_from(now)

    def digit(self, key: str, now: float) -> Outcome | None:
        """A key arrived at ``now``. Returns the outcome if this call decided it."""
        key = _check_key(key, "digit")
        fired = self._tick(now)
        if self._outcome is not None:
            if not self._takes_late_terminator(key, now):
                self._leftover.append(key)
            return fired
        if self._phase != "running" and not self.rules.type_ahead:
            return None  # no type-ahead: keys before the timers start are dropped
        return self._key(key, now)

    def digits_in(self, keys: str, now: float) -> Outcome | None:
        """Several keys arrived at once (3CX may send a string); returns the outcome they decided."""
        decided = None
        for key in keys:
            decided = self.digit(key, now) or decided
        return decided

    def poll(self, now: float) -> Outcome | None:
        """Fire a due timer. Returns the outcome if this call decided it."""
        return self._tick(now)

    # -- the rules

    def _tick(self, now: float) -> Outcome | None:
        if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
            raise ValueError(f"now must be a finite number of seconds, got {now!r}")
        if self._now is not None and now < self._now:
            raise ValueError(f"time went backwards: now={now!r} after {self._now!r}")
        self._now = now
        if self._deadline is not None and now >= self._deadline:
            return self._fire()
        return None

    def _run_timers_from(self, now: float) -> None:
        self._phase = "running"
        self._timers_from = now
        self._rearm()

    def _rearm(self) -> None:
        if self._outcome is not None or self._timers_from is None:
            self._deadline = None
            return
        r = self.rules
        # Type-ahead keys were pressed before the timers started: their timer runs from then.
        since = self._timers_from
        if self._last_digit_at is not None and self._last_digit_at > since:
            since = self._last_digit_at
        if self._awaiting_terminator:
            self._deadline = since + r.final_timeout
        elif self._digits:
            self._deadline = since + r.inter_digit_timeout
        else:
            self._deadline = self._timers_from + r.first_digit_timeout

    def _fire(self) -> Outcome:
        if self._awaiting_terminator:
            return self._complete("final_timeout")
        if self._digits:
            return self._complete("inter_digit_timeout")
        return self._end("no_input", "first_digit_timeout")

    def _key(self, key: str, now: float | None = None) -> Outcome | None:
        r = self.rules
        if self._awaiting_terminator:
            if key == r.terminator:
                return self._complete("terminator", terminator=key)
            return self._end("no_match", "too_many_digits" if key in r.valid_keys else "invalid_digit")
        if key == r.terminator:
            return self._complete("terminator", terminator=key)
        if key not in r.valid_keys:
            return self._end("no_match", "invalid_digit")
        self._digits.append(key)
        self._last_digit_at = now
        if len(self._digits) >= r.max_digits:
            if r.final_timeout > 0 and r.terminator is not None and self._pattern_ok():
                self._awaiting_terminator = True  # VXML termtimeout: the terminator may still come
            else:
                return self._complete("max_digits")
        self._rearm()
        return None

    def _late_terminator_open(self) -> bool:
        o = self._outcome
        return (
            o is not None
            and o.reason == "max_digits"
            and self.rules.terminator is not None
            and not self._leftover
            and not self._late_terminator_taken
        )

    def _takes_late_terminator(self, key: str, now: float | None) -> bool:
        """Consume ``key`` if it is the terminator typed right after a max_digits match."""
        if key != self.rules.terminator or not self._late_terminator_open():
            return False
        if now is not None and self._decided_at is not None and now > self._decided_at + self.rules.inter_digit_timeout:
            return False
        self._late_terminator_taken = True
        return True

    def _pattern_ok(self) -> bool:
        return self.rules.pattern is None or re.fullmatch(self.rules.pattern, self.digits) is not None

    def _complete(self, reason: str, terminator: str | None = None) -> Outcome:
        """Input ended by ``reason``: match if the digits satisfy min_digits and pattern."""
        if len(self._digits) < self.rules.min_digits:
            return self._end("no_match", "too_few_digits", terminator)
        if not self._pattern_ok():
            return self._end("no_match", "pattern", terminator)
        return self._end("match", reason, terminator)

    def _end(self, status: Status, reason: str, terminator: str | None = None) -> Outcome:
        self._outcome = Outcome(status=status, digits=self.digits, terminator=terminator, reason=reason)
        self._decided_at = self._now
        self._deadline = None
        return self._outcome


# --- a whole gather -------------------------------------------------------------------------


class PromptPlan(BaseModel):
    """Which prompt each attempt plays. A prompt is an opaque string the Call resolves
    (a file name or text to speak).

    Attempt 1 plays ``initial``. A retry after a ``no_input`` (``no_match``) plays the
    ``no_input`` (``no_match``) entry for that status's count - the first one on the first
    no-input, the second on the second, the last entry repeating (VoiceXML ``count``) -
    followed by ``reprompt``, or by ``initial`` again if ``reprompt`` is unset and
    ``repeat_initial`` is true (3CX User Input: "invalid/timeout prompt, then sub-sequent prompt").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial: str | None = None
    no_input: tuple[str, ...] = ()
    no_match: tuple[str, ...] = ()
    reprompt: str | None = None
    repeat_initial: bool = True

    @field_validator("no_input", "no_match", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @field_validator("initial", "reprompt", "no_input", "no_match")
    @classmethod
    def _not_blank(cls, v: Any, info: ValidationInfo) -> Any:
        for p in (v,) if isinstance(v, str) else (v or ()):
            if not p.strip():
                raise ValueError(f"{info.field_name}: a prompt must not be empty")
        return v

    def for_attempt(self, number: int, after: Status | None = None, count: int = 0) -> tuple[str, ...]:
        """Prompts of attempt ``number``; ``after`` is the previous status, ``count`` how many
        times that status has happened in this gather so far (1 on its first occurrence)."""
        if number == 1:
            return (self.initial,) if self.initial else ()
        if after not in ("no_input", "no_match") or count < 1:
            raise ValueError(f"attempt {number}: a retry needs after='no_input'|'no_match' and count >= 1")
        escalation = self.no_input if after == "no_input" else self.no_match
        played: list[str] = []
        if escalation:
            played.append(escalation[min(count, len(escalation)) - 1])
        follow = self.reprompt if self.reprompt is not None else (self.initial if self.repeat_initial else None)
        if follow:
            played.append(follow)
        return tuple(played)


class AttemptMark(BaseModel):
    """Where a gather is, as a plain value: attempt ``number`` is starting, ``after`` the
    previous attempt's status, ``no_input`` / ``no_match`` how many of each came before.
    That is all :class:`PromptPlan` needs to pick the prompt, so a gather started at a mark
    (another worker resuming the call) plays what this attempt would have played and has
    only the attempts left that the caller had not used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    number: int = Field(1, ge=1)
    after: Status | None = None
    no_input: int = Field(0, ge=0)
    no_match: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> AttemptMark:
        if self.number > 1 and self.after is None:
            raise ValueError(f"attempt {self.number}: a retry says after which status (no_input or no_match)")
        if self.number > 1 and self.after == "match":
            raise ValueError(f"attempt {self.number}: no retry comes after a match")
        if self.number == 1 and (self.after is not None or self.no_input or self.no_match):
            raise ValueError("attempt 1 has no attempt before it")
        if self.after is not None and getattr(self, self.after) < 1:
            raise ValueError(f"attempt {self.number}: after {self.after} needs {self.after} >= 1")
        return self


@dataclass(frozen=True)
class Attempt:
    """One attempt of a gather: play ``prompts`` (in order, as one bargeable prompt), then
    drive ``collector``. If ``collector.outcome`` is already set, type-ahead decided it: skip
    the prompts and record it."""

    number: int
    prompts: tuple[str, ...]
    collector: DigitCollector
    after: Status | None = None  # the status of the previous attempt (None on attempt 1)
    mark: AttemptMark = field(default_factory=AttemptMark)  # where the gather is as this attempt starts


class GatherResult(BaseModel):
    """The end of a gather: the last attempt's outcome, and how many attempts it took."""

    model_config = ConfigDict(frozen=True)

    status: Status
    digits: str
    terminator: str | None
    reason: str
    attempts: int
    outcomes: tuple[Outcome, ...]


class GatherSession:
    """A whole ``gather``: up to ``1 + retries`` attempts, stopping at the first match.

    Loop: ``while (a := s.next_attempt()) is not None:`` run ``a``, then
    ``s.record(a.collector.outcome)``; finally read :attr:`result` and :meth:`leftover`.
    Type-ahead between attempts: keys left over after a ``no_match`` are flushed (the caller
    made a mistake; the rest is noise); after ``no_input`` they are kept.
    """

    def __init__(
        self,
        rules: DigitRules,
        retries: int = 2,
        prompts: PromptPlan | None = None,
        pending: str = "",
        start: AttemptMark | None = None,
    ) -> None:
        """``pending``: type-ahead left over by whatever ran before (fed to the first attempt).
        ``start``: begin at that attempt (a resumed gather; the attempts before it count as
        used, and its prompt is the one it would have had). A mark past the last attempt
        runs the last one."""
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
        for key in pending:
            _check_key(key, "pending")
        self.rules = rules
        self.retries = retries
        self.prompts = prompts or PromptPlan()
        self._pending = pending
        self._attempts: list[Attempt] = []
        self._outcomes: list[Outcome] = []
        self._counts: dict[str, int] = {"no_input": 0, "no_match": 0}
        self._start = start if start is not None and start.number > 1 else None
        self._used = 0  # attempts used before this session (a resumed gather)
        if self._start is not None:
            self._used = min(self._start.number, self.max_attempts) - 1
            self._counts = {"no_input": self._start.no_input, "no_match": self._start.no_match}

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    @property
    def done(self) -> bool:
        """True after a match, or once every attempt has an outcome."""
        if not self._outcomes:
            return False
        return self._outcomes[-1].status == "match" or self._used + len(self._outcomes) >= self.max_attempts

    def next_attempt(self) -> Attempt | None:
        """The next attempt to run, or None when the gather is over."""
        if len(self._attempts) > len(self._outcomes):
            raise RuntimeError(f"attempt {len(self._attempts)} has no outcome yet: call record() first")
        if self.done:
            return None
        number = self._used + len(self._attempts) + 1
        after: Status | None
        if number == 1:
            after, pending, prompts = None, self._pending, self.prompts.for_attempt(1)
        else:
            if self._attempts:
                after = self._outcomes[-1].status
                # After a mistake, keys typed on are noise; after silence they are the answer.
                pending = "" if after == "no_match" else self._attempts[-1].collector.leftover()
            else:  # resumed: the attempt before ran elsewhere
                assert self._start is not None
                after, pending = self._start.after, self._pending
            assert after in ("no_input", "no_match")
            prompts = self.prompts.for_attempt(number, after, self._counts[after])
        mark = AttemptMark(number=number, after=after, no_input=self._counts["no_input"],
                           no_match=self._counts["no_match"]) if number > 1 else AttemptMark()
        attempt = Attempt(number, prompts, DigitCollector(self.rules, pending=pending), after, mark)
        self._attempts.append(attempt)
        return attempt

    def record(self, outcome: Outcome | None = None) -> None:
        """Feed back the outcome of the current attempt (default: its collector's outcome)."""
        if len(self._attempts) == len(self._outcomes):
            raise RuntimeError("record(): no attempt is running; call next_attempt() first")
        if outcome is None:
            outcome = self._attempts[-1].collector.outcome
        if outcome is None:
            raise RuntimeError(f"record(): attempt {len(self._attempts)} has not decided an outcome yet")
        self._outcomes.append(outcome)
        if outcome.status != "match":
            self._counts[outcome.status] += 1

    @property
    def result(self) -> GatherResult:
        """The final result; RuntimeError before :attr:`done`."""
        if not self.done:
            raise RuntimeError("result: the gather is not over yet")
        last = self._outcomes[-1]
        return GatherResult(
            status=last.status,
            digits=last.digits,
            terminator=last.terminator,
            reason=last.reason,
            attempts=self._used + len(self._outcomes),
            outcomes=tuple(self._outcomes),
        )

    def late_terminator_until(self, now: float) -> float | None:
        """See :meth:`DigitCollector.late_terminator_until`, for the last attempt."""
        if not self.done:
            return None
        return self._attempts[-1].collector.late_terminator_until(now)

    def leftover(self) -> str:
        """Type-ahead for the next gather: the last attempt's leftover, flushed after a no_match."""
        if not self._attempts:
            return self._pending
        if self._outcomes and len(self._outcomes) == len(self._attempts) and self._outcomes[-1].status == "no_match":
            return ""
        return self._attempts[-1].collector.leftover()
