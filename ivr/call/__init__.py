"""The Call a flow talks to, and the pieces it is made of.

- :mod:`ivr.call.call`: the :class:`Call` (play, say, gather, menu, transfer, record, hangup...)
- :mod:`ivr.call.media`: the call's audio: PBX streams joined to the audio pipeline
- :mod:`ivr.call.collector`: the DTMF timer rules, sans-I/O (docs/dtmf-timers.md)
- :mod:`ivr.call.record`: the call record written when the call ends
"""

from ivr.call.call import Call
from ivr.call.results import (
    Caller,
    CallError,
    CallHangup,
    GatherResult,
    PlayResult,
    Prompt,
    RecordResult,
    TransferResult,
)

__all__ = [
    "Call",
    "CallError",
    "CallHangup",
    "Caller",
    "GatherResult",
    "PlayResult",
    "Prompt",
    "RecordResult",
    "TransferResult",
]
