"""Live-call takeover (docs/ha.md, parts 2-4): real ``ivr run`` processes, a real emulator
process and a real redis-server. Callers sit in a menu; the owner is killed with SIGKILL (or
stopped with SIGTERM while a standby waits); the standby resumes every call at its step, each
caller presses 1 and reaches extension 101, and every call has exactly one final record."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from cluster_rig import Cluster, eventually
from redis_server import RedisServer

MENU = """\
steps:
  - answer
  - set: {greeted: "yes"}
  - menu:
      prompt: {say: "Welcome. Press 1 for sales."}
      timeout: 8
      retries: 3
      choices:
        "1":
          - set: {chose: "sales"}
          - transfer: {to: "101", timeout: 5}
"""
CALLS = 12


@pytest.fixture
async def rig(tmp_path: Path):
    redis = RedisServer(tmp_path)
    redis.start()
    cluster = Cluster(tmp_path)
    (tmp_path / "menu.yaml").write_text(MENU)
    try:
        await cluster.up()
        yield cluster, redis
    finally:
        await cluster.close()
        redis.kill()


def redis_cluster(redis: RedisServer, tmp_path: Path, host: str) -> str:
    # Separate lease folders stand for separate machines: only Redis joins them.
    return f"cluster: {{redis_url: '{redis.url}', lease_ttl: 1.0, lease_dir: {tmp_path / host}}}\n"


def records(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    path = tmp_path / f"{name}-calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def callers_in_the_menu(cluster: Cluster) -> list[int]:
    callids = [await cluster.place_call(f"+49301000{i:02d}") for i in range(CALLS)]
    for callid in callids:
        await cluster.hears_the_menu(callid, 0.5)
    return callids


async def every_caller_reaches_101(cluster: Cluster, callids: list[int]) -> None:
    for callid in callids:
        await cluster.hears_the_menu(callid, 0.2)
    await asyncio.gather(*(cluster.press(c, "1") for c in callids))
    await asyncio.gather(*(cluster.reaches_101(c) for c in callids))


async def one_record_per_call(tmp_path: Path, callids: list[int], owner_pid: int) -> list[dict[str, Any]]:
    async def all_written() -> bool:
        return len(records(tmp_path, "b")) >= len(callids)

    await eventually(all_written, what="the standby's call records")
    old, new = records(tmp_path, "a"), records(tmp_path, "b")
    assert not [r for r in old if int(r["call_id"]) in callids]  # the old owner wrote none of them
    mine = [r for r in new if int(r["call_id"]) in callids]
    assert sorted(int(r["call_id"]) for r in mine) == sorted(callids)  # one each
    for r in mine:
        assert r["outcome"] == "transferred" and r["transferred_to"] == "101", r
        assert r["taken_over"]["resumed"] is True and f"pid {owner_pid}" in r["taken_over"]["from"], r["taken_over"]
        assert r["taken_over"]["step"][0][0] == "steps"  # resumed inside the flow, not from the top
        assert r["duration"] > r["taken_over"]["checkpoint_age_s"]  # counted from the first answer
        assert [s["step"] for s in r["steps"]][:2] == ["menu", "set"], r["steps"]  # no second answer/greeting
    return mine


async def owner_and_standby(cluster: Cluster, redis: RedisServer, tmp_path: Path) -> tuple[Any, Any, int]:
    """An owner (ready) and a standby (waiting) on "different machines": (owner, standby, its port)."""
    owner, owner_port = cluster.worker("a", cluster=redis_cluster(redis, tmp_path, "host-a"))
    await cluster.ready(owner_port)
    standby, standby_port = cluster.worker("b", cluster=redis_cluster(redis, tmp_path, "host-b"))

    async def waiting() -> bool:
        return "standby:" in standby.text()

    await eventually(waiting, what="the standby")
    return owner, standby, standby_port


async def test_killed_owner_its_standby_resumes_every_call_at_its_step(rig, tmp_path: Path):
    cluster, redis = rig
    owner, standby, standby_port = await owner_and_standby(cluster, redis, tmp_path)
    callids = await callers_in_the_menu(cluster)

    owner.proc.send_signal(signal.SIGKILL)
    owner.proc.wait(10)
    await cluster.ready(standby_port)
    assert f"takeover: {CALLS} call(s) in progress left by a previous owner" in standby.text()
    await every_caller_reaches_101(cluster, callids)
    await one_record_per_call(tmp_path, callids, owner.proc.pid)


async def test_sigterm_hands_calls_in_progress_to_the_waiting_standby(rig, tmp_path: Path):
    cluster, redis = rig
    owner, _standby, standby_port = await owner_and_standby(cluster, redis, tmp_path)
    callids = await callers_in_the_menu(cluster)

    owner.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(owner.proc.wait, 30) == 0  # no drain: it hands over at once
    assert f"hand-over: {CALLS} call(s) left to the standby" in owner.text()
    await cluster.ready(standby_port)
    await every_caller_reaches_101(cluster, callids)
    await one_record_per_call(tmp_path, callids, owner.proc.pid)


async def test_without_a_standby_sigterm_drains_as_before(rig, tmp_path: Path):
    cluster, redis = rig
    owner, owner_port = cluster.worker("a", cluster=redis_cluster(redis, tmp_path, "host-a"))
    await cluster.ready(owner_port)
    callid = await cluster.place_call()
    await cluster.hears_the_menu(callid)
    owner.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(1.0)
    assert owner.proc.poll() is None  # draining: the call in progress goes on
    await cluster.press(callid, "1")
    await cluster.reaches_101(callid)
    assert await asyncio.to_thread(owner.proc.wait, 30) == 0
    assert "hand-over" not in owner.text()
    [record] = records(tmp_path, "a")
    assert record["outcome"] == "transferred" and record["taken_over"] is None


# Callers in every kind of step: a menu, a gather, a prompt, a transfer that rings (103 never
# answers) - by the last digit of their number. Each ends up pressing 1 (or typing 1234) to
# reach 101.
MIXED = """\
steps:
  - answer
  - switch: "{{ caller.number[-1] }}"
    cases:
      "1":
        - gather: {prompt: {say: "Your PIN."}, min_digits: 4, max_digits: 4, first_digit_timeout: 8, retries: 3}
        - transfer: {to: "101", timeout: 5}
      "2":
        - play: long.wav
      "3":
        - transfer: {to: "103", timeout: 12}
  - menu:
      prompt: {say: "Press 1 for sales."}
      timeout: 8
      retries: 5
      choices:
        "1":
          - transfer: {to: "101", timeout: 5}
