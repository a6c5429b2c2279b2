"""One owner per client id, end to end: real ``ivr run`` processes against a real emulator process.

A second worker with the same PBX and client id waits as a standby (and says so), takes over
when the owner is killed with SIGKILL or stopped with SIGTERM, and then answers calls; with
``cluster.redis_url`` the lease lives in a real redis-server. ``ivr dial`` goes through the
running owner's control API instead of taking a token. Two workers that share a client id
without a lease are detected from the revoked tokens (log, metric, /readyz).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from cluster_rig import FLOW, SECRET, Cluster, eventually
from redis_server import RedisServer

from ivr.config import PbxSettings, Route, WorkerConfig
from ivr.worker.runner import Worker
from ivr.worker.service import start_status_server


@pytest.fixture
async def cluster(tmp_path: Path):
    c = Cluster(tmp_path)
    try:
        await c.up()
        yield c
    finally:
        await c.close()


def lease_dir(path: Path) -> str:
    return f"cluster: {{lease_dir: {path}}}\n"


async def test_second_worker_is_a_standby_and_takes_over_a_killed_owner(cluster: Cluster, tmp_path: Path):
    owner, owner_port = cluster.worker("a", cluster=lease_dir(tmp_path / "leases"))
    await cluster.ready(owner_port)
    standby, standby_port = cluster.worker("b", cluster=lease_dir(tmp_path / "leases"))

    async def waiting() -> bool:
        # /readyz says standby from the start; the log line comes once the lease was tried.
        got = await cluster.readyz(standby_port)
        return got is not None and got[0] == 503 and got[1].get("lease") == "standby" and "standby:" in standby.text()

    await eventually(waiting, what="the second worker to wait as a standby")
    assert f"held by {os.uname().nodename} pid {owner.proc.pid}" in standby.text()
    assert sum("standby:" in line for line in standby.text().splitlines()) == 1
    assert "token issued" not in standby.text()  # a standby never takes a token

    owner.proc.send_signal(signal.SIGKILL)
    owner.proc.wait(10)
    await cluster.ready(standby_port)
    assert "lease taken" in standby.text()
    await cluster.call_reaches_101()


async def test_sigterm_hands_the_lease_to_the_standby(cluster: Cluster, tmp_path: Path):
    owner, owner_port = cluster.worker("a", cluster=lease_dir(tmp_path / "leases"))
    await cluster.ready(owner_port)
    standby, standby_port = cluster.worker("b", cluster=lease_dir(tmp_path / "leases"))

    async def waiting() -> bool:
        return "standby:" in standby.text()

    await eventually(waiting, what="the standby line")
    owner.proc.send_signal(signal.SIGTERM)
    assert await owner.exit_status(30) == 0
    assert "lease released" in owner.text()
    await cluster.ready(standby_port)
    await cluster.call_reaches_101()


async def test_standbys_on_other_machines_wait_for_the_redis_lease(cluster: Cluster, tmp_path: Path):
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        # Different lease folders stand for different machines: only Redis can keep them apart.
        def redis_cluster(folder: str) -> str:
            return f"cluster: {{redis_url: '{redis.url}', lease_ttl: 1.0, lease_dir: {tmp_path / folder}}}\n"

        owner, owner_port = cluster.worker("a", cluster=redis_cluster("host-a"))
        await cluster.ready(owner_port)
        standby, standby_port = cluster.worker("b", cluster=redis_cluster("host-b"))

        async def waiting() -> bool:
            got = await cluster.readyz(standby_port)
            return got is not None and got[1].get("lease") == "standby" and "standby:" in standby.text()

        await eventually(waiting, what="the second worker to wait for the Redis lease")
        assert "Redis key" in standby.text() and f"pid {owner.proc.pid}" in standby.text()
        owner.proc.send_signal(signal.SIGKILL)
        owner.proc.wait(10)
        await cluster.ready(standby_port)  # after the dead owner's 1 s TTL
        await cluster.call_reaches_101()
    finally:
        redis.kill()


OUTBOUND = """\
steps:
  - say: "This is a reminder."
  - set: {reached: "yes"}
  - hangup
