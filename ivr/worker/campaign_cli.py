"""``ivr campaign``: run an outbound campaign, through the running worker or as the owner.

    ivr campaign run LIST.csv --flow FLOW [--config ivr.yaml] [--concurrency N] [--rate M]
                     [--window "mon-fri 09:00-18:00"] [--tz ZONE] [--retries K] [--retry-on busy,no_answer]
                     [--retry-delay S] [--dnc FILE] [--out results.csv] [--state FILE] [--var NAME ...]
    ivr campaign status|pause|resume|stop [ID] [--config ivr.yaml]

While a worker owns the client id (``ivr run``), the campaign runs inside it, started through
its control API (on this machine, or on another one found through the Redis lease:
ivr/worker/reach.py); this command shows progress until the campaign ends (Ctrl-C stops the
campaign after its calls in progress). With no worker running, this process takes the lease
(renewing it while the campaign runs), runs a worker for the campaign's calls and stops when
the campaign is done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import ValidationError

from ivr.campaign.contacts import ContactListError
from ivr.campaign.manager import CampaignSpec, build_runner
from ivr.campaign.results import CampaignFileError
from ivr.campaign.runner import CampaignRunner
from ivr.campaign.window import WindowError


class CampaignCliError(Exception):
    """A one-line reason the command cannot go on."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("campaign", help="outbound campaigns: run a call list through a flow (docs/campaigns.md)")
    actions = p.add_subparsers(dest="campaign_action", required=True)
    run = actions.add_parser("run", help="run a call list through a flow")
    run.add_argument("contacts", metavar="LIST.csv", help="the call list: CSV with a 'number' column")
    run.add_argument("--flow", required=True, help="the flow each answered call runs")
    run.add_argument("--config", "-c", default="ivr.yaml", help="worker config (PBX, route point)")
    run.add_argument("--concurrency", type=int, default=5, help="calls at once (default 5)")
    run.add_argument("--rate", type=float, default=1.0, help="new calls per second at most (default 1)")
    run.add_argument("--window", default="always", help="calling window, e.g. 'mon-fri 09:00-18:00' (default always)")
    run.add_argument("--tz", default="UTC", help="time zone of contacts without a timezone column (default UTC)")
    run.add_argument("--retries", type=int, default=2, help="more attempts after a retryable result (default 2)")
    run.add_argument("--retry-on", default="busy,no_answer,failed,not_registered",
                     help="results worth another attempt (also: machine)")
    run.add_argument("--retry-delay", type=float, default=600.0, help="seconds before a retry (default 600)")
    run.add_argument("--ring-timeout", type=float, default=30.0, help="seconds a contact's phone rings (default 30)")
    run.add_argument("--dnc", help="do-not-call list: one number a line, or a CSV with a number column")
    run.add_argument("--out", help="results CSV (default LIST.results.csv)")
    run.add_argument("--state", help="state file, for resuming (default LIST.state.json)")
    run.add_argument("--var", action="append", default=[], help="a flow variable to write as a results column")
    for name in ("status", "pause", "resume", "stop"):
        q = actions.add_parser(name, help=f"{name} a campaign running in the worker")
        q.add_argument("id", nargs="?", help="the campaign's id (default: all)")
        q.add_argument("--config", "-c", default="ivr.yaml")


def spec_of(args: argparse.Namespace) -> CampaignSpec:
    cwd = Path.cwd()
    absolute = lambda value: str((cwd / value).resolve()) if value else None  # noqa: E731
    try:
        return CampaignSpec(
            contacts=absolute(args.contacts) or "", flow=absolute(args.flow) or "", concurrency=args.concurrency,
            rate=args.rate, window=args.window, timezone=args.tz, retries=args.retries,
            retry_on=[r.strip() for r in args.retry_on.split(",") if r.strip()], retry_delay=args.retry_delay,
            ring_timeout=args.ring_timeout, do_not_call=absolute(args.dnc), out=absolute(args.out),
            state=absolute(args.state), variables=args.var)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise CampaignCliError(f"{where}: {first['msg']}") from None


class Progress:
    """One line redrawn on a terminal; a line every ``every`` seconds otherwise."""

    def __init__(self, total: int, *, every: float = 10.0) -> None:
        self.total = total
        self.tty = sys.stdout.isatty()
        self.every = every
        self._last = -1e9

    def show(self, counts: dict[str, int], state: str, *, final: bool = False) -> None:
        loop_time = asyncio.get_running_loop().time()
        if not final and not self.tty and loop_time - self._last < self.every:
            return
        self._last = loop_time
        done = counts.get("done", 0)
        width = 24
        filled = int(width * done / self.total) if self.total else width
        results = " ".join(f"{k} {v}" for k, v in counts.items() if k not in ("pending", "dialling", "done") and v)
        line = (f"[{'#' * filled}{'-' * (width - filled)}] {done}/{self.total} done, "
                f"{counts.get('dialling', 0)} calling, {state}" + (f" | {results}" if results else ""))
        if self.tty:
            print("\r" + line.ljust(100), end="\n" if final else "", flush=True)
        else:
            print(line, flush=True)