"""
MIXED_CALLS = 50


async def test_killed_owner_with_calls_in_menus_gathers_prompts_and_transfers(tmp_path: Path):
    import numpy as np
    import soundfile as sf

    redis = RedisServer(tmp_path)
    redis.start()
    cluster = Cluster(tmp_path, ("--no-answer", "103"))
    t = np.arange(8000 * 6) / 8000
    sf.write(tmp_path / "long.wav", (6000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16), 8000, subtype="PCM_16")
    (tmp_path / "menu.yaml").write_text(MIXED)
    try:
        await cluster.up()
        owner, owner_port = cluster.worker("a", cluster=redis_cluster(redis, tmp_path, "host-a"))
        await cluster.ready(owner_port)
        standby, standby_port = cluster.worker("b", cluster=redis_cluster(redis, tmp_path, "host-b"))

        async def waiting() -> bool:
            return "standby:" in standby.text()

        await eventually(waiting, what="the standby")
        # The flow picks the step by the last digit: 1 gather, 2 prompt, 3 transfer, else the menu.
        callids = {await cluster.place_call(f"+4930200{i:03d}"): (i % 10 if i % 10 in (1, 2, 3) else 0)
                   for i in range(MIXED_CALLS)}
        for callid in callids:
            await cluster.hears_the_menu(callid, 0.3)
        ringing = [c for c, kind in callids.items() if kind == 3]

        async def transfers_ringing() -> bool:
            infos = [await cluster.info(c) for c in ringing]
            return all(i["offer"] is not None for i in infos)

        await eventually(transfers_ringing, what="the transfers to ring")
        owner.proc.send_signal(signal.SIGKILL)
        owner.proc.wait(10)
        await cluster.ready(standby_port)

        async def finish(callid: int, kind: int) -> None:
            # A caller keeps trying until the resumed flow takes the keys (a PIN, or 1 in the menu).
            await cluster.press_until(callid, "1234" if kind == 1 else "1", lambda info: info["location"] == "101")
            await cluster.reaches_101(callid)

        await asyncio.gather(*(finish(c, k) for c, k in callids.items()))
        async def all_written() -> bool:
            return len(records(tmp_path, "b")) >= MIXED_CALLS

        await eventually(all_written, what="the standby's records")
        mine = [r for r in records(tmp_path, "b") if int(r["call_id"]) in callids]
        assert sorted(int(r["call_id"]) for r in mine) == sorted(callids)  # one record each
        assert all(r["outcome"] == "transferred" and r["transferred_to"] == "101" for r in mine)
        assert all(r["taken_over"]["resumed"] for r in mine)
        assert not [r for r in records(tmp_path, "a") if int(r["call_id"]) in callids]
    finally:
        await cluster.close()
        redis.kill()


async def test_a_rolling_restart_under_continuous_arrivals_loses_no_call(rig, tmp_path: Path):
    cluster, redis = rig
    a, a_port = cluster.worker("a", cluster=redis_cluster(redis, tmp_path, "host-a"))
    await cluster.ready(a_port)
    b, b_port = cluster.worker("b", cluster=redis_cluster(redis, tmp_path, "host-b"))

    async def standby(proc) -> bool:
        return "standby:" in proc.text()

    await eventually(lambda: standby(b), what="b to wait")
    callids: list[int] = []

    async def arrivals() -> None:
        for i in range(30):
            callids.append(await cluster.place_call(f"+4930300{i:03d}"))
            await asyncio.sleep(0.25)

    arriving = asyncio.create_task(arrivals())
    await asyncio.sleep(2.0)
    a.proc.send_signal(signal.SIGTERM)  # update a: b takes over
    assert await asyncio.to_thread(a.proc.wait, 30) == 0
    await cluster.ready(b_port)
    c, c_port = cluster.worker("c", cluster=redis_cluster(redis, tmp_path, "host-c"))  # a's replacement
    await eventually(lambda: standby(c), what="c to wait")
    b.proc.send_signal(signal.SIGTERM)  # update b: c takes over
    assert await asyncio.to_thread(b.proc.wait, 30) == 0
    await cluster.ready(c_port)
    await arriving
    await asyncio.gather(*(cluster.press_until(c, "1", lambda info: info["location"] == "101") for c in callids))
    await asyncio.gather(*(cluster.reaches_101(c) for c in callids))
    written = [r for name in ("a", "b", "c") for r in records(tmp_path, name) if int(r["call_id"]) in callids]

    async def all_written() -> bool:
        nonlocal written
        written = [r for name in ("a", "b", "c") for r in records(tmp_path, name) if int(r["call_id"]) in callids]
        return len(written) >= len(callids)

    await eventually(all_written, what="every call's record")
    assert sorted(int(r["call_id"]) for r in written) == sorted(callids)  # each call once, none lost
    assert all(r["outcome"] == "transferred" for r in written)


async def test_redis_restarting_never_stops_the_calls_in_progress(rig, tmp_path: Path):
    cluster, redis = rig
    owner, port = cluster.worker("a", cluster=redis_cluster(redis, tmp_path, "host-a"))
    await cluster.ready(port)
    callids = [await cluster.place_call(f"+4930400{i:03d}") for i in range(5)]
    for callid in callids:
        await cluster.hears_the_menu(callid)
    redis.kill()

    async def says_so() -> bool:
        return "keeping the calls in progress as the owner" in owner.text()

    await eventually(says_so, what="the owner to say it keeps its calls")
    await asyncio.sleep(1.0)
    redis.start()
    await asyncio.gather(*(cluster.press_until(c, "1", lambda info: info["location"] == "101") for c in callids))
    await asyncio.gather(*(cluster.reaches_101(c) for c in callids))
    assert owner.proc.poll() is None  # still the owner, still running
    got = await cluster.readyz(port)
    assert got is not None and got[0] == 200


async def test_a_local_standby_resumes_the_calls_of_a_killed_owner_from_its_checkpoint_files(tmp_path: Path):
    """No Redis: owner and standby on one machine share the lease folder, and the checkpoint
    files beside the lease file carry each call's step across the ``kill -9``."""
    cluster = Cluster(tmp_path)
    (tmp_path / "menu.yaml").write_text(MENU)
    local = f"cluster: {{lease_dir: {tmp_path / 'run'}}}\n"
    try:
        await cluster.up()
        owner, owner_port = cluster.worker("a", cluster=local)
        await cluster.ready(owner_port)
        standby, standby_port = cluster.worker("b", cluster=local)

        async def waiting() -> bool:
            return "standby:" in standby.text()

        await eventually(waiting, what="the standby")
        callids = await callers_in_the_menu(cluster)
        [calls_dir] = (tmp_path / "run").glob("*.calls")

        async def checkpointed() -> bool:
            return len(list(calls_dir.glob("*.json"))) == CALLS

        await eventually(checkpointed, what="a checkpoint file per call")
        owner.proc.send_signal(signal.SIGKILL)
        owner.proc.wait(10)
        await cluster.ready(standby_port)
        assert f"takeover: {CALLS} call(s) in progress left by a previous owner" in standby.text()
        await every_caller_reaches_101(cluster, callids)
        await one_record_per_call(tmp_path, callids, owner.proc.pid)

        async def files_gone() -> bool:
            return not list(calls_dir.iterdir())

        await eventually(files_gone, what="each ended call's checkpoint file to go")
    finally:
        await cluster.close()


