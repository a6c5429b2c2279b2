"""``ivr dial``: place one outbound call and run a flow on it.

Only the owner of the client id talks to the PBX (docs/ha.md). While a worker owns it, the call
goes through that worker's control API (ivr/worker/control.py), found through the file it
publishes on this machine or the URL it advertises in Redis (ivr/worker/reach.py); an owner
that cannot be reached is a one-line error, never a reason to take a token. With no owner
running, this process becomes the owner for the one call: it takes the lease (and renews it
while the call lasts), starts a worker, dials, and stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import fields
from typing import Any

import aiohttp

from ivr.call.record import CallRecord, StepRecord
from ivr.cluster import OWNER, LeaseStoreError, Ownership
from ivr.config import ConfigError, WorkerConfig
from ivr.worker.control import ControlEndpoint
from ivr.worker.reach import OwnerUnavailable, find_owner
from ivr.worker.runner import Worker
from ivr.worker.service import make_lease

log = logging.getLogger("ivr.dial")


async def dial(config: WorkerConfig, number: str, flow: str, *,
               route_point: str | None = None, timeout: float = 60) -> CallRecord:
    ownership = Ownership(make_lease(config))
    try:
        taken = await ownership.lease.try_acquire()
    except LeaseStoreError as exc:
        raise ConfigError(f"ivr dial: cannot check who owns client id {config.pbx.client_id}: {exc}") from None
    if not taken:
        try:
            endpoint = await find_owner(config, ownership.lease)
        except OwnerUnavailable as exc:
            raise ConfigError(f"ivr dial: {exc}") from None
        # Say so at once: the answer comes only when the call has ended, minutes later perhaps.
        log.info("placing the call through the worker that owns client id %s (%s); "
                    "its outcome follows when the call ends", config.pbx.client_id, endpoint.url)
        return await dial_through(endpoint, number, str(config.path(flow).resolve()),
                                  route_point=route_point, timeout=timeout)
    ownership.state = OWNER
    try:
        return await _dial_as_owner(config, number, flow, ownership, route_point=route_point, timeout=timeout)
    finally:
        await ownership.release()


async def _dial_as_owner(config: WorkerConfig, number: str, flow: str, ownership: Ownership, *,
                         route_point: str | None, timeout: float) -> CallRecord:
    worker = Worker(config)
    stop = asyncio.Event()

    def on_lost() -> None:  # someone else holds the lease now: fetch no token that would revoke theirs
        worker.abandon("the lease went to another process")
        stop.set()

    ownership.keep(on_lost)  # a Redis lease expires unless renewed while the call lasts
    task = asyncio.create_task(worker.run(stop))
    ready = asyncio.ensure_future(worker.ready.wait())
    done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()
    dialling = asyncio.ensure_future(worker.dial(number, flow, route_point=route_point, timeout=timeout))
    try:
        await asyncio.wait({dialling, task}, return_when=asyncio.FIRST_COMPLETED)
        if dialling.done():
            return dialling.result()
        dialling.cancel()  # the worker stopped under the call: the lease went to another process
        task.result()
        raise ConfigError(f"ivr dial: the lease on client id {config.pbx.client_id} went to another process "
                          "during the call; the call is left to it")
    finally:
        stop.set()
        await asyncio.gather(task, dialling, return_exceptions=True)


async def dial_through(endpoint: ControlEndpoint, number: str, flow: str, *, route_point: str | None = None,
                       timeout: float = 60) -> CallRecord:
    """Ask the running owner to place the call; its record when the call has ended."""
    body = {"number": number, "flow": flow, "route_point": route_point, "timeout": timeout}
    # The answer comes when the call has ended, however long the flow runs.
    no_limit = aiohttp.ClientTimeout(total=None, sock_connect=10)
    try:
        async with endpoint.session(no_limit) as session:
            async with session.post(f"{endpoint.url}/v1/calls", json=body) as resp:
                text = await resp.text()
                status = resp.status
    except aiohttp.ClientError as exc:
        raise ConfigError(f"ivr dial: the running worker's control API at {endpoint.url} did not answer: "
                          f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = {}
    if status != 200 or not isinstance(data, dict):
        error = data.get("error") if isinstance(data, dict) else None
        raise ConfigError(f"ivr dial: the running worker refused the call (HTTP {status}): {error or text[:200]}")
    return _record_from(data)


def _record_from(data: dict[str, Any]) -> CallRecord:
    """A CallRecord back from its JSON form (the fields this version knows)."""
    known = {f.name for f in fields(CallRecord)} - {"steps"}
    steps = []
    for step in data.get("steps") or []:
        try:
            steps.append(StepRecord(**step))
        except TypeError:
            continue  # a step written by a newer version: the outcome is what ivr dial shows
    return CallRecord(**{k: v for k, v in data.items() if k in known}, steps=steps)
