"""Shared pytest fixtures: a running 3CX emulator on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from ivr.emulator import Emulator, EmulatorConfig

# Short timers so call flows finish in tenths of a second.
FAST_EMULATOR: dict[str, Any] = {"ring_seconds": 0.1, "no_answer_timeout": 0.3}

EmulatorFactory = Callable[..., Awaitable[Emulator]]


@pytest.fixture
async def emulator_factory() -> AsyncIterator[EmulatorFactory]:
    """``await emulator_factory(**config_overrides)`` -> a started Emulator (stopped after the test)."""
    started: list[Emulator] = []

    async def make(_ssl_context: Any = None, **overrides: Any) -> Emulator:
        emu = Emulator(EmulatorConfig(**{**FAST_EMULATOR, **overrides}))
        await emu.start(host="127.0.0.1", port=0, ssl_context=_ssl_context)
        started.append(emu)
        return emu

    yield make
    for emu in started:
        await emu.stop()


@pytest.fixture
async def emulator(emulator_factory: EmulatorFactory) -> Emulator:
    """A running emulator with the default config and fast timers (ring 0.1 s, no-answer 0.3 s)."""
    return await emulator_factory()


@pytest.fixture
def redis_server(tmp_path: Any) -> Any:
    """A real redis-server on a free loopback port (tests/redis_server.py), killed after the test."""
    from redis_server import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()
