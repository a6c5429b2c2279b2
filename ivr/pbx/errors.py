"""Exceptions raised by the 3CX Call Control client.

Every HTTP failure is a :class:`PbxError` carrying the status, a one-line message taken from
the server's JSON body, and the method and URL of the request, so a log line names what
failed and where. Tokens and secrets never appear in these messages.
"""

from __future__ import annotations

import json
from typing import Any


class PbxError(Exception):
    """A request to the PBX failed.

    ``status`` is the HTTP status, or ``None`` when no response was received.
    """

    def __init__(self, status: int | None, message: str, method: str = "", url: str = "") -> None:
        self.status = status
        self.message = message
        self.method = method
        self.url = url
        # The decoded JSON body of an error answer (None if none): a failed routeto carries
        # the usual CallControlResultResponse here, with the PBX's reason (PhoneBusy, ...).
        self.body: Any = None
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.method} {self.url}".strip()
        code = f"HTTP {self.status}" if self.status is not None else "no response"
        return f"{where}: {code}: {self.message}" if where else f"{code}: {self.message}"


class AuthenticationError(PbxError):
    """The PBX rejected the client credentials (or a freshly issued token)."""

    def __init__(
        self,
        status: int | None,
        message: str,
        method: str = "",
        url: str = "",
        *,
        pbx_url: str = "",
        client_id: str = "",
    ) -> None:
        self.pbx_url = pbx_url
        self.client_id = client_id
        super().__init__(status, message, method, url)

    def __str__(self) -> str:
        return f"3CX at {self.pbx_url} rejected client id {self.client_id}: {self.message}"


class FencedError(PbxError):
    """This process no longer owns the API client id (its lease went to another process), so
    it must not fetch a token: that would revoke the new owner's (docs/ha.md)."""


class ForbiddenError(PbxError):
    """403: the API client does not control this DN or participant."""


class NotFoundError(PbxError):
    """404: the DN, device or participant does not exist (a participant that ended)."""


class UnprocessableError(PbxError):
    """422: the action is not allowed in the participant's current state."""


class MediaNotReadyError(PbxError):
    """424: the participant's audio stream is not available yet."""


class RateLimitedError(PbxError):
    """429: too many requests."""


class ServerError(PbxError):
    """5xx: the PBX failed."""


class PbxUnreachableError(PbxError):
    """No HTTP answer: connection refused, reset, DNS or TLS failure, timeout."""


_BY_STATUS: dict[int, type[PbxError]] = {
    403: ForbiddenError,
    404: NotFoundError,
    422: UnprocessableError,
    424: MediaNotReadyError,
    429: RateLimitedError,
}


def error_for_status(status: int, message: str, method: str, url: str) -> PbxError:
    """The exception class for an HTTP error status (401 excluded: see the token manager)."""
    if status >= 500:
        return ServerError(status, message, method, url)
    return _BY_STATUS.get(status, PbxError)(status, message, method, url)


def message_from_body(body: bytes | str, reason: str = "") -> str:
    """One line describing an error body: JSON ``error_description``/``message``/... or text."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        data = data["error"]  # OData (the Configuration API): {"error": {"code", "message"}}
    if isinstance(data, dict):
        for key in ("error_description", "message", "detail", "title", "reasontext", "error"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return _one_line(value)
    text = _one_line(text)
    return text or reason or "no details"


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
