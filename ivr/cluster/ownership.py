"""``Ownership``: wait for a lease as a standby, keep it as the owner, notice losing it.

States (``state``, shown on ``/readyz``):

- ``starting``: the lease has not been tried yet.
- ``standby``: another process holds the lease; we poll until it is free.
- ``owner``: we hold it and renewed it within the last ``ttl``.
- ``unconfirmed``: we hold it, but its store (Redis) has not answered lately. The owner keeps
  its calls and says so: a Redis restart must never cost a call. If the store comes back and
  the lease is still (or again) ours, we are ``owner`` again.
- ``lost``: someone else holds it now. The process must stop talking to the PBX.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from .lease import Lease, LeaseStoreError

log = logging.getLogger("ivr.cluster")

STARTING, STANDBY, OWNER, UNCONFIRMED, LOST = "starting", "standby", "owner", "unconfirmed", "lost"


class Ownership:
    """Drives one :class:`Lease` for the life of a worker process."""

    def __init__(self, lease: Lease, *, poll: float = 0.25, renew_every: float | None = None) -> None:
        self.lease = lease
        self.poll = poll
        # A third of the TTL: two renewals may fail before the lease could expire.
        self.renew_every = renew_every if renew_every is not None else (lease.ttl / 3 if lease.ttl else 1.0)
        self.state = STARTING
        self._keeper: asyncio.Task[None] | None = None

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until the lease is ours (True) or ``stop`` is set (False).

        Says once, in one line, that this process is a standby and who it waits for.
        """
        said_standby = said_store = False
        announced = -math.inf
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                if await self.lease.try_acquire():
                    self.state = OWNER
                    log.info("lease taken: this process owns %s", self.lease.description)
                    return True
                self.state = STANDBY
                if loop.time() - announced >= max(self.lease.ttl, self.poll):
                    await self.lease.announce_standby()
                    announced = loop.time()
                if not said_standby:
                    holder = await self.lease.holder()
                    log.warning("standby: %s is held by %s; waiting to take over",
                                self.lease.description, holder or "another process")
                    said_standby = True
            except LeaseStoreError as exc:
                if not said_store:
                    log.warning("standby: cannot reach the lease store (%s); retrying", exc)
                    said_store = True
            try:
                await asyncio.wait_for(stop.wait(), self.poll)
            except TimeoutError:
                pass
        return False

    def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew the lease in the background; call ``on_lost`` once if someone else takes it."""
        if self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(self._keep(on_lost), name="lease-keeper")

    async def _keep(self, on_lost: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                ours = await self.lease.renew()
            except LeaseStoreError as exc:
                if self.state == OWNER:
                    log.warning("lease store unreachable (%s): keeping the calls in progress as the owner", exc)
                    self.state = UNCONFIRMED
                continue
            if ours:
                if self.state == UNCONFIRMED:
                    log.info("lease store reachable again: still the owner of %s", self.lease.description)
                self.state = OWNER
                continue
            self.state = LOST
            holder = None
            try:
                holder = await self.lease.holder()
            except LeaseStoreError:
                pass
            log.error("lease lost: %s is now held by %s; this process stops talking to the PBX",
                      self.lease.description, holder or "another process")
            on_lost()
            return

    async def release(self) -> None:
        """Stop renewing and give the lease up, so a standby takes over at once."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            try:
                await keeper
            except asyncio.CancelledError:
                pass
        if self.state in (OWNER, UNCONFIRMED):
            await self.lease.release()
            log.info("lease released: %s", self.lease.description)
        self.state = STANDBY
