"""The control API across machines (docs/ha.md, part 5): real processes, a real emulator process
and a real redis-server. Separate lease folders stand for separate machines, so the file an
owner publishes beside its lease file is not there for the tool: it finds the owner's URL in
Redis and sends the token its own config gives. Nothing but the owner ever takes a token: the
emulator counts the tokens it issues."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cluster_rig import Cluster, eventually
from redis_server import RedisServer

from ivr.cluster import RedisLease
from ivr.config import ConfigError
from ivr.config_loader import parse_config

TOKEN = "control-token-for-the-tests-0123456789"
OUTBOUND = """\
steps:
  - say: "This is a reminder."
  - set: {reached: "yes"}
  - hangup
"""
SLOW = """\
steps:
  - pause: 6
  - set: {reached: "yes"}
  - hangup
"""


@pytest.fixture
async def rig(tmp_path: Path):
    redis = RedisServer(tmp_path)
    redis.start()
    cluster = Cluster(tmp_path)
    cluster.env["IVR_CONTROL_TOKEN"] = TOKEN
    (tmp_path / "reminder.yaml").write_text(OUTBOUND)
    (tmp_path / "slow.yaml").write_text(SLOW)
    (tmp_path / "list.csv").write_text("number,name\n101,Anna\n102,Bob\n")
    try:
        await cluster.up()
        yield cluster, redis
    finally:
        await cluster.close()
        redis.kill()


def machine(redis: RedisServer, tmp_path: Path, host: str, *, ttl: float = 1.0, control: str = "") -> str:
    """The cluster part of a config on "machine" ``host``: its own lease folder, the shared Redis."""
    return (f"cluster: {{redis_url: '{redis.url}', lease_ttl: {ttl}, lease_dir: {tmp_path / host}}}\n"
            f"control: {{token_env: IVR_CONTROL_TOKEN{control}}}\n")


async def tokens_issued(cluster: Cluster) -> int:
    async with cluster.session.get(f"{cluster.url}/_emulator/health") as resp:
        return int((await resp.json())["tokens_issued"])


def tool(cluster: Cluster, tmp_path: Path, config: Path, *args: str, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivr.cli", *args, "--config", str(config)], capture_output=True,
                          text=True, env=env or cluster.env, timeout=120, cwd=cwd or tmp_path)


def dial(cluster: Cluster, tmp_path: Path, config: Path, flow: str = "reminder.yaml",
         env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return tool(cluster, tmp_path, config, "dial", "+4930999", "--flow", flow, env=env, cwd=cwd)


def records(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    path = tmp_path / f"{name}-calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def owner_on_host_a(cluster: Cluster, redis: RedisServer, tmp_path: Path, **kw: Any) -> tuple[Any, int]:
    owner, port = cluster.worker("a", cluster=machine(redis, tmp_path, "host-a", **kw))
    await cluster.ready(port)

    async def advertised() -> bool:
        return "control API on" in owner.text()

    await eventually(advertised, what="the owner's control API")
    return owner, port


async def test_ivr_dial_on_another_machine_places_its_call_through_the_owner(rig, tmp_path: Path):
    cluster, redis = rig
    owner, port = await owner_on_host_a(cluster, redis, tmp_path)
    config_b, _ = cluster.config("b", cluster=machine(redis, tmp_path, "host-b"))
    before = await tokens_issued(cluster)

    done = await asyncio.to_thread(dial, cluster, tmp_path, config_b)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "call to +4930999: ivr_hangup", done.stdout
    assert not list((tmp_path / "host-b").glob("*.control.json"))  # it found the owner through Redis
    assert await tokens_issued(cluster) == before  # the owner's token placed the call: no second token
    [record] = [r for r in records(tmp_path, "a") if r["caller_number"] == "+4930999"]
    assert record["direction"] == "outbound" and record["outcome"] == "ivr_hangup"
    assert not records(tmp_path, "b")
    assert TOKEN not in owner.text() and TOKEN not in done.stderr + done.stdout
    got = await cluster.readyz(port)
    assert got is not None and got[0] == 200


async def test_a_campaign_on_another_machine_runs_in_the_owner(rig, tmp_path: Path):
    cluster, redis = rig
    await owner_on_host_a(cluster, redis, tmp_path)
    config_b, _ = cluster.config("b", cluster=machine(redis, tmp_path, "host-b"))
    before = await tokens_issued(cluster)
    done = await asyncio.to_thread(tool, cluster, tmp_path, config_b, "campaign", "run", "list.csv",
                                   "--flow", "reminder.yaml", "--rate", "5")
    assert done.returncode == 0, done.stderr
    assert "runs in the worker" in done.stdout and "2/2 done" in done.stdout
    assert await tokens_issued(cluster) == before
    assert {r["caller_number"] for r in records(tmp_path, "a")} == {"101", "102"}


async def test_a_wrong_token_is_refused_with_one_line(rig, tmp_path: Path):
    cluster, redis = rig
    _owner, _port = await owner_on_host_a(cluster, redis, tmp_path)
    config_b, _ = cluster.config("b", cluster=machine(redis, tmp_path, "host-b"))
    before = await tokens_issued(cluster)
    done = await asyncio.to_thread(dial, cluster, tmp_path, config_b,
                                   env={**cluster.env, "IVR_CONTROL_TOKEN": "not-the-owners-token"})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused our token (HTTP 401)" in lines[0], done.stderr
    assert "not-the-owners-token" not in done.stderr and TOKEN not in done.stderr
    campaign = await asyncio.to_thread(tool, cluster, tmp_path, config_b, "campaign", "status",
                                       env={**cluster.env, "IVR_CONTROL_TOKEN": "wrong"})
    assert campaign.returncode == 1 and len(campaign.stderr.strip().splitlines()) == 1
    assert "HTTP 401" in campaign.stderr and campaign.stderr.startswith("ivr campaign:")
    assert await tokens_issued(cluster) == before
    assert not [r for r in records(tmp_path, "a") if r["caller_number"] == "+4930999"]


async def test_an_owner_that_cannot_be_reached_is_one_line_and_no_token_is_taken(rig, tmp_path: Path):
    cluster, redis = rig
    # A long TTL: the dead owner's lease (and its advertised URL) outlive it for a while.
    owner, _port = await owner_on_host_a(cluster, redis, tmp_path, ttl=30.0)
    config_b, _ = cluster.config("b", cluster=machine(redis, tmp_path, "host-b", ttl=30.0))
    owner.proc.send_signal(signal.SIGKILL)
    owner.proc.wait(10)
    before = await tokens_issued(cluster)
    done = await asyncio.to_thread(dial, cluster, tmp_path, config_b)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"pid {owner.proc.pid}" in lines[0] and "could not be reached at http://127.0.0.1:" in lines[0]
    assert "no token is taken" in lines[0] and "Traceback" not in done.stderr
    assert await tokens_issued(cluster) == before
    lease = RedisLease(redis.url, cluster.url, "900", ttl=30.0)
    try:
        assert f"pid {owner.proc.pid}" in (await lease.holder() or "")  # ivr dial did not take the lease
    finally:
        await lease.release()


async def test_alone_ivr_dial_keeps_the_redis_lease_for_the_whole_call(rig, tmp_path: Path):
    """With no owner, ``ivr dial`` takes the lease and renews it: a standby that starts meanwhile
    waits until the call has ended instead of taking over (and a token) once the TTL passed."""
    cluster, redis = rig
    config_b, _ = cluster.config("b", cluster=machine(redis, tmp_path, "host-b", ttl=0.5))
    dialling = asyncio.create_task(asyncio.to_thread(dial, cluster, tmp_path, config_b, "slow.yaml"))
    lease = RedisLease(redis.url, cluster.url, "900", ttl=0.5)
    try:
        async def dial_owns() -> bool:
            return (await lease.holder()) is not None

        await eventually(dial_owns, what="ivr dial to take the lease")
        standby, standby_port = cluster.worker("a", cluster=machine(redis, tmp_path, "host-a", ttl=0.5))
        during_the_call = set()  # the standby's lease states seen while the dialled call was live
        while True:
            got = await cluster.readyz(standby_port)
            async with cluster.session.get(f"{cluster.url}/_emulator/calls") as resp:
                calls = [c for c in await resp.json() if c["direction"] == "outbound"]
            live = bool(calls) and calls[0]["state"] != "ended"
            if got is not None and live:  # live after the answer: it was live when the state was read
                during_the_call.add(got[1]["lease"])
            if (calls and not live) or (dialling.done() and not calls):
                break
            await asyncio.sleep(0.1)
        done = await dialling
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "call to +4930999: ivr_hangup"
        # Waiting (once it had tried the lease), never the owner while the call lasted.
        assert "standby" in during_the_call and during_the_call <= {"starting", "standby"}, during_the_call
        await cluster.ready(standby_port)  # it takes over once ivr dial let go
        assert "token issued" in standby.text()
    finally:
        await lease.release()


def test_a_non_loopback_bind_needs_a_token(tmp_path: Path):
    (tmp_path / "m.yaml").write_text("steps: [answer]\n")
    base = "pbx: {url: 'http://127.0.0.1:1', client_id: '900', client_secret_env: X}\n" \
           "routes: [{route_point: '800', flow: m.yaml}]\n"
    with pytest.raises(ConfigError) as err:
        parse_config(base + "control: {host: 0.0.0.0}\n", "ivr.yaml", base_dir=tmp_path)
    [line] = str(err.value).splitlines()
    assert line.startswith("ivr.yaml:3:") and "0.0.0.0 is not a loopback address" in line and "token_env" in line
    for ok in ("control: {host: 127.0.0.1}\n", "control: {host: '::1'}\n", "control: {host: localhost}\n",
               "control: {host: 0.0.0.0, token_env: T}\n", "control: {host: 0.0.0.0, enabled: false}\n"):
        parse_config(base + ok, "ivr.yaml", base_dir=tmp_path)


async def test_the_advertised_url_lives_with_the_lease(redis_server):
    owner = RedisLease(redis_server.url, "http://pbx:5000", "900", ttl=0.5)
    tool = RedisLease(redis_server.url, "http://pbx:5000", "900", ttl=0.5)
    try:
        assert await tool.advertised() is None
        assert await owner.try_acquire()
        await owner.advertise("https://host-a:9443")
        assert await tool.advertised() == "https://host-a:9443"
        await owner.release()  # released: the advertisement goes with the lease
        assert await tool.advertised() is None

        owner = RedisLease(redis_server.url, "http://pbx:5000", "900", ttl=0.5)
        assert await owner.try_acquire()
        await owner.advertise("https://host-a:9443")
        await asyncio.sleep(0.8)  # the owner died without renewing: both expire
        assert await tool.advertised() is None
        # Another holder's lease with a stale advertisement of the previous one: not trusted.
        assert await tool.try_acquire()
        await tool._redis.set(owner.control_key, json.dumps({"url": "https://stale:1", "owner": "x pid 1 abc"}))
        assert await tool.advertised() is None
    finally:
        await owner.release()
        await tool.release()


async def test_over_tls_the_tool_checks_the_owners_certificate(rig, tmp_path: Path):
    trustme = pytest.importorskip("trustme")
    cluster, redis = rig
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    tls = ", tls: {cert: cert.pem, key: key.pem}"
    owner, _port = await owner_on_host_a(cluster, redis, tmp_path, control=tls)
    assert "control API on https://127.0.0.1:" in owner.text()
    before = await tokens_issued(cluster)
    trusting, _ = cluster.config("b", cluster=machine(redis, tmp_path, "host-b", control=", verify_tls: ca.pem"))
    elsewhere = tmp_path / "elsewhere"  # the CA path is relative to the config file, not to the folder we run in
    elsewhere.mkdir()
    done = await asyncio.to_thread(dial, cluster, tmp_path, trusting, cwd=elsewhere)
    assert done.returncode == 0 and done.stdout.strip() == "call to +4930999: ivr_hangup", done.stderr

    default, _ = cluster.config("c", cluster=machine(redis, tmp_path, "host-c"))  # the system CAs only
    refused = await asyncio.to_thread(dial, cluster, tmp_path, default)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not be reached at https://127.0.0.1:" in lines[0], refused.stderr
    assert "certificate" in lines[0].lower()
    assert await tokens_issued(cluster) == before
    assert len([r for r in records(tmp_path, "a") if r["caller_number"] == "+4930999"]) == 1


async def test_a_loopback_url_of_an_owner_on_another_host_says_why_it_cannot_work(redis_server, tmp_path, monkeypatch):
    from cluster_rig import free_port

    from ivr.config import PbxSettings, Route, WorkerConfig
    from ivr.worker.reach import OwnerUnavailable, find_owner

    monkeypatch.setenv("IVR_CONTROL_TOKEN", TOKEN)
    config = WorkerConfig(pbx=PbxSettings(url="http://pbx:5000", client_id="900"),
                          routes=[Route(route_point="800", flow="m.yaml")], base_dir=tmp_path,
                          cluster={"redis_url": redis_server.url, "lease_dir": str(tmp_path)},  # type: ignore[arg-type]
                          control={"token_env": "IVR_CONTROL_TOKEN"})  # type: ignore[arg-type]
    lease = RedisLease(redis_server.url, "http://pbx:5000", "900")
    holder = "other-host pid 42 0123456789ab"  # an owner elsewhere that listens on its own loopback
    await lease._redis.set(lease.key, holder, px=30_000)
    await lease._redis.set(lease.control_key, json.dumps({"url": f"http://127.0.0.1:{free_port()}", "owner": holder}))
    try:
        with pytest.raises(OwnerUnavailable) as err:
            await find_owner(config, lease)
        [line] = str(err.value).splitlines()
        assert "other-host pid 42" in line and "could not be reached at http://127.0.0.1:" in line
        assert "listens on loopback on other-host" in line and "no token is taken" in line
    finally:
        await lease._redis.aclose()
