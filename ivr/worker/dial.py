"""``ivr dial``: place one outbound call and run a flow on it.

Only the owner of the client id talks to the PBX (docs/ha.md). While a worker owns it, the call
goes through that worker's control API (ivr/worker/control.py), found through the file it
publishes on this machine. With no owner running, this process becomes the owner for the one
call: it takes the lease, starts a worker, dials, and stops.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import fields
from typing import Any

import aiohttp

from ivr.call.record import CallRecord, StepRecord
from ivr.cluster import LeaseStoreError, Ownership
from ivr.config import ConfigError, WorkerConfig
from ivr.worker.control import ControlEndpoint, read_published
from ivr.worker.runner import Worker
from ivr.worker.service import control_endpoint_path, make_lease


async def dial(config: WorkerConfig, number: str, flow: str, *,
               route_point: str | None = None, timeout: float = 60) -> CallRecord:
    ownership = Ownership(make_lease(config))
    try:
        taken = await ownership.lease.try_acquire()
        holder = None if taken else await ownership.lease.holder()
    except LeaseStoreError as exc:
        raise ConfigError(f"ivr dial: cannot check who owns client id {config.pbx.client_id}: {exc}") from None
    if not taken:
        endpoint = read_published(control_endpoint_path(config))
        if endpoint is None:
            raise ConfigError(
                f"ivr dial: client id {config.pbx.client_id} is owned by a running worker ({holder or 'another process'}) "
                "whose control API is not published on this machine; dialling beside it would revoke its token "
                "and cut its calls (docs/ha.md)")
        return await dial_through(endpoint, number, str(config.path(flow).resolve()),
                                  route_point=route_point, timeout=timeout)
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


async def dial_through(endpoint: ControlEndpoint, number: str, flow: str, *, route_point: str | None = None,
                       timeout: float = 60) -> CallRecord:
    """Ask the running owner to place the call; its record when the call has ended."""
    body = {"number": number, "flow": flow, "route_point": route_point, "timeout": timeout}
    headers = {"Authorization": f"Bearer {endpoint.token}"}
    # The answer comes when the call has ended, however long the flow runs.
    no_limit = aiohttp.ClientTimeout(total=None, sock_connect=10)
    try:
        async with aiohttp.ClientSession(timeout=no_limit) as session:
            async with session.post(f"{endpoint.url}/v1/calls", json=body, headers=headers) as resp:
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
