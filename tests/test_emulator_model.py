"""The emulator's PBX model beyond the route point: extensions with several devices, calls
straight to an extension, queue and IVR DNs, real-PBX habits, and streams over TLS.
Driven over real loopback sockets with raw aiohttp / asyncio (no project client code)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

from ivr.emulator import Emulator


async def wait_until(predicate: Any, timeout: float = 3.0) -> Any:
    """Poll ``predicate()`` until truthy (the emulator acts on its own tasks)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value or loop.time() > deadline:
            return value
        await asyncio.sleep(0.01)


async def test_post_stream_aborted_over_tls_closes_its_handle(emulator_factory: Any, tmp_path: Any) -> None:
    """A client that aborts a POST stream over TLS: the stream's handle is closed and logged
    (the SSL transport has dropped its protocol by then; reading it must not skip the cleanup)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    emu: Emulator = await emulator_factory(_ssl_context=server_ctx)
    callid = await emu.place_call("+4930123456")
    token = emu.controller.tokens.issue("900").value
    leg = next(iter(emu.controller.pbx.calls[callid].legs.values()))
    path = f"/callcontrol/800/participants/{leg.id}/stream"
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port, ssl=client_ctx,
                                                   server_hostname="127.0.0.1")
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                 "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    for _ in range(3):
        writer.write(b"140\r\n" + bytes(320) + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.02)
    assert await wait_until(lambda: leg.streams), "the POST stream never opened"
    writer.transport.abort()  # no zero chunk, no TLS close_notify
    closed = await wait_until(lambda: [e for e in emu.call_info(callid)["log"] if e["event"] == "stream_closed"])
    assert closed and closed[0]["how"] == "client" and closed[0]["bytes"] == 960
    assert not leg.streams  # the handle is gone: a later end of the leg has nothing to cut
