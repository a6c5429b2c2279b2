"""Campaigns inside a running worker: what ``ivr campaign run`` and the control API start.

A :class:`CampaignSpec` says what to run (the list, the flow, pacing, window, retries, files);
:class:`CampaignManager` builds the plan, dialler and runner for it in the worker's process and
keeps them by id for status, pause, resume and stop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .contacts import read_contacts, read_do_not_call
from .dialer import WorkerDialer
from .plan import RETRYABLE, CampaignPlan, CampaignSettings
from .redis_state import MirroredState, campaign_key
from .results import ResultsCsv, StateFile
from .runner import CampaignRunner
from .window import CallingWindow

if TYPE_CHECKING:
    from ivr.worker.runner import Worker

log = logging.getLogger("ivr.campaign")


class CampaignSpec(BaseModel):
    """One campaign; paths are absolute or relative to the worker's config folder."""

    model_config = ConfigDict(extra="forbid")

    contacts: str = Field(description="The call list (CSV with a 'number' column)")
    flow: str = Field(description="The flow each answered call runs")
    concurrency: int = Field(5, ge=1, le=1000)
    rate: float = Field(1.0, gt=0, le=100, description="New calls per second at most")
    window: str = Field("always", description="Calling window, e.g. 'mon-fri 09:00-18:00'")
    timezone: str = Field("UTC", description="Zone of contacts without a timezone column")
    retries: int = Field(2, ge=0, le=20)
    retry_on: list[str] = Field(default_factory=lambda: ["busy", "no_answer", "failed", "not_registered"])
    retry_delay: float = Field(600.0, gt=0, description="Seconds before a retry")
    ring_timeout: float = Field(30.0, gt=0, le=300, description="Seconds a contact's phone rings")
    do_not_call: str | None = None
    out: str | None = Field(None, description="Results CSV (default: <contacts>.results.csv)")
    state: str | None = Field(None, description="State file (default: <contacts>.state.json)")
    variables: list[str] = Field(default_factory=list, description="Flow variables written as result columns")

    @field_validator("retry_on")
    @classmethod
    def _retryable(cls, v: list[str]) -> list[str]:
        unknown = [r for r in v if r not in RETRYABLE]
        if unknown:
            raise ValueError(f"cannot retry on {', '.join(unknown)} (retryable: {', '.join(RETRYABLE)})")
        return v

    def settings(self) -> CampaignSettings:
        return CampaignSettings(concurrency=self.concurrency, rate=self.rate, window=CallingWindow(self.window),
                                timezone=self.timezone, retries=self.retries, retry_on=tuple(self.retry_on),
                                retry_delay={r: self.retry_delay for r in RETRYABLE})

    def paths(self, base: Path) -> tuple[Path, Path, Path]:
        """The list, results and state files, resolved against ``base``."""
        listed = _resolve(base, self.contacts)
        out = _resolve(base, self.out) if self.out else listed.with_suffix(".results.csv")
        state = _resolve(base, self.state) if self.state else listed.with_suffix(".state.json")
        return listed, out, state


def _resolve(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


async def build_runner(worker: Worker, spec: CampaignSpec, **runner_options: Any) -> CampaignRunner:
    """The runner for ``spec`` in ``worker``; raises ContactListError, WindowError,
    CampaignFileError or FlowLoadError (one line each) before any call is placed. With a
    Redis cluster the state is mirrored there and the newer copy is resumed."""
    base = worker.config.base_dir
    listed, out, state_path = spec.paths(base)
    contacts = read_contacts(listed)
    dnc = read_do_not_call(_resolve(base, spec.do_not_call)) if spec.do_not_call else frozenset()
    dialer = WorkerDialer(worker, spec.flow, ring_timeout=spec.ring_timeout)
    redis_url = worker.config.cluster.resolve_redis_url()
    state: StateFile
    if redis_url:
        mirrored = MirroredState(state_path, redis_url, campaign_key(worker.config.cluster.key_prefix,
                                                                        str(listed), str(_resolve(base, spec.flow))))
        saved = await mirrored.load_newest()
        state = mirrored
    else:
        state = StateFile(state_path)
        saved = state.load()
    plan = CampaignPlan(contacts, spec.settings(), do_not_call=dnc, state=saved)
    columns = list(dict.fromkeys(k for c in contacts for k in c.variables))
    results = ResultsCsv(out, columns, spec.variables)
    return CampaignRunner(plan, dialer, state=state, results=results, free_capacity=dialer.free_capacity,
                          **runner_options)


class CampaignManager:
    """The campaigns of one worker, by id."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.runners: dict[str, CampaignRunner] = {}
        self.specs: dict[str, CampaignSpec] = {}
        self._tasks: dict[str, asyncio.Task[dict[str, int]]] = {}

    async def start(self, spec: CampaignSpec) -> str:
        runner = await build_runner(self.worker, spec)
        campaign_id = secrets.token_hex(4)
        self.runners[campaign_id], self.specs[campaign_id] = runner, spec
        task = asyncio.get_running_loop().create_task(runner.run(), name=f"campaign-{campaign_id}")
        def ended(t: asyncio.Task[dict[str, int]]) -> None:
            self._ended(campaign_id, t)

        task.add_done_callback(ended)
        self._tasks[campaign_id] = task
        log.info("campaign %s started: %d contacts from %s, flow %s", campaign_id, len(runner.plan.contacts),
                 spec.contacts, spec.flow)
        return campaign_id

    def _ended(self, campaign_id: str, task: asyncio.Task[dict[str, int]]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("campaign %s failed: %s", campaign_id, " ".join(str(exc).split()) or type(exc).__name__)
        else:
            log.info("campaign %s ended: %s", campaign_id, task.result())

    def status(self, campaign_id: str) -> dict[str, Any]:
        runner = self.runners[campaign_id]
        task = self._tasks[campaign_id]
        status = runner.status()
        if task.done():
            status["state"] = "failed" if not task.cancelled() and task.exception() else (
                "done" if runner.plan.finished else "stopped")
        return {"id": campaign_id, **status}

    async def stop_all(self) -> None:
        for runner in self.runners.values():
            runner.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
