"""One input stream per call: everything a call's waits react to, as typed values on one queue.

The media layer pushes what the caller does (:class:`Digit`, and the VAD's
:class:`~ivr.audio.vad.SpeechStarted` / :class:`~ivr.audio.vad.SpeechEnded` /
:class:`~ivr.audio.vad.SpeechCancelled`); the Call pushes :class:`HungUp`; work a wait
watches (a gather's prompt, a recognition, an action raced against the caller leaving) pushes
a :class:`Done` when it ends. :meth:`InputStream.next` is the one place that waits: the next
input a consumer wants, or its deadline. Consumers (gather, record, the agent's listening,
``Call._until_hangup``) are loops "input or deadline -> feed the rules with now -> act"; none
of them races futures or cancels a pending read.

Inputs a consumer does not want stay queued for the next one: keys pressed during a prompt are
the next gather's type-ahead. Speech events from before a consumer started are stale; it drops
them (:meth:`InputStream.drop_speech`). Hang-up is sticky: once pushed, every wait returns it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ivr.audio.vad import SpeechCancelled, SpeechEnded, SpeechStarted

__all__ = [
    "HUNG_UP",
    "MAX_QUEUED",
    "Digit",
    "Done",
    "HungUp",
    "Input",
    "InputStream",
    "PromptDone",
    "SpeechCancelled",
    "SpeechEnded",
    "SpeechStarted",
    "Transcript",
    "WorkDone",
    "stop",
]


@dataclass(frozen=True, slots=True)
class Digit:
    """A key the caller pressed (in-band and PBX events merged: each press once), at loop time ``at``."""

    key: str
    at: float


@dataclass(frozen=True, slots=True)
class HungUp:
    """The call ended: the caller left, the IVR hung up, or the call was transferred away."""


HUNG_UP = HungUp()


@dataclass(frozen=True, slots=True)
class Done:
    """Work a wait watches has ended; ``task.result()`` is its result or raises its error."""

    task: asyncio.Future[Any]


class PromptDone(Done):
    """A gather attempt's prompt ended: played out, cut by barge-in, or failed."""

    __slots__ = ()


class Transcript(Done):
    """A recognition ended: ``task.result()`` is the STT's transcript, or raises why not."""

    __slots__ = ()


class WorkDone(Done):
    """An action raced against the caller (``Call._until_hangup``, the agent's reply) ended."""

    __slots__ = ()


Input = Digit | SpeechStarted | SpeechEnded | SpeechCancelled | Done | HungUp
Wanted = Callable[[Input], bool]
_SPEECH = (SpeechStarted, SpeechEnded, SpeechCancelled)
#: Queued inputs kept at most: past it the oldest speech event goes (nobody listened for
#: them: a long hold or a prompt loop over background noise), else the oldest key.
MAX_QUEUED = 256