async def test_sigterm_hands_calls_to_a_local_standby_without_redis(tmp_path: Path):
    cluster = Cluster(tmp_path)
    (tmp_path / "menu.yaml").write_text(MENU)
    local = f"cluster: {{lease_dir: {tmp_path / 'run'}}}\n"
    try:
        await cluster.up()
        owner, owner_port = cluster.worker("a", cluster=local)
        await cluster.ready(owner_port)
        standby, standby_port = cluster.worker("b", cluster=local)

        async def waiting() -> bool:
            return "standby:" in standby.text()

        await eventually(waiting, what="the standby")
        callids = await callers_in_the_menu(cluster)
        owner.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(owner.proc.wait, 30) == 0  # no drain: it hands over at once
        assert f"hand-over: {CALLS} call(s) left to the standby" in owner.text()
        await cluster.ready(standby_port)
        await every_caller_reaches_101(cluster, callids)
        await one_record_per_call(tmp_path, callids, owner.proc.pid)
    finally:
        await cluster.close()


PY_FLOW = """\
async def main(call):
    await call.answer()
    first = await call.menu(prompt={"say": "Press 2 for sales."}, choices=["2"], timeout=8, retries=5)
    call.log_event(f"chose {first.choice}")
    if first.choice != "2":
        await call.hangup()
        return
    second = await call.menu(prompt={"say": "Press 1 to be put through."}, choices=["1"], timeout=8, retries=5)
    if second.choice == "1":
        await call.transfer("101", timeout=5)
"""
PY_CALLS = 4


