"""``ivr run``: the worker as a long-running service, with health and metrics endpoints.

``/healthz`` answers 200 while the process runs; ``/readyz`` 200 only while the worker is
connected and taking calls (503 while starting or draining); ``/metrics`` is Prometheus text.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ivr.config import WorkerConfig
from ivr.worker.runner import Worker, install_signal_handlers

log = logging.getLogger("ivr.worker")


def status_app(worker: Worker) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        ready = worker.ready.is_set() and not worker.draining
        body = {"ready": ready, "draining": worker.draining, "active_calls": len(worker.calls)}
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=worker.metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_status_server(worker: Worker, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(status_app(worker), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("metrics and health on http://%s:%d/metrics", host, port)
    return runner


async def serve(config: WorkerConfig, stop: asyncio.Event | None = None, *, speech=None, paced_gc: bool = False) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``), then drain. Returns the process exit status.
    ``paced_gc``: this process is the worker (see :class:`Worker`)."""
    stop = stop or asyncio.Event()
    install_signal_handlers(stop)
    worker = Worker(config, speech=speech, paced_gc=paced_gc)
    status = None
    if config.metrics.port is not None:
        status = await start_status_server(worker, config.metrics.host, config.metrics.port)
    try:
        await worker.run(stop)
    finally:
        if status is not None:
            await status.cleanup()
    return 0
