"""The shipped PIN entry flow against a PIN service on loopback."""

from __future__ import annotations

import pytest
from aiohttp import web

FLOW = "flows/pin_entry.yaml"


@pytest.fixture
async def pin_service():
    """A PIN checker: valid PIN is 4711; 5xx when the PIN is 0000 (a broken backend)."""
    seen: list[dict] = []

    async def check(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        if body["pin"] == "0000":
            return web.Response(status=503, text="down")
        return web.json_response({"valid": body["pin"] == "4711"})

    app = web.Application()
    app.router.add_post("/pin", check)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/pin", seen
    await runner.cleanup()


async def test_valid_pin_is_verified(ivr_sim, pin_service):
    url, seen = pin_service
    caller = await ivr_sim.call(FLOW, caller="+4930555", params={"pin_url": url})
    await caller.hears("pin prompt")
    await caller.press("4711#")
    await caller.hears("pin ok")
    record = await caller.record()
    assert seen == [{"caller": "+4930555", "pin": "4711"}]
    assert record.digits == ["4711"]
    assert caller.call.vars["check"]["body"] == {"valid": True}


async def test_wrong_pin_retries_then_gives_up(ivr_sim, pin_service):
    url, seen = pin_service
    caller = await ivr_sim.call(FLOW, params={"pin_url": url, "max_tries": 2})
    await caller.press("1234#")
    await caller.hears("pin invalid")
    await caller.press("9999#")
    record = await caller.record()
    assert [s["pin"] for s in seen] == ["1234", "9999"]
    assert record.digits == ["1234", "9999"]
    assert caller.call.vars["tries"] == 2


async def test_too_short_pin_is_a_no_match(ivr_sim, pin_service):
    url, seen = pin_service
    caller = await ivr_sim.call(FLOW, params={"pin_url": url})
    await caller.press("12#")
    await caller.hears("pin invalid")  # the no-match prompt; the service was never asked
    await caller.press("4711#")
    await caller.hears("pin ok")
    assert [s["pin"] for s in seen] == ["4711"]


async def test_service_failure_takes_the_failure_branch(ivr_sim, pin_service):
    url, _ = pin_service
    caller = await ivr_sim.call(FLOW, params={"pin_url": url})
    await caller.press("0000#")
    await caller.hears("pin unavailable")
    record = await caller.record()
    assert record.outcome == "ivr_hangup"