async def test_killed_owner_its_standby_resumes_a_python_flow_by_replay(rig, tmp_path: Path):
    """A Python flow's callers past its first menu: after SIGKILL the standby replays answer and
    the first menu from the checkpointed journal (no audio, no PBX request) and runs the second
    menu for real; nobody is asked to press 2 again."""
    cluster, redis = rig
    (tmp_path / "menu.py").write_text(PY_FLOW)
    cluster.flow = "menu.py"
    owner, standby, standby_port = await owner_and_standby(cluster, redis, tmp_path)
    callids = [await cluster.place_call(f"+49302000{i:02d}") for i in range(PY_CALLS)]
    for callid in callids:
        await cluster.hears_the_menu(callid, 0.3)
        # keys pressed while the prompt plays take the menu (barge-in); again until the flow has it
        await cluster.press_until(callid, "2", lambda info, c=callid: f"[{c}] ivr.call: chose 2" in owner.text(),
                                  every=1.0)
    for callid in callids:
        await cluster.hears_the_menu(callid, 0.2)  # and the second menu is playing

    owner.proc.send_signal(signal.SIGKILL)
    owner.proc.wait(10)
    await cluster.ready(standby_port)
    await asyncio.gather(*(cluster.press_until(c, "1", lambda info: info["location"] == "101") for c in callids))
    await asyncio.gather(*(cluster.reaches_101(c) for c in callids))

    async def all_written() -> bool:
        return len(records(tmp_path, "b")) >= len(callids)

    await eventually(all_written, what="the standby's call records")
    mine = [r for r in records(tmp_path, "b") if int(r["call_id"]) in callids]
    assert sorted(int(r["call_id"]) for r in mine) == sorted(callids)  # one record each
    assert not [r for r in records(tmp_path, "a") if int(r["call_id"]) in callids]
    for r in mine:
        assert r["outcome"] == "transferred" and r["transferred_to"] == "101", r
        taken = r["taken_over"]
        assert taken["resumed"] is True and taken["replayed_actions"] == 2, taken  # answer and the first menu
        assert taken["step"] == [["steps", 2]], taken
        # The steps this owner ran: the second menu (menu.py:8) and the transfer, nothing before.
        assert [(s["step"], s["id"]) for s in r["steps"]] == [("menu", "menu.py:8"), ("transfer", "menu.py:10")], r
        assert r["steps"][0]["result"]["choice"] == "1"
        # The flow's own side effects between actions run again in the replay (docs/flows.md).
        assert f"[{r['call_id']}] ivr.call: chose 2" in standby.text()
