"""OAuth client-credentials tokens: JWT-shaped, HMAC-signed, revocable.

Tokens are never logged. Validation looks the token up in the issued set (signature and
expiry are still real, so a client may decode ``exp`` like it would on a real server).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(eq=False)
class Token:
    """One issued access token and what depends on it."""

    value: str = field(repr=False)
    client_id: str
    expires_at: float  # loop clock
    revoked: bool = False
    on_revoke: set[Callable[[], None]] = field(default_factory=set)  # cut audio streams


class TokenStore:
    """Issues, validates and revokes access tokens."""

    def __init__(self, lifetime: float, revoke_previous: bool, clock: Callable[[], float]) -> None:
        self.lifetime = lifetime
        self.revoke_previous = revoke_previous
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._tokens: dict[str, Token] = {}
        self.issued = 0  # tokens issued since start: a test sees who fetched one

    def issue(self, client_id: str) -> Token:
        """A new token; revokes the client's earlier ones when so configured."""
        if self.revoke_previous:
            for tok in list(self._tokens.values()):
                if tok.client_id == client_id:
                    self.revoke(tok)
        self._expire_old()
        iat = int(time.time())
        lifetime = int(self.lifetime) if float(self.lifetime).is_integer() else self.lifetime
        header = {"alg": "HS256", "typ": "JWT"}
        payload = {
            "iss": "ivr-3cx-emulator",
            "client_id": client_id,
            "iat": iat,
            "exp": iat + lifetime,
            "jti": uuid.uuid4().hex,
        }
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(payload).encode())
        sig = hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest()
        value = signing_input + "." + _b64url(sig)
        tok = Token(value=value, client_id=client_id, expires_at=self._clock() + self.lifetime)
        self._tokens[value] = tok
        self.issued += 1
        return tok

    def validate(self, value: str | None) -> Token | None:
        """The live token for a bearer value, or None (unknown, revoked, expired)."""
        if not value:
            return None
        tok = self._tokens.get(value)
        if tok is None or tok.revoked or self._clock() >= tok.expires_at:
            return None
        return tok

    def revoke(self, tok: Token) -> None:
        """Revoke one token and cut what was opened with it."""
        tok.revoked = True
        callbacks, tok.on_revoke = tok.on_revoke, set()
        for cb in callbacks:
            cb()

    def revoke_all(self) -> int:
        """Revoke every live token; returns how many."""
        live = [t for t in self._tokens.values() if not t.revoked]
        for tok in live:
            self.revoke(tok)
        return len(live)

    def _expire_old(self) -> None:
        # Forget revoked or long-expired tokens so a busy client does not grow memory.
        now = self._clock()
        for value, tok in list(self._tokens.items()):
            if tok.revoked or now >= tok.expires_at + 60:
                del self._tokens[value]


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None
