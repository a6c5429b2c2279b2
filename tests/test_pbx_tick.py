"""SharedTick: waits resolve on a shared grid, never early, one timer, cancellation isolated."""

from __future__ import annotations

import asyncio
import math

import pytest

from ivr.pbx.tick import SharedTick


async def test_waiters_wake_together_on_the_grid_never_early() -> None:
    loop = asyncio.get_running_loop()
    tick = SharedTick(0.01)
    woke: list[tuple[str, float]] = []

    async def waiter(name: str, when: float | None) -> None:
        await (tick.wait() if when is None else tick.at(when))
        woke.append((name, loop.time()))

    now = loop.time()
    base = (math.floor(now / 0.01) + 2) * 0.01  # a grid point 10-20 ms ahead
    targets = {"a": base + 0.001, "b": base + 0.004, "c": base + 0.021}
    fa, fb = tick.at(targets["a"]), tick.at(targets["b"])
    await fa
    assert fb.done()  # the same grid point: one wake-up for both
    await asyncio.gather(waiter("next", None), *(waiter(k, t) for k, t in targets.items()))
    times = dict(woke)
    for name, t in targets.items():
        assert times[name] >= t - 1e-6, f"{name} woke early"
    assert times["next"] > now
    assert [n for n, _ in woke].index("c") == 3  # the latest target wakes last
    assert tick.waiting == 0 and tick._timer is None  # nobody waits: no timer left


async def test_cancelling_one_waiter_leaves_the_others() -> None:
    tick = SharedTick(0.01)
    first = asyncio.ensure_future(tick.at(asyncio.get_running_loop().time() + 0.02))
    second = tick.at(asyncio.get_running_loop().time() + 0.02)
    first.cancel()
    await asyncio.wait_for(second, 1)
    assert second.done() and not second.cancelled()
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_past_time_resolves_at_once_and_period_must_be_positive() -> None:
    tick = SharedTick(0.05)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(tick.at(t0 - 1.0), 1)
    assert loop.time() - t0 < 0.04
    with pytest.raises(ValueError, match="period"):
        SharedTick(0)


async def test_callbacks_run_from_the_timer_and_may_rearm_themselves() -> None:
    loop = asyncio.get_running_loop()
    tick = SharedTick(0.005)
    runs: list[tuple[str, float]] = []
    done = loop.create_future()

    def pacer(name: str) -> None:
        now = loop.time()
        runs.append((name, now))
        if sum(1 for n, _ in runs if n == name) < 4:
            tick.call_at(now + 0.012, pacer, name)  # re-arm from inside the timer
        elif all(sum(1 for n, _ in runs if n == other) >= 4 for other in "ab") and not done.done():
            done.set_result(None)

    def broken(_: object) -> None:
        raise RuntimeError("one stream's bug")

    start = loop.time()
    tick.call_at(start + 0.001, broken)
    tick.call_at(start + 0.001, pacer, "a")
    tick.call_at(start + 0.003, pacer, "b")
    await asyncio.wait_for(done, 2)
    for name in "ab":
        times = [t for n, t in runs if n == name]
        assert len(times) == 4  # the failing callback stopped nobody
        assert all(b - a >= 0.012 - 1e-6 for a, b in zip(times, times[1:]))  # never early
    assert tick.waiting == 0 and tick._timer is None
