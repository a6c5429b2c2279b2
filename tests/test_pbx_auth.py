"""Token handling: single flight, JWT lifetime, 401 refresh, wrong credentials, unreachable PBX."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time

import aiohttp
import pytest
from aiohttp import web

from ivr.pbx import (
    AuthenticationError,
    PbxClient,
    PbxConfig,
    PbxUnreachableError,
    TokenManager,
    jwt_lifetime,
)


def make_jwt(claims: dict) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(b'{}')}.{b64(json.dumps(claims).encode())}.{b64(b'sig')}"


class TokenServer:
    """A tiny /connect/token endpoint that counts requests and can be slow or reject."""

    def __init__(self, lifetime: int = 3600, delay: float = 0.05, reject: bool = False) -> None:
        self.lifetime = lifetime
        self.delay = delay
        self.reject = reject
        self.requests = 0
        self.forms: list[dict] = []
        self.content_types: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.content_types.append(request.content_type)
        self.forms.append(dict(await request.post()))
        await asyncio.sleep(self.delay)
        if self.reject:
            return web.json_response(
                {"error": "invalid_client", "error_description": "invalid client credentials"},
                status=401,
            )
        now = int(time.time())
        tok = make_jwt({"iat": now, "exp": now + self.lifetime, "n": self.requests})
        return web.json_response({"token_type": "Bearer", "expires_in": 60, "access_token": tok})

    async def __aenter__(self) -> TokenServer:
        app = web.Application()
        app.router.add_post("/connect/token", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def cfg_for(url: str, **kw) -> PbxConfig:
    kw.setdefault("client_secret", "secret")
    return PbxConfig(url=url, client_id="900", **kw)


def test_jwt_lifetime_from_exp_and_iat() -> None:
    assert jwt_lifetime(make_jwt({"iat": 1000, "exp": 4600})) == 3600
    assert jwt_lifetime(make_jwt({"exp": time.time() + 120})) == pytest.approx(120, abs=2)
    assert jwt_lifetime("not-a-jwt") is None
    assert jwt_lifetime(make_jwt({"sub": "x"})) is None
    assert jwt_lifetime("a.!!!.c") is None


async def test_single_flight_many_concurrent_callers_one_request() -> None:
    async with TokenServer(delay=0.1) as srv, aiohttp.ClientSession() as session:
        tm = TokenManager(session, cfg_for(srv.url))
        tokens = await asyncio.gather(*(tm.token() for _ in range(50)))
        assert srv.requests == 1
        assert tm.refreshes == 1
        assert len(set(tokens)) == 1
        # the form is urlencoded client credentials
        assert srv.content_types == ["application/x-www-form-urlencoded"]
        assert srv.forms[0] == {
            "client_id": "900",
            "client_secret": "secret",
            "grant_type": "client_credentials",
        }
        # cached afterwards
        assert await tm.token() == tokens[0]
        assert srv.requests == 1


async def test_invalidate_refreshes_exactly_once_for_many_401s() -> None:
    async with TokenServer() as srv, aiohttp.ClientSession() as session:
        tm = TokenManager(session, cfg_for(srv.url))
        old = await tm.token()
        for _ in range(20):  # twenty requests saw 401 with the same token
            tm.invalidate(old)
        fresh = await asyncio.gather(*(tm.token() for _ in range(20)))
        assert srv.requests == 2
        assert set(fresh) == {fresh[0]} and fresh[0] != old
        tm.invalidate(old)  # a late 401 on the old token must not drop the new one
        assert await tm.token() == fresh[0]
        assert srv.requests == 2


async def test_expires_in_is_ignored_and_jwt_exp_is_respected() -> None:
    # expires_in says 60 s; the JWT lives 2 s -> refreshed after ~1.8 s (10% early), not 60
    async with TokenServer(lifetime=2, delay=0) as srv, aiohttp.ClientSession() as session:
        tm = TokenManager(session, cfg_for(srv.url))
        first = await tm.token()
        await asyncio.sleep(1.0)
        assert await tm.token() == first and srv.requests == 1
        await asyncio.sleep(1.0)
        assert await tm.token() != first and srv.requests == 2


async def test_long_jwt_is_kept_despite_expires_in_60() -> None:
    async with TokenServer(lifetime=3600, delay=0) as srv, aiohttp.ClientSession() as session:
        tm = TokenManager(session, cfg_for(srv.url))
        await tm.token()
        loop = asyncio.get_running_loop()
        # refresh planned 60 s before the hour, not after expires_in=60
        assert tm._refresh_at - loop.time() == pytest.approx(3540, abs=5)


async def test_wrong_credentials_one_line_error_without_secret() -> None:
    async with TokenServer(reject=True, delay=0) as srv, aiohttp.ClientSession() as session:
        tm = TokenManager(session, cfg_for(srv.url))
        with pytest.raises(AuthenticationError) as info:
            await tm.token()
        msg = str(info.value)
        assert msg == f"3CX at {srv.url} rejected client id 900: invalid client credentials"
        assert "\n" not in msg and "secret" not in msg
        assert info.value.status == 401


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_pbx_is_retried_logged_and_cancellable(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="ivr.pbx")
    cfg = cfg_for(
        f"http://127.0.0.1:{free_port()}",
        reconnect_initial=0.05,
        reconnect_max=0.2,
        client_secret="topsecret-value",
    )
    client = PbxClient(cfg)
    task = asyncio.create_task(client.start())
    await asyncio.sleep(0.8)
    assert not task.done()  # still retrying, not crashed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    retries = [r for r in caplog.records if "reconnecting in" in r.getMessage()]
    assert len(retries) >= 3
    assert all("topsecret" not in r.getMessage() for r in caplog.records)
    assert "127.0.0.1" in retries[0].getMessage()


async def test_token_fetch_unreachable_raises_pbx_unreachable() -> None:
    async with aiohttp.ClientSession() as session:
        tm = TokenManager(session, cfg_for(f"http://127.0.0.1:{free_port()}"))
        with pytest.raises(PbxUnreachableError) as info:
            await tm.token()
        assert "/connect/token" in str(info.value)


def test_secret_never_in_repr() -> None:
    cfg = cfg_for("https://pbx.example:5001", client_secret="hunter2")
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg)
    assert cfg.ws_url == "wss://pbx.example:5001/callcontrol/ws"
    assert cfg_for("http://h:8080/").ws_url == "ws://h:8080/callcontrol/ws"
    with pytest.raises(ValueError, match="http:// or https://"):
        cfg_for("ftp://h")


# --- against the emulator ----------------------------------------------------------------


async def test_wrong_credentials_at_the_emulator(emulator) -> None:
    cfg = PbxConfig(url=emulator.url, client_id="900", client_secret="wrong-secret")
    with pytest.raises(AuthenticationError) as info:
        async with PbxClient(cfg):
            pass
    msg = str(info.value)
    assert msg.startswith(f"3CX at {emulator.url} rejected client id 900: ")
    assert "\n" not in msg and "wrong-secret" not in msg


async def test_short_jwt_lifetime_refreshes_before_expiry(emulator_factory, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ivr.pbx")
    emu = await emulator_factory(token_lifetime=1)
    cfg = PbxConfig(url=emu.url, client_id="900", client_secret="secret")
    async with PbxClient(cfg) as pbx:
        assert pbx.tokens.refreshes == 1
        first = pbx.tokens.current
        await asyncio.sleep(0.95)  # refresh is due at 0.9 s (10% early), expiry at 1 s
        assert (await pbx.rest.get_dn("800")).dn == "800"
        assert pbx.tokens.refreshes == 2 and pbx.tokens.current != first
        # proactive: no request was ever answered 401
        assert not [r for r in caplog.records if "rejected by the server" in r.getMessage()]
