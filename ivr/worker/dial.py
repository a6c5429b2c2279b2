"""``ivr dial``: start a worker, place one outbound call, run a flow on it, stop."""

from __future__ import annotations

import asyncio

from ivr.call.record import CallRecord
from ivr.config import WorkerConfig
from ivr.worker.runner import Worker


async def dial(config: WorkerConfig, number: str, flow: str, *, route_point: str | None = None, timeout: float = 60) -> CallRecord:
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
