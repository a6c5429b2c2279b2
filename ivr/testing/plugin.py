"""pytest plugin: the ``ivr_sim`` fixture (registered through the ``pytest11`` entry point).

Needs pytest-asyncio (any mode): the fixture is async.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ivr.testing import IvrSim

try:
    import pytest_asyncio

    _fixture = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - pytest-asyncio is in the test extra
    _fixture = pytest.fixture


@_fixture
async def ivr_sim() -> AsyncIterator[IvrSim]:
    """Call flows on the built-in emulator: ``caller = await ivr_sim.call("flows/x.yaml")``."""
    sim = IvrSim()
    try:
        yield sim
    finally:
        await sim.close()
