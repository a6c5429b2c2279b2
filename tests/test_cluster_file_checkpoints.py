"""Checkpoint files for standbys on one machine (ivr/cluster/file_checkpoints.py), on a real
folder: writes coalesce per call like Redis, files are private and replaced whole, hostile call
ids never leave the folder, and leftovers (cut writes, old calls, foreign files) are ignored."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

from ivr.cluster.checkpoints import Checkpoint
from ivr.cluster.file_checkpoints import FileCheckpoints, file_name
from ivr.config import PbxSettings, Route, WorkerConfig
from ivr.flow.position import FlowPosition, Frame
from ivr.worker.service import checkpoint_dir, make_checkpoints


def checkpoint(call_id: str, step: int) -> Checkpoint:
    position = FlowPosition(flow="menu.yaml", version="v1", frames=[Frame(branch=("steps",), at=step)],
                            waiting_for="digits", vars={"n": step})
    return Checkpoint(call_id=call_id, route_point="800", participant_id=7, owner="host-a pid 1",
                      started_at=1.0e9, caller_number="+4930111", position=position)


async def test_writes_coalesce_to_the_newest_per_call_and_deletions_go_through(tmp_path: Path):
    folder = tmp_path / "ivr3cx-x.calls"
    store = FileCheckpoints(folder)
    try:
        for step in range(50):  # a burst of steps between two flushes: one write
            store.save(checkpoint("1", step))
        store.save(checkpoint("2", 3))
        await store.flush()
        assert store.writes == 2 and store.round_trips == 1
        assert sorted(p.name for p in folder.iterdir()) == sorted([file_name("1"), file_name("2")])
        found = await FileCheckpoints(folder).load_all()  # what the next owner reads
        assert set(found) == {"1", "2"} and found["1"].position is not None
        assert found["1"].position.frames[0].at == 49 and found["1"].position.vars == {"n": 49}
        store.forget("1")
        await store.flush()
        assert set(await FileCheckpoints(folder).load_all()) == {"2"}
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())
    finally:
        await store.aclose()


async def test_the_writer_runs_by_itself_and_a_burst_costs_one_batch(tmp_path: Path):
    store = FileCheckpoints(tmp_path / "calls")
    try:
        for step in range(20):
            store.save(checkpoint("5", step))
        for _ in range(50):
            await asyncio.sleep(0.01)
            if store.writes:
                break
        assert store.writes == 1 and store.round_trips == 1
        assert (await store.load_all())["5"].position.frames[0].at == 19  # type: ignore[union-attr]
    finally:
        await store.aclose()


async def test_hostile_call_ids_never_leave_the_folder(tmp_path: Path):
    folder = tmp_path / "run" / "calls"
    store = FileCheckpoints(folder)
    hostile = ["../../escape", "/etc/passwd", "..", ".", "a/b", "x" * 5000, "nul\x00byte", "", "ü€😀"]
    try:
        for call_id in hostile:
            store.save(checkpoint(call_id, 1))
        store.save(checkpoint("\udcff", 1))  # not Unicode: cannot be saved, and stops nothing else
        await store.flush()
        assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == sorted(
            f"run/calls/{file_name(c)}" for c in hostile)
        assert set(await FileCheckpoints(folder).load_all()) == set(hostile)
        for call_id in hostile:
            store.forget(call_id)
        await store.flush()
        assert list(folder.iterdir()) == []
    finally:
        await store.aclose()


async def test_leftovers_are_ignored_or_cleaned_up(tmp_path: Path):
    folder = tmp_path / "calls"
    store = FileCheckpoints(folder, ttl=60)
    store.save(checkpoint("1", 2))
    store.save(checkpoint("2", 2))
    await store.aclose()  # flushes what is pending
    (folder / (file_name("3")[:-5] + ".tmp")).write_text('{"call_id": "3"')  # a write cut by kill -9
    (folder / "garbage.json").write_text("not json")
    (folder / file_name("9")).write_text(checkpoint("1", 9).model_dump_json())  # under another call's name
    old = folder / file_name("2")
    os.utime(old, (time.time() - 120, time.time() - 120))  # a call long gone
    found = await FileCheckpoints(folder, ttl=60).load_all()
    assert set(found) == {"1"} and found["1"].position.frames[0].at == 2  # type: ignore[union-attr]
    assert not old.exists() and not list(folder.glob("*.tmp"))


async def test_a_loose_folder_is_made_private(tmp_path: Path):
    folder = tmp_path / "calls"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    store = FileCheckpoints(folder)
    store.save(checkpoint("1", 1))
    await store.aclose()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_the_local_lease_gets_file_checkpoints_beside_it(tmp_path: Path):
    config = WorkerConfig(pbx=PbxSettings(url="http://pbx:5000", client_id="900"),
                          routes=[Route(route_point="800", flow="m.yaml")],
                          cluster={"lease_dir": str(tmp_path)})  # type: ignore[arg-type]
    store = make_checkpoints(config)
    assert isinstance(store, FileCheckpoints) and store.folder == checkpoint_dir(config)
    assert store.folder.parent == tmp_path and store.folder.name.endswith(".calls")
    memory = WorkerConfig.model_validate({**config.model_dump(), "cluster": {"lease_dir": str(tmp_path),
                                                                           "local_checkpoints": False}})
    assert not isinstance(make_checkpoints(memory), FileCheckpoints)