class InputStream:
    """The per-call input queue and its one waiting helper; see the module text."""

    def __init__(self) -> None:
        self._items: deque[Input] = deque()
        self._waiters: list[asyncio.Future[None]] = []
        self._watched: set[asyncio.Future[Any]] = set()
        self._hung_up = False

    @property
    def hung_up(self) -> bool:
        return self._hung_up

    # --- producers ------------------------------------------------------------------------------

    def push(self, item: Input) -> None:
        """Queue ``item`` and wake the waits (a Done of work nobody watches any more is dropped)."""
        if isinstance(item, HungUp):
            self._hung_up = True
        elif isinstance(item, Done) and item.task not in self._watched:
            return
        else:
            self._items.append(item)
            if len(self._items) > MAX_QUEUED:
                self._drop_oldest_speech()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def watch(self, task: asyncio.Future[Any], kind: type[Done]) -> asyncio.Future[Any]:
        """Push ``kind(task)`` when ``task`` ends (until :meth:`forget`); returns ``task``."""
        self._watched.add(task)
        task.add_done_callback(lambda t: self.push(kind(t)))
        return task

    def start(self, work: Awaitable[Any], kind: type[Done]) -> asyncio.Future[Any]:
        """Run ``work`` as a task whose end is pushed as ``kind`` (see :meth:`watch`)."""
        return self.watch(asyncio.ensure_future(work), kind)

    def forget(self, task: asyncio.Future[Any] | None) -> None:
        """Stop watching ``task``: its Done, queued or still to come, is dropped."""
        if task is None or task not in self._watched:
            return
        self._watched.discard(task)
        self._items = deque(i for i in self._items if not (isinstance(i, Done) and i.task is task))

    # --- the one wait ---------------------------------------------------------------------------

    async def next(self, wanted: Wanted, deadline: float | None = None) -> Input | None:
        """The first queued input ``wanted`` accepts (taken off the queue), :data:`HUNG_UP` once
        the call ended, or None when ``deadline`` (loop time) comes first. Cancelling the
        caller leaves the queue as it was."""
        loop = asyncio.get_running_loop()
        alarm = _Alarm()
        timer = loop.call_at(deadline, alarm.ring) if deadline is not None else None
        try:
            while True:
                if self._hung_up:
                    return HUNG_UP
                item = self._take(wanted)
                if item is not None:
                    return item
                if alarm.rang or (deadline is not None and loop.time() >= deadline):
                    return None  # (a timer may ring a clock tick early: the caller polls with its now)
                alarm.waiter = loop.create_future()
                self._waiters.append(alarm.waiter)
                try:
                    await alarm.waiter
                finally:
                    self._waiters.remove(alarm.waiter)
        finally:
            if timer is not None:
                timer.cancel()

    def _take(self, wanted: Wanted) -> Input | None:
        for n, item in enumerate(self._items):
            if wanted(item):
                del self._items[n]
                return item
        return None

    def _drop_oldest_speech(self) -> None:
        for n, item in enumerate(self._items):
            if isinstance(item, _SPEECH):
                del self._items[n]
                return
        # Only keys (and ends of work) queued: a caller keying through a long prompt nobody
        # gathers from. The oldest key goes: type-ahead that deep means nothing, and an
        # unbounded queue would let a caller grow the worker's memory and every scan of it.
        for n, item in enumerate(self._items):
            if isinstance(item, Digit):
                del self._items[n]
                return

    # --- keys and speech between waits ------------------------------------------------------------

    def take_digits(self) -> str:
        """Remove and return the keys pressed but not yet read (type-ahead)."""
        keys = [i.key for i in self._items if isinstance(i, Digit)]
        if keys:
            self._items = deque(i for i in self._items if not isinstance(i, Digit))
        return "".join(keys)

    def unread_digits(self, keys: str, at: float) -> None:
        """Put keys back in front of the queue, for the next reader to read first."""
        self._items.extendleft(Digit(k, at) for k in reversed(keys))

    def first_digit(self) -> Digit | None:
        return next((i for i in self._items if isinstance(i, Digit)), None)

    def remove(self, item: Input) -> None:
        self._items.remove(item)

    def drop_speech(self) -> None:
        """Forget queued speech events: they are from before the consumer that starts now."""
        if any(isinstance(i, _SPEECH) for i in self._items):
            self._items = deque(i for i in self._items if not isinstance(i, _SPEECH))

    def pending(self) -> list[Input]:
        """What is queued, oldest first (for tests and live views)."""
        return list(self._items)


async def stop(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` unless it has ended, and wait until it has; what it raised (a cancel, an
    error) counts as seen. A cancel of the caller itself still propagates."""
    if task is None:
        return
    if not task.done():
        task.cancel()
        await asyncio.wait((task,))
    if not task.cancelled():
        task.exception()


class _Alarm:
    """A wait's deadline: rings once, waking the wait's current waiter."""

    __slots__ = ("rang", "waiter")

    def __init__(self) -> None:
        self.rang = False
        self.waiter: asyncio.Future[None] | None = None

    def ring(self) -> None:
        self.rang = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
