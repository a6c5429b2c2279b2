"""Checkpoints: where each call's flow is, so another process can take the call over.

After every step (and as a waiting step starts) the worker hands the flow's position to the
store (docs/ha.md, part 2). Saving never blocks a call and never fails one: the Redis store
keeps the newest checkpoint of each call in memory and a writer task flushes them, one ``SET``
per call per flush, so a burst of steps costs one round trip. A call's checkpoint is deleted
when the call ends in this process; a checkpoint left behind belongs to a call whose owner
died, and the next owner resumes it.

Without Redis, checkpoints stay in memory: nothing survives the process, so a standby on the
same machine starts such calls' flows from the top instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from pydantic import BaseModel, Field

from ivr.flow.position import FlowPosition

from .lease import LeaseStoreError, _one_line, _redis_where

log = logging.getLogger("ivr.cluster")

CHECKPOINT_TTL_S = 3600.0  # a call's checkpoint outlives its owner by this much at most


class Checkpoint(BaseModel):
    """One call's position, with what its record and the takeover need."""

    call_id: str  # the PBX's callid
    route_point: str
    participant_id: int
    owner: str  # host and pid of the process that wrote it
    at: float = Field(default_factory=time.time)  # wall clock of the write
    started_at: float  # the call record's start (wall clock)
    caller_number: str = ""
    position: FlowPosition | None = None  # None: a flow that cannot resume (a Python flow)


def encode(checkpoint: Checkpoint) -> bytes | None:
    """The checkpoint as JSON, or None when it cannot be (a call id or variable holding text that
    is not valid Unicode: outside data). That call keeps its previous checkpoint; the writer and
    the other calls go on."""
    try:
        return checkpoint.model_dump_json().encode()
    except ValueError as exc:
        log.warning("checkpoints: call %r cannot be saved (%s); its previous checkpoint stays",
                    checkpoint.call_id[:64], " ".join(str(exc).split())[:200])
        return None


def key_bytes(namespace: str, call_id: str) -> bytes:
    """A store key for a call id, whatever text the PBX sent as that id."""
    return (namespace + call_id).encode("utf-8", "surrogatepass")


class CheckpointStore(Protocol):
    def save(self, checkpoint: Checkpoint) -> None:
        """Remember the newest checkpoint of a call; returns at once."""
        ...

    def forget(self, call_id: str) -> None:
        """The call ended here: delete its checkpoint; returns at once."""
        ...

    async def load_all(self) -> dict[str, Checkpoint]:
        """Every call's checkpoint left in the store, by call id."""
        ...

    async def aclose(self) -> None:
        """Flush what is pending (best effort) and close."""
        ...


class MemoryCheckpoints:
    """Checkpoints of this process only (the default without Redis)."""

    def __init__(self) -> None:
        self._by_call: dict[str, Checkpoint] = {}
        self.writes = 0

    def save(self, checkpoint: Checkpoint) -> None:
        self._by_call[checkpoint.call_id] = checkpoint
        self.writes += 1

    def forget(self, call_id: str) -> None:
        self._by_call.pop(call_id, None)

    async def load_all(self) -> dict[str, Checkpoint]:
        return dict(self._by_call)

    async def aclose(self) -> None:
        return None


class RedisCheckpoints:
    """Checkpoints in Redis under ``<prefix>:call:<lease name>:<call id>``, with a TTL.

    ``save`` and ``forget`` only mark the call dirty; one writer task sends what is dirty,
    newest value per call, in one pipeline. When Redis is unreachable the writer keeps the
    newest values and retries: calls go on either way (the owner says so once).
    """

    def __init__(self, redis_url: str, lease_name: str, *, prefix: str = "ivr3cx", ttl: float = CHECKPOINT_TTL_S,
                 client: Any = None) -> None:
        self.namespace = f"{prefix}:call:{lease_name}:"
        self.ttl_ms = int(ttl * 1000)
        self._where = _redis_where(redis_url)
        if client is None:
            import redis.asyncio as aioredis

            client = aioredis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._redis = client
        self._dirty: dict[str, Checkpoint | None] = {}  # None: delete
        self._kick = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._failing = False
        self.writes = 0  # checkpoints sent (a benchmark counts them)
        self.round_trips = 0  # pipelines sent

    def _start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="checkpoint-writer")
        self._kick.set()

    def save(self, checkpoint: Checkpoint) -> None:
        self._dirty[checkpoint.call_id] = checkpoint
        self._start()

    def forget(self, call_id: str) -> None:
        self._dirty[call_id] = None
        self._start()

    async def _write_loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                await self.flush()
            except LeaseStoreError as exc:
                if not self._failing:
                    log.warning("checkpoints: %s; calls go on, checkpoints are retried", exc)
                    self._failing = True
                await asyncio.sleep(1.0)
                self._kick.set()
            else:
                if self._failing:
                    log.info("checkpoints: Redis at %s reachable again", self._where)
                    self._failing = False

    async def flush(self) -> None:
        """Send every pending checkpoint (and deletion) now."""
        from redis.exceptions import RedisError

        if not self._dirty:
            return
        batch, self._dirty = self._dirty, {}
        pipe = self._redis.pipeline(transaction=False)
        for call_id, checkpoint in batch.items():
            key = key_bytes(self.namespace, call_id)
            if checkpoint is None:
                pipe.delete(key)
            elif (data := encode(checkpoint)) is not None:
                pipe.set(key, data, px=self.ttl_ms)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            for call_id, checkpoint in batch.items():  # keep them, unless newer ones came meanwhile
                self._dirty.setdefault(call_id, checkpoint)
            raise LeaseStoreError(f"Redis at {self._where}: saving checkpoints failed: {_one_line(exc)}") from None
        self.round_trips += 1
        self.writes += sum(1 for c in batch.values() if c is not None)

    async def load_all(self) -> dict[str, Checkpoint]:
        from redis.exceptions import RedisError

        found: dict[str, Checkpoint] = {}
        try:
            keys = [k async for k in self._redis.scan_iter(match=self.namespace + "*", count=500)]
            values = await self._redis.mget(keys) if keys else []
        except (RedisError, OSError) as exc:
            raise LeaseStoreError(f"Redis at {self._where}: reading checkpoints failed: {_one_line(exc)}") from None
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue
            try:
                checkpoint = Checkpoint.model_validate_json(value)
            except ValueError:
                log.warning("checkpoints: %s is not a checkpoint of this version; ignored",
                            key.decode(errors="replace") if isinstance(key, bytes) else key)
                continue
            found[checkpoint.call_id] = checkpoint
        return found

    async def aclose(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            try:
                await writer
            except asyncio.CancelledError:
                pass
        try:
            await asyncio.wait_for(self.flush(), 2.0)
        except (TimeoutError, LeaseStoreError):
            pass
        try:
            await self._redis.aclose()
        except Exception:  # noqa: BLE001 - closing a broken connection must not mask the shutdown
            pass
