"""StreamRetry: the rules both audio streams follow when the PBX refuses them (sans I/O)."""

from __future__ import annotations

import aiohttp
import pytest

from ivr.pbx.auth import TokenManager
from ivr.pbx.config import PbxConfig
from ivr.pbx.errors import AuthenticationError, MediaNotReadyError, PbxError
from ivr.pbx.streamretry import StreamRetry

CFG = PbxConfig(url="http://127.0.0.1:1", client_id="900", client_secret="s", reconnect_jitter=0)


@pytest.fixture
async def make():
    async with aiohttp.ClientSession() as session:  # the token manager never does I/O here
        def build(*, exists: bool = True, media_timeout: float = 10.0) -> StreamRetry:
            async def leg_exists() -> bool:
                return exists

            tokens = TokenManager(session, CFG)
            return StreamRetry("inbound", "GET", "http://pbx/stream", CFG, tokens, leg_exists, media_timeout)

        yield build


async def test_one_reauth_then_a_second_401_is_an_authentication_error(make) -> None:
    retry = make()
    assert await retry.refused(401, "Unauthorized", b"", "t1") == 0.0  # at once, with a fresh token
    with pytest.raises(AuthenticationError):
        await retry.refused(401, "Unauthorized", b"", "t2")
    retry.streaming()  # once the stream works, a later 401 gets its retry again
    assert await retry.refused(401, "Unauthorized", b"", "t3") == 0.0


async def test_no_media_yet_backs_off_until_media_timeout(make) -> None:
    retry = make(media_timeout=0.0)
    retry.deadline += 60  # still within media_timeout
    delays = [await retry.refused(424, "", b"", "t") for _ in range(4)]
    assert delays == [0.05, 0.1, 0.2, 0.4]  # capped exponential (no jitter here)
    assert await retry.refused(404, "", b"", "t") == 0.8  # 404 for a leg that still exists: the same
    retry.deadline -= 120
    with pytest.raises(MediaNotReadyError):
        await retry.refused(424, "", b'{"message": "no media"}', "t")


async def test_a_gone_leg_ends_the_stream_and_overload_retries_until_the_deadline(make) -> None:
    assert await make(exists=False).refused(404, "Not Found", b"", "t") is None
    retry = make()
    assert await retry.refused(503, "", b"", "t") == 0.05
    assert await retry.refused(429, "", b"", "t") == 0.1
    retry.deadline -= 60
    with pytest.raises(PbxError) as err:
        await retry.refused(503, "Service Unavailable", b"", "t")
    assert err.value.status == 503
    with pytest.raises(PbxError) as err:  # anything else: at once
        await make().refused(400, "Bad Request", b"", "t")
    assert err.value.status == 400
