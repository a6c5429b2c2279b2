"""``ivr run``: the worker as a long-running service, with health and metrics endpoints.

Before it talks to the PBX the process takes the lease on its (PBX, client id): a second
process with the same client id waits as a standby until the lease is free (docs/ha.md).

``/healthz`` answers 200 while the process runs; ``/readyz`` 200 only while the worker owns
the client id, is connected and takes calls (503 while a standby, starting, draining, or while
another process keeps revoking its tokens); ``/metrics`` is Prometheus text.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from ivr.cluster import Lease, LeaseStoreError, LocalLease, Ownership, RedisLease, lease_name
from ivr.cluster.checkpoints import CheckpointStore, MemoryCheckpoints, RedisCheckpoints
from ivr.cluster.file_checkpoints import FileCheckpoints
from ivr.config import WorkerConfig
from ivr.worker.control import ControlServer, endpoint_file
from ivr.worker.runner import Worker, install_signal_handlers

log = logging.getLogger("ivr.worker")


def make_lease(config: WorkerConfig) -> Lease:
    """The lease for this worker's (PBX, client id): in Redis when the cluster names one, else local."""
    cluster = config.cluster
    redis_url = cluster.resolve_redis_url()
    if redis_url:
        return RedisLease(redis_url, config.pbx.url, config.pbx.client_id, ttl=cluster.lease_ttl,
                          prefix=cluster.key_prefix)
    return LocalLease(config.pbx.url, config.pbx.client_id, lease_dir=cluster.lease_dir)


def control_endpoint_path(config: WorkerConfig) -> Path:
    """Where the owner on this machine publishes its control API (beside the local lease file)."""
    return endpoint_file(LocalLease(config.pbx.url, config.pbx.client_id, lease_dir=config.cluster.lease_dir).path)


def status_app(worker: Worker, ownership: Ownership | None = None) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        pbx = worker.pbx
        conflict = bool(pbx is not None and pbx.tokens.conflict)
        ready = worker.ready.is_set() and not worker.draining and not conflict
        body: dict[str, object] = {"ready": ready, "draining": worker.draining, "active_calls": len(worker.calls)}
        if ownership is not None:
            body["lease"] = ownership.state
        if conflict:
            body["conflict"] = "another process is using this client id (its tokens keep being revoked)"
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=worker.metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_status_server(worker: Worker, host: str, port: int, ownership: Ownership | None = None) -> web.AppRunner:
    runner = web.AppRunner(status_app(worker, ownership), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("metrics and health on http://%s:%d/metrics", host, port)
    return runner


def checkpoint_dir(config: WorkerConfig) -> Path:
    """The folder of the local checkpoint files, beside the local lease file."""
    lock = LocalLease(config.pbx.url, config.pbx.client_id, lease_dir=config.cluster.lease_dir).path
    return lock.with_name(lock.name.removesuffix(".lock") + ".calls")


def make_checkpoints(config: WorkerConfig) -> CheckpointStore:
    """Where calls' positions go, so the next owner resumes them: Redis with a cluster, else files
    beside the local lease (a standby on this machine), else (``local_checkpoints: false``) memory."""
    redis_url = config.cluster.resolve_redis_url()
    if redis_url:
        return RedisCheckpoints(redis_url, lease_name(config.pbx.url, config.pbx.client_id),
                                prefix=config.cluster.key_prefix)
    if config.cluster.local_checkpoints:
        return FileCheckpoints(checkpoint_dir(config))
    return MemoryCheckpoints()


async def serve(config: WorkerConfig, stop: asyncio.Event | None = None, *, speech=None, paced_gc: bool = False,
                ownership: Ownership | None = None) -> int:
    """Take the lease (waiting as a standby), then run until SIGTERM/SIGINT (or ``stop``).

    On a stop with a standby waiting (checkpoints in Redis or in files on this machine), the
    calls in progress are handed over: their checkpoints are flushed and the lease is released
    at once, so the standby resumes them; without one, the worker drains. Returns the process exit status: 1 when the lease
    was lost to another process. ``paced_gc``: this process is the worker (see :class:`Worker`)."""
    stop = stop or asyncio.Event()
    install_signal_handlers(stop)
    ownership = ownership or Ownership(make_lease(config))
    checkpoints = make_checkpoints(config)
    worker = Worker(config, speech=speech, paced_gc=paced_gc, checkpoints=checkpoints)
    status = None
    if config.metrics.port is not None:
        status = await start_status_server(worker, config.metrics.host, config.metrics.port, ownership)
    lost = False
    worker_stop = asyncio.Event()  # set once the stop is decided: hand over, or drain

    def on_lost() -> None:
        # Another process owns the client id now: fetch no token (it would revoke theirs),
        # and leave the calls on the PBX instead of draining them.
        nonlocal lost
        lost = True
        worker.abandon("the lease went to another process")
        stop.set()

    async def decide_stop() -> None:
        await stop.wait()
        if not lost and config.cluster.handover and isinstance(checkpoints, (RedisCheckpoints, FileCheckpoints)):
            try:
                waiting = await ownership.lease.standbys()
            except LeaseStoreError as exc:
                log.warning("stop: cannot ask the lease store for standbys (%s); draining", exc)
                waiting = 0
            if waiting:
                await worker.hand_over()
        worker_stop.set()

    control = ControlServer(worker, config, control_endpoint_path(config)) if config.control.enabled else None
    decider: asyncio.Task[None] | None = None
    try:
        if not await ownership.acquire(stop):
            return 0
        ownership.keep(on_lost)
        if control is not None:
            await control.start()
            if control.url is not None:
                try:  # tools on other machines find it with the lease (a Redis lease; a local one ignores it)
                    await ownership.lease.advertise(control.url)
                except LeaseStoreError as exc:
                    log.warning("control API not advertised yet (%s); every lease renewal retries", exc)
        decider = asyncio.create_task(decide_stop(), name="stop-decision")
        await worker.run(worker_stop)
    finally:
        if decider is not None:
            decider.cancel()
        if control is not None:
            await control.stop()
        await ownership.release()
        await checkpoints.aclose()
        if status is not None:
            await status.cleanup()
    return 1 if lost else 0