"""


async def test_ivr_dial_goes_through_the_running_owner_and_takes_no_token(cluster: Cluster, tmp_path: Path):
    owner, owner_port = cluster.worker("a", cluster=lease_dir(tmp_path / "leases"))
    await cluster.ready(owner_port)
    (tmp_path / "reminder.yaml").write_text(OUTBOUND)
    tokens_before = owner.text().count("token issued")
    done = subprocess.run([sys.executable, "-m", "ivr.cli", "dial", "+4930999", "--flow", "reminder.yaml",
                           "--config", str(tmp_path / "a.yaml")],
                          capture_output=True, text=True, env=cluster.env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "call to +4930999: ivr_hangup", done.stdout
    assert "token issued" not in done.stderr  # the owner dialled; ivr dial fetched no token
    got = await cluster.readyz(owner_port)
    assert got is not None and got[0] == 200  # the owner was not disturbed
    assert owner.text().count("token issued") == tokens_before
    records = [line for line in (tmp_path / "a-calls.jsonl").read_text().splitlines() if "+4930999" in line]
    assert len(records) == 1 and '"steps"' in records[0] and '"ivr_hangup"' in records[0]


async def test_ivr_dial_refuses_when_the_owner_publishes_no_control_api(cluster: Cluster, tmp_path: Path):
    owner, owner_port = cluster.worker("a", cluster=lease_dir(tmp_path / "leases") + "control: {enabled: false}\n")
    await cluster.ready(owner_port)
    (tmp_path / "reminder.yaml").write_text(OUTBOUND)
    done = subprocess.run([sys.executable, "-m", "ivr.cli", "dial", "+4930999", "--flow", "reminder.yaml",
                           "--config", str(tmp_path / "a.yaml")],
                          capture_output=True, text=True, env=cluster.env, timeout=120, cwd=tmp_path)
    assert done.returncode == 1
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "owned by a running worker" in err[0] and f"pid {owner.proc.pid}" in err[0], done.stderr
    assert "Traceback" not in done.stderr
    got = await cluster.readyz(owner_port)
    assert got is not None and got[0] == 200


async def test_ivr_dial_alone_is_the_owner_for_its_call(cluster: Cluster, tmp_path: Path):
    cluster.config("a", cluster=lease_dir(tmp_path / "leases"))
    (tmp_path / "reminder.yaml").write_text(OUTBOUND)
    done = subprocess.run([sys.executable, "-m", "ivr.cli", "dial", "+4930999", "--flow", "reminder.yaml",
                           "--config", str(tmp_path / "a.yaml")],
                          capture_output=True, text=True, env=cluster.env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "call to +4930999: ivr_hangup"


async def test_two_workers_sharing_a_client_id_without_a_lease_are_detected(emulator_factory, tmp_path: Path, caplog):
    """What a misconfigured deployment looks like: loud in the log, a metric, and /readyz 503."""
    caplog.set_level(logging.WARNING)
    emu = await emulator_factory(client_id="900", client_secret=SECRET)
    (tmp_path / "menu.yaml").write_text(FLOW)
    config = WorkerConfig(pbx=PbxSettings(url=emu.url, client_id="900"),
                          routes=[Route(route_point="800", flow=str(tmp_path / "menu.yaml"))], records=None)
    from pydantic import SecretStr

    workers = [Worker(config, secret=SecretStr(SECRET), reload_interval=60) for _ in range(2)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    status = None
    session = aiohttp.ClientSession()
    try:
        async def conflict() -> bool:
            # Calls keep both workers talking to the PBX, as in production: each request
            # with a revoked token fetches a new one, which revokes the other's.
            async with session.post(f"{emu.url}/_emulator/calls", json={"from": "+4930111", "to": "800"}) as resp:
                assert resp.status == 201
            return any(w.pbx is not None and w.pbx.tokens.conflict for w in workers)

        await eventually(conflict, timeout=60, what="the shared client id to be detected")
        assert any("another process is using client id 900" in r.getMessage() for r in caplog.records)
        flagged = next(w for w in workers if w.pbx is not None and w.pbx.tokens.conflict)
        assert flagged.pbx is not None and flagged.pbx.tokens.revocations >= 3
        assert b"ivr_token_revocations_total" in workers[0].metrics.render()
        status = await start_status_server(flagged, "127.0.0.1", 0)
        port = status.addresses[0][1]
        async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
            body = await resp.json()
            assert resp.status == 503 and "another process" in body["conflict"], body
    finally:
        await session.close()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if status is not None:
            await status.cleanup()
