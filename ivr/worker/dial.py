"""``ivr dial``: start a worker, place one outbound call, run a flow on it, stop.

It talks to the PBX only as the owner of the client id: while a worker owns it (``ivr run``
on this machine, or anywhere with a Redis lease), dialling here would revoke that worker's
token and cut its calls, so it refuses instead (docs/ha.md).
"""

from __future__ import annotations

import asyncio

from ivr.call.record import CallRecord
from ivr.cluster import LeaseStoreError, Ownership
from ivr.config import ConfigError, WorkerConfig
from ivr.worker.runner import Worker
from ivr.worker.service import make_lease


async def dial(config: WorkerConfig, number: str, flow: str, *, route_point: str | None = None, timeout: float = 60) -> CallRecord:
    ownership = Ownership(make_lease(config))
    try:
        taken = await ownership.lease.try_acquire()
        holder = None if taken else await ownership.lease.holder()
    except LeaseStoreError as exc:
        raise ConfigError(f"ivr dial: cannot check who owns client id {config.pbx.client_id}: {exc}") from None
    if not taken:
        raise ConfigError(
            f"ivr dial: client id {config.pbx.client_id} is owned by a running worker ({holder or 'another process'}); "
            "dialling beside it would revoke its token and cut its calls (docs/ha.md)")
    ownership.state = "owner"
    try:
        return await _dial_as_owner(config, number, flow, route_point=route_point, timeout=timeout)
    finally:
        await ownership.release()


async def _dial_as_owner(config: WorkerConfig, number: str, flow: str, *, route_point: str | None, timeout: float) -> CallRecord:
    worker = Worker(config)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    ready = asyncio.ensure_future(worker.ready.wait())
    done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()
    try:
        return await worker.dial(number, flow, route_point=route_point, timeout=timeout)
    finally:
        stop.set()
        await task
