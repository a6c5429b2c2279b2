"""Leases: one owner per (PBX, client id), locally (flock) and in a real redis-server.

Processes are real: a holder in another process killed with SIGKILL, a Redis killed and
started again. Waits are bounded polls with generous limits; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ivr.cluster import LOST, OWNER, STANDBY, UNCONFIRMED, LeaseStoreError, LocalLease, Ownership, RedisLease, lease_name

PBX = "https://pbx.example.com:5001"


async def eventually(check, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_lease_name_is_per_pbx_and_client_id_and_hides_both():
    a = lease_name(PBX, "900")
    assert a == lease_name("https://PBX.example.com:5001/", "900")  # host case and path do not matter
    assert a != lease_name(PBX, "901")
    assert a != lease_name("https://other.example.com:5001", "900")
    assert lease_name("https://pbx.example.com", "900") == lease_name("https://pbx.example.com:443", "900")
    assert "900" not in a and "example" not in a


# --- local lease: a lock file, across real processes -------------------------------------------

HOLDER = """
import asyncio, sys, time
from ivr.cluster import LocalLease
lease = LocalLease(sys.argv[1], "900", lease_dir=sys.argv[2])
assert asyncio.run(lease.try_acquire())
print("held", flush=True)
time.sleep(600)
"""


async def test_local_lease_is_exclusive_and_freed_when_its_holder_is_killed(tmp_path: Path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, PBX, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        mine = LocalLease(PBX, "900", lease_dir=tmp_path)
        assert not await mine.try_acquire()
        assert await mine.holder() == f"{os.uname().nodename} pid {holder.pid}"
        # Another client id on the same PBX is another lease.
        other = LocalLease(PBX, "901", lease_dir=tmp_path)
        assert await other.try_acquire()
        await other.release()

        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert await mine.try_acquire()  # the kernel dropped the dead holder's lock
        assert await mine.renew()
        assert await mine.holder() == f"{os.uname().nodename} pid {os.getpid()}"
        await mine.release()
        assert not await mine.renew()
    finally:
        holder.kill()
        holder.wait(10)


async def test_ownership_waits_as_a_standby_says_so_once_and_takes_over(tmp_path: Path, caplog):
    first = Ownership(LocalLease(PBX, "900", lease_dir=tmp_path), poll=0.02)
    second = Ownership(LocalLease(PBX, "900", lease_dir=tmp_path), poll=0.02)
    stop = asyncio.Event()
    assert await first.acquire(stop) and first.state == OWNER
    caplog.set_level(logging.INFO, logger="ivr.cluster")
    assert second.state == "starting"  # not a standby before it tried the lease (/readyz shows it)
    waiting = asyncio.create_task(second.acquire(stop))
    await asyncio.sleep(0.3)  # many polls
    assert not waiting.done() and second.state == STANDBY
    standby_lines = [r for r in caplog.records if r.getMessage().startswith("standby:")]
    assert len(standby_lines) == 1, [r.getMessage() for r in caplog.records]
    assert f"pid {os.getpid()}" in standby_lines[0].getMessage()
    await first.release()
    assert await asyncio.wait_for(waiting, 10) is True
    assert second.state == OWNER
    await second.release()


async def test_a_standby_stops_waiting_when_told_to(tmp_path: Path):
    first = Ownership(LocalLease(PBX, "900", lease_dir=tmp_path), poll=0.02)
    stop = asyncio.Event()
    assert await first.acquire(stop)
    second = Ownership(LocalLease(PBX, "900", lease_dir=tmp_path), poll=0.02)
    waiting = asyncio.create_task(second.acquire(stop))
    await asyncio.sleep(0.05)
    stop.set()
    assert await asyncio.wait_for(waiting, 10) is False
    await first.release()


# --- Redis lease, on a real redis-server ----------------------------------------------------------


async def test_local_standbys_are_seen_by_the_owner_and_gone_with_their_process(tmp_path: Path):
    owner = LocalLease(PBX, "900", lease_dir=tmp_path)
    standby = LocalLease(PBX, "900", lease_dir=tmp_path)
    assert await owner.try_acquire()
    assert await owner.standbys() == 0
    # A standby in another process, killed: the kernel drops its hold.
    code = (f"import asyncio, sys, time; from ivr.cluster import LocalLease; "
            f"asyncio.run(LocalLease({PBX!r}, '900', lease_dir={str(tmp_path)!r}).announce_standby()) or "
            "print('waiting', flush=True) or time.sleep(60)")
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "waiting"
        assert await owner.standbys() == 1
    finally:
        other.kill()
        other.wait(10)
    assert await owner.standbys() == 0
    await standby.announce_standby()
    await standby.announce_standby()  # again, as Ownership does while it waits: still one hold
    assert await owner.standbys() == 1
    await owner.release()
    assert await standby.try_acquire()  # the standby becomes the owner: it waits no longer
    assert await standby.standbys() == 0
    await standby.release()


async def test_redis_lease_is_exclusive_expires_after_its_ttl_and_is_released_at_once(redis_server):
    a = RedisLease(redis_server.url, PBX, "900", ttl=0.5)
    b = RedisLease(redis_server.url, PBX, "900", ttl=0.5)
    try:
        assert await a.try_acquire()
        assert not await b.try_acquire()
        assert (await b.holder() or "").endswith(f"pid {os.getpid()}")
        assert await a.renew()
        # a stops renewing (as a killed process does): the key expires, b takes it.
        await eventually(b.try_acquire, what="the dead holder's lease to expire")
        assert not await a.renew()  # a has lost it: it must not take it back
        await b.release()
        assert await a.try_acquire()  # released: free at once, no TTL to wait
    finally:
        await a.release()
        await b.release()


async def test_redis_lease_keys_are_per_client_id_and_prefix(redis_server):
    a = RedisLease(redis_server.url, PBX, "900", ttl=2, prefix="site-a")
    b = RedisLease(redis_server.url, PBX, "900", ttl=2, prefix="site-b")
    c = RedisLease(redis_server.url, PBX, "901", ttl=2, prefix="site-a")
    try:
        assert await a.try_acquire() and await b.try_acquire() and await c.try_acquire()
        assert a.key.startswith("site-a:lease:") and "900" not in a.key
    finally:
        for lease in (a, b, c):
            await lease.release()


async def test_the_owner_keeps_its_lease_through_a_redis_restart(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="ivr.cluster")
    owner = Ownership(RedisLease(redis_server.url, PBX, "900", ttl=0.6), poll=0.02)
    lost: list[bool] = []
    assert await owner.acquire(asyncio.Event())
    owner.keep(lambda: lost.append(True))
    try:
        redis_server.kill()

        async def unconfirmed() -> bool:
            return owner.state == UNCONFIRMED

        await eventually(unconfirmed, what="the owner to notice Redis is gone")
        assert any("keeping the calls in progress as the owner" in r.getMessage() for r in caplog.records)
        redis_server.start()  # empty: the key is gone; nobody else took it, so the owner takes it again

        async def confirmed() -> bool:
            return owner.state == OWNER

        await eventually(confirmed, what="the owner to renew after the restart")
        assert not lost
        standby = RedisLease(redis_server.url, PBX, "900", ttl=0.6)
        assert not await standby.try_acquire()
        await standby.release()
    finally:
        await owner.release()


async def test_the_owner_learns_it_lost_the_lease_and_says_who_has_it(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="ivr.cluster")
    owner = Ownership(RedisLease(redis_server.url, PBX, "900", ttl=0.5), poll=0.02, renew_every=0.05)
    lost = asyncio.Event()
    assert await owner.acquire(asyncio.Event())
    owner.keep(lost.set)
    import redis.asyncio as aioredis

    admin = aioredis.from_url(redis_server.url)
    try:
        key = owner.lease.key  # type: ignore[attr-defined]
        await admin.set(key, "other-host pid 4242 abcdef", px=5000)  # someone else holds it now
        await asyncio.wait_for(lost.wait(), 10)
        assert owner.state == LOST
        assert any("lease lost" in r.getMessage() and "other-host pid 4242" in r.getMessage() for r in caplog.records)
        await owner.release()
        assert await admin.get(key) == b"other-host pid 4242 abcdef"  # not ours to delete
    finally:
        await admin.aclose()


async def test_an_unreachable_redis_is_a_one_line_store_error():
    lease = RedisLease("redis://:hunter2@127.0.0.1:1/0", PBX, "900", ttl=0.5)
    with pytest.raises(LeaseStoreError) as info:
        await lease.try_acquire()
    text = str(info.value)
    assert "127.0.0.1:1" in text and "hunter2" not in text and "\n" not in text
    await lease.release()
