"""A virtual clock for simulated calls: an asyncio event loop that skips idle waits.

``VirtualTimeLoop`` is a ``SelectorEventLoop`` whose ``time()`` is virtual. Each time the loop
would wait, its selector first polls the real sockets without waiting:

- something is ready: it is handled, the clock does not move;
- nothing is ready, a timer is pending and no thread or subprocess work is in flight: nobody
  can make progress but the timers, so the clock jumps to the next timer at once;
- thread work (``run_in_executor``, ``asyncio.to_thread``: STT, TTS, recorder saves) or a
  subprocess is in flight, or no timer is pending: the loop waits for real and the clock
  advances by the real time waited - except inside :meth:`VirtualTimeLoop.frozen`, where the
  test's own thread work (the caller's speech being synthesized) takes no virtual time.

Code running on the loop takes no virtual time, so a 6 s prompt paced on ``loop.time()``
plays in the few milliseconds of CPU it costs. This is sound when every party lives in this
process and talks over loopback: a loopback write is in the peer's receive buffer when
``send()`` returns (asyncio sets ``TCP_NODELAY``), so "nothing ready" means everyone waits on
a timer. It is not sound for a peer in another process or machine (a local LLM server, a
real PBX): its answer takes real time the loop does not wait for, and timeouts fire early.
Run those on a normal loop (``@pytest.mark.ivr_realtime``, ``ivr call --realtime``).

Wall-clock time (``time.time()``, ``datetime.now()``) stays real.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["VirtualTimeLoop", "is_virtual", "run"]

T = TypeVar("T")


class _SkippingSelector(selectors.BaseSelector):
    """Wraps the real selector; ``select`` jumps the loop's clock instead of idling."""

    def __init__(self, real: selectors.BaseSelector) -> None:
        self._real = real
        self._loop: VirtualTimeLoop | None = None  # set once the loop exists

    # Registration goes straight to the real selector: same keys, same errors.
    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._real.select(0)
        loop = self._loop
        if loop is None:
            return events
        if not events and timeout != 0:  # timeout 0: the loop has callbacks to run
            if timeout is not None and not loop._outside_work():
                loop._advance(timeout)  # only timers can move things: go to the next one
            elif loop._frozen and timeout is not None:
                # Work outside the simulated world (frozen()): wait for it without letting
                # virtual time pass, in short real waits so a due timer is not missed.
                events = self._real.select(min(timeout, 0.05))
            else:
                # Threads or subprocesses will wake the loop (self-pipe), or nothing is
                # scheduled: wait for real, and let virtual time pass as real time does.
                started = time.monotonic()
                events = self._real.select(timeout)
                waited = time.monotonic() - started
                loop._advance(waited if timeout is None else min(waited, timeout), skipped=False)
        loop._catch_up()
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
    """An event loop whose clock jumps over idle waits (see the module docstring).

    ``skipped`` is the virtual time jumped over, in seconds: how much waiting it saved.
    """

    def __init__(self) -> None:
        selector = _SkippingSelector(selectors.DefaultSelector())
        # Not 0 (code may treat 0 as "never"); small, so 1 ns steps stay representable.
        self._now = 1000.0
        self.skipped = 0.0
        self._threads = 0  # executor jobs submitted and not finished
        self._processes: list[Any] = []  # subprocess transports, until they exit
        self._frozen = 0  # frozen() blocks open: thread work takes no virtual time
        super().__init__(selector)
        selector._loop = self

    def time(self) -> float:
        return self._now

    def _advance(self, seconds: float, *, skipped: bool = True) -> None:
        if seconds > 0:
            self._now += seconds
            if skipped:
                self.skipped += seconds

    def _catch_up(self) -> None:
        """Bring the clock to the next timer if the loop is about to run it anyway.

        asyncio runs timers due within its clock resolution (1 ns) without waiting for them.
        On a real clock time moves on by itself; here the clock would stay behind a timer that
        fired, and code re-arming a timer for the remaining 0.3 ns would spin forever.
        """
        scheduled = self._scheduled  # the loop's timer heap: earliest first, none cancelled
        if scheduled:
            when = scheduled[0].when()
            if self._now < when <= self._now + self._clock_resolution:
                self._now = when

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Thread work awaited inside this block takes no virtual time: the simulated world
        (prompts, timeouts) waits for it. For the test's own preparation, such as synthesizing
        what the caller says, which in reality would be ready at once."""
        self._frozen += 1
        try:
            yield
        finally:
            self._frozen -= 1

    def _outside_work(self) -> bool:
        """True while a thread or a subprocess may still wake the loop."""
        if self._processes:
            self._processes = [p for p in self._processes if p.get_returncode() is None]
        return self._threads > 0 or bool(self._processes)

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        fut = super().run_in_executor(executor, func, *args)
        self._threads += 1
        # Count the job done when its result has reached the loop, not when the thread
        # returns: the result comes through the self-pipe a moment later, and a jump in
        # between would deliver it late. A cancelled job's result is wanted by nobody.
        fut.add_done_callback(self._thread_done)
        return fut

    def _thread_done(self, fut: asyncio.Future[Any]) -> None:
        self._threads -= 1

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        transport, protocol = await super().subprocess_exec(*args, **kwargs)
        self._processes.append(transport)
        return transport, protocol

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        transport, protocol = await super().subprocess_shell(*args, **kwargs)
        self._processes.append(transport)
        return transport, protocol


def is_virtual(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """Whether ``loop`` (default: the running loop) runs on virtual time."""
    return isinstance(loop or asyncio.get_running_loop(), VirtualTimeLoop)


def run(main: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
    """``asyncio.run`` on a :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)  # type: ignore[arg-type]
