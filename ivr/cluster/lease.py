"""Leases: which one process may talk to the PBX for one API client id.

3CX keeps one active access token per client id: a second process with the same credentials
revokes the first one's token, cuts its audio streams and both end up handling the same calls.
So the process that talks to the PBX holds a lease first, and every other process with the
same PBX and client id waits as a standby (docs/ha.md).

Two stores, one interface:

- :class:`LocalLease`: an exclusive ``flock`` on a file named after the PBX and client id, for
  processes on one machine. The kernel drops it when its holder dies, even on ``kill -9``.
- :class:`RedisLease`: a Redis key with a time to live, renewed by its holder, for processes
  on several machines. A holder that dies stops renewing; the key expires after ``ttl``.

Both are plain objects with no background work; :class:`ivr.cluster.ownership.Ownership`
drives them (waiting, renewing, stepping down).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit


class LeaseStoreError(Exception):
    """The lease's store cannot be reached (Redis down or unreachable); one line."""


class Lease(Protocol):
    """A lease on one (PBX, client id): at most one holder at a time."""

    @property
    def description(self) -> str:
        """Where the lease lives, for log lines (no secrets)."""
        ...

    @property
    def ttl(self) -> float:
        """Seconds the lease outlives a holder that stopped renewing (0: it dies with the holder)."""
        ...

    async def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; True when this process holds it now."""
        ...

    async def holder(self) -> str | None:
        """Who holds the lease (``host pid N``), or None when free or unknown."""
        ...

    async def renew(self) -> bool:
        """Extend our hold: True while it is ours, False once someone else holds it.

        Raises :class:`LeaseStoreError` when the store cannot be reached.
        """
        ...

    async def release(self) -> None:
        """Give the lease up (a standby may take it at once). Never raises."""
        ...

    async def announce_standby(self) -> None:
        """Say that this process waits for the lease (an owner that stops hands its calls over
        only when someone waits); a lease without such a registry does nothing."""
        ...

    async def standbys(self) -> int:
        """How many processes wait for the lease now (0 when unknown)."""
        ...

    async def advertise(self, url: str) -> None:
        """While we hold the lease, tell tools on other machines where our control API listens
        (its URL, never its token); it goes with the lease. A local lease does nothing: local
        tools read the file the owner writes beside it."""
        ...

    async def advertised(self) -> str | None:
        """The control API URL the current holder advertises, or None (none, or no holder)."""
        ...


def lease_name(pbx_url: str, client_id: str) -> str:
    """A stable, filesystem- and key-safe name for (PBX, client id): the host, port and id hashed."""
    parts = urlsplit(pbx_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ident = f"{(parts.hostname or '').lower()}:{port}|{client_id}"
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def owner_label() -> str:
    """How this process names itself as a holder: host and pid (nothing secret)."""
    return f"{socket.gethostname()} pid {os.getpid()}"


class LocalLease:
    """An exclusive ``flock`` on ``<lease_dir>/ivr3cx-<name>.lock``: one holder per machine.

    The lock belongs to the open file: the kernel releases it when the process exits in any
    way, so a standby can take over a killed owner at once. The file also says who holds it.
    """

    def __init__(self, pbx_url: str, client_id: str, *, lease_dir: str | Path | None = None) -> None:
        folder = Path(lease_dir) if lease_dir else Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
        self.path = folder / f"ivr3cx-{lease_name(pbx_url, client_id)}.lock"
        # Standbys hold a shared flock on this file while they wait: the owner sees whether anyone
        # waits (an exclusive try fails), and the kernel drops a dead standby's hold.
        self.standby_path = self.path.with_suffix(".standby")
        self._client_id = client_id
        self._fd: int | None = None
        self._standby_fd: int | None = None

    @property
    def description(self) -> str:
        return f"local lock {self.path} (client id {self._client_id})"

    @property
    def ttl(self) -> float:
        return 0.0

    async def try_acquire(self) -> bool:
        import fcntl  # POSIX only: the worker runs on Linux or macOS

        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LeaseStoreError(f"cannot open the lease file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        self._stop_waiting()  # an owner is no standby: its shared hold would look like one
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"holder": owner_label(), "since": time.time()}).encode(), 0)
        return True

    async def holder(self) -> str | None:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return None
        holder = info.get("holder") if isinstance(info, dict) else None
        return str(holder) if holder else None

    async def renew(self) -> bool:
        return self._fd is not None

    async def announce_standby(self) -> None:
        import fcntl

        if self._standby_fd is not None:
            return
        try:
            fd = os.open(self.standby_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return  # the owner then drains instead of handing over: slower, never wrong
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return
        self._standby_fd = fd

    async def standbys(self) -> int:
        import fcntl

        try:
            fd = os.open(self.standby_path, os.O_RDWR)
        except OSError:
            return 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return 1  # someone holds it shared: at least one standby waits
        finally:
            os.close(fd)  # closing drops our exclusive try at once
        return 0

    def _stop_waiting(self) -> None:
        fd, self._standby_fd = self._standby_fd, None
        if fd is not None:
            os.close(fd)

    async def advertise(self, url: str) -> None:
        return None

    async def advertised(self) -> str | None:
        return None

    async def release(self) -> None:
        self._stop_waiting()
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)  # closing the file drops the flock


# Extend the key only if we hold it; take it again if it expired while nobody else took it
# (Redis restarted, or we were cut off for longer than the TTL); 0 when someone else holds it.
# While it is ours, the control API's advertisement (KEYS[2], ARGV[3] unless empty) lives as
# long as the lease: it can never outlive it by more than one renewal.
_RENEW = """
local v = redis.call('GET', KEYS[1])
local r = 0
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  r = 1
elseif not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  r = 2
else
  return 0
