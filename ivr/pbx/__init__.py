"""The 3CX V20 Call Control client: the only package that knows the wire.

``PbxClient(PbxConfig(...))`` is the entry point; see ``docs/architecture.md``.
"""

from .auth import TokenManager, jwt_lifetime
from .backoff import Backoff
from .client import PbxClient
from .config import PbxConfig
from .errors import (
    AuthenticationError,
    ForbiddenError,
    MediaNotReadyError,
    NotFoundError,
    PbxError,
    PbxUnreachableError,
    RateLimitedError,
    ServerError,
    UnprocessableError,
)
from .events import (
    Connected,
    Disconnected,
    DtmfReceived,
    EventHub,
    ParticipantRemoved,
    ParticipantUpdated,
    PbxEvent,
    Resynced,
    Subscription,
)
from .eventsocket import EventStream
from .inbound import InboundAudio
from .outbound import OutboundAudio, OutboundStats
from .rest import RestClient
from .state import PbxState

__all__ = [
    "AuthenticationError",
    "Backoff",
    "Connected",
    "Disconnected",
    "DtmfReceived",
    "EventHub",
    "EventStream",
    "ForbiddenError",
    "InboundAudio",
    "MediaNotReadyError",
    "NotFoundError",
    "OutboundAudio",
    "OutboundStats",
    "ParticipantRemoved",
    "ParticipantUpdated",
    "PbxClient",
    "PbxConfig",
    "PbxError",
    "PbxEvent",
    "PbxState",
    "PbxUnreachableError",
    "RateLimitedError",
    "RestClient",
    "Resynced",
    "ServerError",
    "Subscription",
    "TokenManager",
    "UnprocessableError",
    "jwt_lifetime",
]
