"""The campaign's dialler inside a worker: each attempt is ``Worker.dial`` with the contact's
columns as the flow's parameters; the record says how it ended."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ivr.call.record import CallRecord

from .contacts import Contact
from .runner import DialResult

if TYPE_CHECKING:
    from ivr.worker.runner import Worker


def contact_params(contact: Contact) -> dict[str, Any]:
    """What the flow sees as ``params``: the list's columns, plus ``number`` and ``name``."""
    return {**contact.variables, "number": contact.number, "name": contact.name}


def result_of(record: CallRecord) -> DialResult:
    """An attempt's result from its call record: the dial status, or ``machine`` when the
    flow's ``amd`` step found one."""
    status = record.dial_status or ("answered" if record.answered_at else "failed")
    if status == "answered":
        amd = next((s.result for s in record.steps if s.step == "amd" and isinstance(s.result, dict)), None)
        if amd is not None and amd.get("result") == "machine":
            status = "machine"
    return DialResult(status, record.outcome_detail, call_id=record.call_id if record.call_id != "-" else None,
                      outcome=record.outcome if status in ("answered", "machine") else None,
                      variables=dict(record.variables or {}))


class WorkerDialer:
    """Places a campaign's calls through a running worker in this process."""

    def __init__(self, worker: Worker, flow: str, *, ring_timeout: float = 30.0) -> None:
        from ivr.flow import load_any
        from ivr.flow.interpreter import YamlFlow

        self.worker = worker
        self.flow = flow
        self.ring_timeout = ring_timeout
        runnable = load_any(worker.config.path(flow))  # FlowLoadError (file:line:col) before any call
        # A YAML flow takes only the parameters it declares; the other columns stay in the results.
        self.accepts: set[str] | None = set(runnable.flow.params) if isinstance(runnable, YamlFlow) else None

    def params_for(self, contact: Contact) -> dict[str, Any]:
        params = contact_params(contact)
        return params if self.accepts is None else {k: v for k, v in params.items() if k in self.accepts}

    async def dial(self, contact: Contact) -> DialResult:
        record = await self.worker.dial(contact.number, self.flow, timeout=self.ring_timeout,
                                        params=self.params_for(contact), keep_variables=True)
        return result_of(record)

    def free_capacity(self) -> int:
        """Calls the worker can still take: inbound calls come first, so a campaign never
        fills the room an arriving caller needs (one place is kept free for them)."""
        worker = self.worker
        if worker.draining or not worker.ready.is_set():
            return 0
        return max(0, worker.config.max_calls - len(worker.calls) - 1)
