"""A campaign's state mirrored in Redis when the worker runs in a cluster (docs/campaigns.md).

The state file on disk stays the primary copy; with ``cluster.redis_url`` every save is also
sent to Redis (the newest value, by a writer task, never waiting in the campaign's path), and
a campaign started on another machine of the cluster resumes from whichever copy is newer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Any

from .results import StateFile

log = logging.getLogger("ivr.campaign")


def campaign_key(prefix: str, contacts: str, flow: str) -> str:
    """One campaign is one call list run through one flow; the key names neither."""
    digest = hashlib.sha256(f"{contacts}|{flow}".encode()).hexdigest()[:24]
    return f"{prefix}:campaign:{digest}"


class MirroredState(StateFile):
    """A StateFile whose saves are copied to a Redis key (stamped, newest wins on load)."""

    def __init__(self, path: Any, redis_url: str, key: str, *, client: Any = None) -> None:
        super().__init__(path)
        self.key = key
        if client is None:
            import redis.asyncio as aioredis

            client = aioredis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._redis = client
        self._pending: str | None = None
        self._kick = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._failing = False
        self._closing = False

    async def load_newest(self) -> dict[str, Any] | None:
        """The newer of the file and the Redis copy (by their ``saved_at`` stamps)."""
        from redis.exceptions import RedisError

        local = self.load()
        try:
            raw = await self._redis.get(self.key)
        except (RedisError, OSError) as exc:
            log.warning("campaign state: Redis unreachable (%s); using the file", " ".join(str(exc).split()))
            return local
        try:
            remote = json.loads(raw) if raw else None
        except ValueError:
            remote = None
        if not isinstance(remote, dict) or remote.get("version") != 1:
            return local
        if local is None or float(remote.get("saved_at", 0)) > float(local.get("saved_at", 0)):
            return remote
        return local

    def save(self, state: dict[str, Any]) -> None:
        state = {**state, "saved_at": time.time()}
        super().save(state)
        self._pending = json.dumps(state, separators=(",", ":"))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="campaign-state")
        self._kick.set()

    async def _write_loop(self) -> None:
        from redis.exceptions import RedisError

        while True:
            await self._kick.wait()
            self._kick.clear()
            value, self._pending = self._pending, None
            if value is None:
                if self._closing:
                    return
                continue
            try:
                await self._redis.set(self.key, value)
            except (RedisError, OSError) as exc:
                if self._pending is None:
                    self._pending = value
                if not self._failing:
                    log.warning("campaign state: Redis unreachable (%s); the file has it", " ".join(str(exc).split()))
                    self._failing = True
                if self._closing:
                    return  # at shutdown the file has the state; do not wait for Redis
                await asyncio.sleep(1.0)
                self._kick.set()
            else:
                self._failing = False
                if self._closing and self._pending is None:
                    return

    async def aclose(self) -> None:
        """Send the last state (the writer drains, then ends; at most 3 s), then close."""
        self._closing = True
        writer, self._writer = self._writer, None
        if writer is not None:
            self._kick.set()
            try:
                await asyncio.wait_for(writer, 3.0)
            except (TimeoutError, Exception):  # noqa: BLE001 - best effort: the file has the state
                pass
        await self._redis.aclose()