end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
end
return r
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease:
    """A Redis key ``<prefix>:lease:<name>`` holding its holder's label, with a TTL.

    The holder renews it every ``ttl / 3``; a holder that dies leaves it to expire. The value
    is ``<host pid N> <random id>``: the random part keeps a restarted process with the same
    pid from mistaking an old lease for its own.
    """

    def __init__(self, redis_url: str, pbx_url: str, client_id: str, *, ttl: float = 3.0,
                 prefix: str = "ivr3cx", client: Any = None) -> None:
        if ttl <= 0:
            raise ValueError("RedisLease: ttl must be > 0")
        self.key = f"{prefix}:lease:{lease_name(pbx_url, client_id)}"
        self.control_key = f"{prefix}:control:{lease_name(pbx_url, client_id)}"
        self._advert = ""  # JSON {"url", "owner"} once advertise() was called
        self._standby_prefix = f"{prefix}:standby:{lease_name(pbx_url, client_id)}:"
        self._ttl = float(ttl)
        self._ttl_ms = max(1, int(ttl * 1000))
        self._me = f"{owner_label()} {uuid.uuid4().hex[:12]}"
        self._client_id = client_id
        self._redis_where = _redis_where(redis_url)
        if client is None:
            import redis.asyncio as aioredis  # the cluster extra: pip install 'ivr3cx[cluster]'

            # Short timeouts: a Redis that does not answer must never hold up the worker.
            client = aioredis.from_url(redis_url, socket_timeout=max(0.2, ttl / 3),
                                       socket_connect_timeout=max(0.2, ttl / 3), retry_on_timeout=False)
        self._redis = client

    @property
    def description(self) -> str:
        return f"Redis key {self.key} on {self._redis_where} (client id {self._client_id})"

    @property
    def ttl(self) -> float:
        return self._ttl

    async def _call(self, what: str, coro: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise LeaseStoreError(f"Redis at {self._redis_where}: {what} failed: {_one_line(exc)}") from None

    async def try_acquire(self) -> bool:
        done = await self._call("SET NX", self._redis.set(self.key, self._me, nx=True, px=self._ttl_ms))
        if done:
            return True
        return bool(await self.renew())  # already ours (a retry after a lost answer)

    async def holder(self) -> str | None:
        value = await self._call("GET", self._redis.get(self.key))
        if value is None:
            return None
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        return text.rsplit(" ", 1)[0]

    async def renew(self) -> bool:
        result = await self._call("renew", self._redis.eval(_RENEW, 2, self.key, self.control_key, self._me,
                                                            self._ttl_ms, self._advert))
        return int(result) != 0

    async def advertise(self, url: str) -> None:
        # The holder's full lease value goes with the URL: a reader trusts an advertisement only
        # when it names the lease's current holder.
        self._advert = json.dumps({"url": url, "owner": self._me})
        await self.renew()  # a failure here is retried by every renewal

    async def advertised(self) -> str | None:
        lease, advert = await self._call("MGET control", self._redis.mget([self.key, self.control_key]))
        if lease is None or advert is None:
            return None
        try:
            data = json.loads(advert)
        except ValueError:
            return None
        owner = lease.decode(errors="replace") if isinstance(lease, bytes) else str(lease)
        if not isinstance(data, dict) or data.get("owner") != owner or not isinstance(data.get("url"), str):
            return None
        return str(data["url"])

    async def announce_standby(self) -> None:
        # Lives three TTLs (10 s at least, so a standby slowed by load is not missed and the
        # owner drains instead of handing over); a standby that died drops out by itself.
        await self._call("SET standby", self._redis.set(self._standby_prefix + self._me.rsplit(" ", 1)[-1],
                                                        self._me, px=max(self._ttl_ms * 3, 10_000)))

    async def standbys(self) -> int:
        keys = await self._call("SCAN standbys", _collect(self._redis.scan_iter(match=self._standby_prefix + "*")))
        mine = self._standby_prefix + self._me.rsplit(" ", 1)[-1]
        return sum(1 for k in keys if (k.decode() if isinstance(k, bytes) else k) != mine)

    async def release(self) -> None:
        try:
            await self._call("release", self._redis.eval(_RELEASE, 2, self.key, self.control_key, self._me))
            await self._call("DEL standby", self._redis.delete(self._standby_prefix + self._me.rsplit(" ", 1)[-1]))
        except LeaseStoreError:
            pass  # it expires by itself after ttl
        try:
            await self._redis.aclose()
        except Exception:
            pass


async def _collect(items: Any) -> list[Any]:
    return [item async for item in items]


def _redis_where(url: str) -> str:
    """host:port/db of a Redis URL, without its password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


def _one_line(exc: BaseException) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())
