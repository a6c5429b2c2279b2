"""The live view of one call: what changed since the last look, as JSON-ready messages.

The worker's :class:`~ivr.call.Call` and its call record are updated while the call runs and
the emulator keeps a log per call; :class:`LiveView` polls both and reports only differences,
so the page receives a short message a few times a second, not a full snapshot.
"""

from __future__ import annotations

import json
from typing import Any

from ivr.call import Call
from ivr.emulator import Emulator

# Emulator log events that only add noise to the page (one per audio stream open/close).
_QUIET_EVENTS = frozenset({"stream_opened", "stream_closed"})


def json_safe(value: Any) -> Any:
    """``value`` with anything JSON cannot carry turned into its ``str()``."""
    return json.loads(json.dumps(value, default=str))


class LiveView:
    """Polls one emulated call (and, once known, the worker's Call for it) for changes."""

    def __init__(self, emu: Emulator, callid: int) -> None:
        self.emu = emu
        self.callid = callid
        self.call: Call | None = None
        self._log_index = 0
        self._steps = 0
        self._last: dict[str, Any] = {}
        self.state = ""  # the emulator call's state at the last poll (dialing ... ended)

    def poll(self) -> list[dict[str, Any]]:
        """Messages for what changed: ``event`` (one per new emulator log entry) and ``live``."""
        out: list[dict[str, Any]] = []
        info = self.emu.call_info(self.callid)
        log = info["log"]
        for entry in log[self._log_index :]:
            if entry.get("event") not in _QUIET_EVENTS:
                out.append({"type": "event", "callid": self.callid, "entry": json_safe(entry)})
        self._log_index = len(log)
        self.state = info["state"]
        state = {"state": info["state"], "location": info["location"], "held": info["held"]}
        call = self.call
        if call is not None:
            rec = call.call_record
            state.update(
                activity=_activity(call),
                vars=json_safe(call.vars),
                digits=list(rec.digits),
                prompts=list(rec.prompts),
                transcript=json_safe(rec.transcript),
                errors=list(rec.errors),
                flow=rec.flow,
                flow_version=rec.flow_version,
            )
            new_steps = rec.steps[self._steps :]
            if new_steps:
                state["new_steps"] = [json_safe(vars(s)) for s in new_steps]
                self._steps = len(rec.steps)
        changed = {k: v for k, v in state.items() if k == "new_steps" or self._last.get(k) != v}
        self._last.update(state)
        self._last.pop("new_steps", None)
        if changed:
            out.append({"type": "live", "callid": self.callid, **changed})
        return out


def _activity(call: Call) -> str:
    """What the flow is doing now, in a few words (steps are recorded when they finish)."""
    rec = call.call_record
    if rec.outcome is not None:
        return f"ended: {rec.outcome}" + (f" ({rec.outcome_detail})" if rec.outcome_detail else "")
    step = f"{call.current_step}: " if call.current_step else ""
    if call.listening.is_set():
        return f"{step}listening for keys"
    if call.media.playback.busy and rec.prompts:
        return f"{step}playing {rec.prompts[-1]}"
    if step:
        return step.rstrip(": ")
    last = rec.steps[-1] if rec.steps else None
    return f"after step {last.step}{' #' + last.id if last.id else ''}" if last else "starting"
