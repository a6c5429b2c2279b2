"""SharedTick: callbacks run on a shared grid, never early, one timer, a failing one isolated."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from ivr.pbx.tick import SharedTick


async def test_calls_run_together_on_the_grid_never_early() -> None:
    loop = asyncio.get_running_loop()
    tick = SharedTick(0.01)
    ran: list[tuple[str, float, int]] = []
    done = loop.create_future()

    fires = 0
    fire = tick._fire

    def counted_fire() -> None:
        nonlocal fires
        fires += 1
        fire()

    tick._fire = counted_fire  # type: ignore[method-assign]

    def record(name: str) -> None:
        ran.append((name, loop.time(), fires))
        if len(ran) == 3:
            done.set_result(None)

    now = loop.time()
    base = (math.floor(now / 0.01) + 2) * 0.01  # a grid point 10-20 ms ahead
    targets = {"a": base + 0.001, "b": base + 0.004, "c": base + 0.021}
    for name, t in targets.items():
        tick.call_at(t, record, name)
    await asyncio.wait_for(done, 2)
    times = {name: t for name, t, _ in ran}
    fire_of = {name: n for name, _, n in ran}
    assert fire_of["a"] == fire_of["b"] != fire_of["c"]  # the same grid point: one wake-up for both
    for name, t in targets.items():
        assert times[name] >= t - 1e-6, f"{name} ran early"
    assert [n for n, _, _ in ran].index("c") == 2  # the latest target runs last
    assert tick.waiting == 0 and tick._timer is None  # nothing scheduled: no timer left


async def test_a_past_time_runs_at_once_and_period_must_be_positive() -> None:
    tick = SharedTick(0.05)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    ran = loop.create_future()
    tick.call_at(t0 - 1.0, ran.set_result)
    await asyncio.wait_for(ran, 1)
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
        assert all(b - a >= 0.012 - 1e-6 for a, b in itertools.pairwise(times))  # never early
    assert tick.waiting == 0 and tick._timer is None


async def test_first_callbacks_run_before_the_others_of_their_grid_point() -> None:
    loop = asyncio.get_running_loop()
    tick = SharedTick(0.01)
    order: list[str] = []
    done = loop.create_future()
    at = (math.floor(loop.time() / 0.01) + 2) * 0.01
    tick.call_at(at, order.append, "read 1")
    tick.call_at(at, order.append, "pace 1", first=True)
    tick.call_at(at, order.append, "read 2")
    tick.call_at(at, order.append, "pace 2", first=True)
    tick.call_at(at + 0.01, lambda _: done.set_result(None))  # the next grid point
    tick.call_at(at + 0.01, order.append, "pace 3", first=True)
    await asyncio.wait_for(done, 2)
    # Within a grid point the pacers go first, each group in the order given.
    assert order == ["pace 1", "pace 2", "read 1", "read 2", "pace 3"]
    assert tick.waiting == 0 and tick._timer is None


async def test_a_late_timer_runs_every_grid_point_passed_in_one_go() -> None:
    loop = asyncio.get_running_loop()
    tick = SharedTick(0.005)
    fires: list[list[str]] = []
    fire = tick._fire

    def counted_fire() -> None:
        fires.append([])
        fire()

    tick._fire = counted_fire  # type: ignore[method-assign]
    base = (math.floor(loop.time() / 0.005) + 2) * 0.005
    for k in range(4):  # four grid points in a row, a pacer and a reader each
        tick.call_at(base + k * 0.005, lambda name: fires[-1].append(name), f"read {k}")
        tick.call_at(base + k * 0.005, lambda name: fires[-1].append(name), f"pace {k}", first=True)
    # The loop is blocked past all four grid points (a long callback, a collection).
    loop.call_at(base - 0.001, lambda: __import__("time").sleep(0.03))
    await asyncio.sleep(base + 0.045 - loop.time())
    # One wake-up catches up: every pacer due by now, then every reader.
    assert fires == [["pace 0", "pace 1", "pace 2", "pace 3", "read 0", "read 1", "read 2", "read 3"]]
    assert tick.waiting == 0 and tick._timer is None


async def test_recurring_callbacks_spread_over_the_grid_and_keep_their_phase() -> None:
    tick = SharedTick(0.005)
    every = 0.04  # 8 grid points per period
    phases = [tick.spread(every) for _ in range(16)]
    assert sorted(phases) == sorted(list(range(8)) * 2)  # round-robin: each grid point twice
    for phase in (0, 3, 7):
        for now in (100.0, 100.0031, 100.04, 100.1234):  # on time, mid-slot, and after a stall
            t = tick.next_on_phase(now, every, phase)
            slot = math.ceil(t / tick.period - 1e-9)
            assert now < t <= now + every + 1e-9
            assert slot % 8 == phase  # the same grid point of the period, missed periods skipped
    # A time computed on the grid is that grid point for call_at, not the next one.
    loop = asyncio.get_running_loop()
    t = tick.next_on_phase(loop.time(), every, 5)
    ran = loop.create_future()
    tick.call_at(t, lambda _: ran.set_result(loop.time()))
    assert tick._timer_slot == round(t / tick.period)
    assert await asyncio.wait_for(ran, 1) >= t - 1e-6
