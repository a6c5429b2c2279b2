"""Checkpoint stores on a real redis-server: writes coalesce per call, deletions, Redis down
and back, and a worker that finds a checkpoint whose call already ended (one record)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from ivr.cluster.checkpoints import Checkpoint, MemoryCheckpoints, RedisCheckpoints
from ivr.config import PbxSettings, Route, WorkerConfig
from ivr.flow.position import FlowPosition, Frame
from ivr.worker.runner import Worker

SECRET = "checkpoint-secret"


def checkpoint(call_id: str, step: int, *, waiting: str | None = None, route_point: str = "800") -> Checkpoint:
    position = FlowPosition(flow="menu.yaml", version="v1", frames=[Frame(branch=("steps",), at=step)],
                            waiting_for=waiting, vars={"n": step})
    return Checkpoint(call_id=call_id, route_point=route_point, participant_id=int(call_id), owner="host-a pid 1",
                      started_at=1.0e9, caller_number="+4930111", position=position)


async def test_writes_coalesce_to_the_newest_per_call_and_deletions_go_through(redis_server):
    store = RedisCheckpoints(redis_server.url, "lease-x")
    other = RedisCheckpoints(redis_server.url, "lease-y")  # another client id: another namespace
    try:
        for step in range(50):  # a burst of steps between two flushes
            store.save(checkpoint("1", step))
        store.save(checkpoint("2", 3))
        other.save(checkpoint("9", 1))
        await store.flush()
        await other.flush()
        assert store.writes == 2 and store.round_trips == 1
        found = await store.load_all()
        assert set(found) == {"1", "2"} and found["1"].position is not None
        assert found["1"].position.frames[0].at == 49 and found["1"].position.vars == {"n": 49}
        store.forget("1")
        await store.flush()
        assert set(await store.load_all()) == {"2"}
    finally:
        await store.aclose()
        await other.aclose()


async def test_checkpoints_wait_for_redis_to_come_back(redis_server):
    store = RedisCheckpoints(redis_server.url, "lease-x")
    try:
        redis_server.kill()
        store.save(checkpoint("1", 4))
        await asyncio.sleep(0.3)  # the writer tried and failed; the call did not notice
        redis_server.start()

        async def saved() -> bool:
            try:
                return "1" in await store.load_all()
            except Exception:  # Redis still starting
                return False

        for _ in range(100):
            if await saved():
                break
            await asyncio.sleep(0.1)
        assert (await store.load_all())["1"].position.frames[0].at == 4  # type: ignore[union-attr]
    finally:
        await store.aclose()


async def test_memory_checkpoints_are_this_process_only():
    store = MemoryCheckpoints()
    store.save(checkpoint("1", 1))
    store.save(checkpoint("1", 2))
    assert (await store.load_all())["1"].position.frames[0].at == 2  # type: ignore[union-attr]
    store.forget("1")
    assert await store.load_all() == {}


@pytest.mark.parametrize("waiting, outcome", [(None, "caller_hangup"), ("transfer", "transferred")])
async def test_a_call_that_ended_while_nobody_owned_it_gets_one_record(emulator_factory, redis_server, tmp_path,
                                                                       waiting, outcome):
    emu = await emulator_factory(client_secret=SECRET)
    (tmp_path / "menu.yaml").write_text("steps: [answer, hangup]\n")
    store = RedisCheckpoints(redis_server.url, "lease-x")
    store.save(checkpoint("4242", 2, waiting=waiting))
    store.save(checkpoint("4343", 2, route_point="900"))  # not one of our route points: not ours to record
    await store.flush()
    config = WorkerConfig(pbx=PbxSettings(url=emu.url, client_id="900"), records=str(tmp_path / "calls.jsonl"),
                          routes=[Route(route_point="800", flow=str(tmp_path / "menu.yaml"))])
    worker = Worker(config, secret=SecretStr(SECRET), reload_interval=60, checkpoints=store)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.ready.wait(), 20)
        [record] = worker.completed
        assert record.call_id == "4242" and record.outcome == outcome
        assert record.taken_over == {"from": "host-a pid 1", "resumed": False}
        await store.flush()
        assert set(await store.load_all()) == {"4343"}  # recorded, so forgotten; the other stays
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await store.aclose()


async def test_a_call_id_that_is_not_unicode_stops_no_other_checkpoint(redis_server):
    store = RedisCheckpoints(redis_server.url, "lease-x")
    try:
        bad = checkpoint("1", 2).model_copy(update={"call_id": "\udcff../x"})
        store.save(bad)
        store.save(checkpoint("2", 5))
        await store.flush()
        assert set(await store.load_all()) == {"2"}
        store.forget(bad.call_id)
        store.save(checkpoint("3", 1))
        await store.flush()
        assert set(await store.load_all()) == {"2", "3"}
    finally:
        await store.aclose()