async def run_here(config: Any, spec: CampaignSpec, ownership: Any) -> dict[str, int]:
    """This process holds the lease (``ownership``): a worker for the campaign's calls, then stop."""
    from ivr.worker.runner import Worker

    worker = Worker(config)
    stop = asyncio.Event()

    def on_lost() -> None:  # someone else holds the lease now: fetch no token that would revoke theirs
        worker.abandon("the lease went to another process")
        stop.set()

    ownership.keep(on_lost)  # a Redis lease expires unless renewed while the campaign runs
    task = asyncio.create_task(worker.run(stop))
    try:
        ready = asyncio.ensure_future(worker.ready.wait())
        await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()
        runner: CampaignRunner = await build_runner(worker, spec)
        progress = Progress(len(runner.plan.contacts))
        runner.on_change = lambda r: progress.show(r.plan.counts(), r.status()["state"])
        running = asyncio.ensure_future(runner.run())
        try:
            await asyncio.wait({running, task}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            runner.stop()
            await asyncio.gather(running, return_exceptions=True)
            raise
        if not running.done():  # the worker stopped under the campaign: the lease was lost
            runner.stop()
            await asyncio.gather(running, return_exceptions=True)
            raise CampaignCliError(f"the lease on client id {config.pbx.client_id} went to another process; "
                                   "run the same command again to resume the campaign")
        counts = running.result()
        progress.show(counts, "done" if runner.plan.finished else "stopped", final=True)
        return counts
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)


async def through_owner(endpoint: Any, spec: CampaignSpec) -> dict[str, int]:
    """Start the campaign in the running worker and follow it until it ends."""
    async with endpoint.session() as session:
        status = await _call(session, "POST", f"{endpoint.url}/v1/campaigns", json=spec.model_dump())
        cid = status["id"]
        print(f"campaign {cid} runs in the worker (ivr campaign status|pause|resume|stop {cid})", flush=True)
        progress = Progress(int(status["contacts"]))
        try:
            while status["state"] not in ("done", "stopped", "failed"):
                progress.show(status["counts"], status["state"])
                await asyncio.sleep(1.0)
                status = await _call(session, "GET", f"{endpoint.url}/v1/campaigns/{cid}")
        except asyncio.CancelledError:
            await _call(session, "POST", f"{endpoint.url}/v1/campaigns/{cid}/stop")
            raise
        progress.show(status["counts"], status["state"], final=True)
        return dict(status["counts"])


async def _call(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Any:
    """The JSON answer of one control API request; a one-line CampaignCliError otherwise."""
    try:
        async with session.request(method, url, **kwargs) as resp:
            text = await resp.text()
            status = resp.status
    except aiohttp.ClientError as exc:
        raise CampaignCliError(f"the worker's control API did not answer: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = {"error": text[:200]}
    if status >= 400:
        error = data.get("error", text[:200]) if isinstance(data, dict) else text[:200]
        raise CampaignCliError(f"the worker said (HTTP {status}): {error}")
    return data


async def command(args: argparse.Namespace) -> int:
    from ivr.cluster import OWNER, Ownership
    from ivr.config_loader import load_config
    from ivr.worker.reach import find_owner
    from ivr.worker.service import make_lease

    config = load_config(args.config)
    ownership = Ownership(make_lease(config))
    if await ownership.lease.try_acquire():  # nobody owns the client id
        ownership.state = OWNER
        try:
            if args.campaign_action != "run":
                raise CampaignCliError(f"no running worker publishes a control API: nobody owns client id "
                                       f"{config.pbx.client_id}, so no campaign runs")
            counts = await run_here(config, spec_of(args), ownership)
        finally:
            await ownership.release()
        return 0 if counts.get("pending", 0) == 0 else 3
    spec = spec_of(args) if args.campaign_action == "run" else None
    endpoint = await find_owner(config, ownership.lease)  # one line and no token if it cannot be reached
    if spec is None:
        return await _manage(endpoint, args.campaign_action, args.id)
    counts = await through_owner(endpoint, spec)
    return 0 if counts.get("pending", 0) == 0 else 3


async def _manage(endpoint: Any, action: str, cid: str | None) -> int:
    async with endpoint.session() as session:
        if cid is None:
            statuses = await _call(session, "GET", f"{endpoint.url}/v1/campaigns")
            ids = [s["id"] for s in statuses]
        else:
            ids = [cid]
        for one in ids:
            if action == "status":
                status = await _call(session, "GET", f"{endpoint.url}/v1/campaigns/{one}")
            else:
                status = await _call(session, "POST", f"{endpoint.url}/v1/campaigns/{one}/{action}")
            counts = " ".join(f"{k} {v}" for k, v in status["counts"].items() if v)
            print(f"{one}: {status['state']}, {status['contacts']} contacts: {counts}")
    return 0


def main(args: argparse.Namespace) -> int:
    from ivr.cluster import LeaseStoreError
    from ivr.config import ConfigError
    from ivr.flow import FlowLoadError

    try:
        return asyncio.run(command(args))
    except (CampaignCliError, ConfigError, FlowLoadError, ContactListError, WindowError, CampaignFileError,
            LeaseStoreError) as exc:
        print(f"ivr campaign: {' '.join(str(exc).split()) if not isinstance(exc, FlowLoadError) else exc}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ivr campaign: stopped; run the same command again to resume it", file=sys.stderr)
        return 130
