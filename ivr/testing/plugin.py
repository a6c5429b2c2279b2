"""pytest plugin: the ``ivr_sim`` fixture (registered through the ``pytest11`` entry point).

Needs pytest-asyncio, in any mode and with no configuration: an ``async def`` test that uses
``ivr_sim`` is marked ``@pytest.mark.asyncio`` by this plugin (pytest-asyncio's default
``strict`` mode runs only marked tests). Tests that use ``ivr_sim`` run on a
virtual clock (:mod:`ivr.testing.clock`) when pytest-asyncio offers the
``pytest_asyncio_loop_factories`` hook (1.4 or later); ``@pytest.mark.ivr_realtime`` or
``--ivr-realtime`` keeps a test on a normal loop (a peer in another process, such as a
local LLM server, needs real time). Other tests get the loop they would get without us.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

from ivr.testing import IvrSim
from ivr.virtual_time import VirtualTimeLoop

try:
    import pytest_asyncio

    _fixture = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - pytest-asyncio is in the test extra
    _fixture = pytest.fixture  # type: ignore[assignment]

REALTIME_MARK = "ivr_realtime"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("ivr").addoption(
        "--ivr-realtime", action="store_true",
        help="run ivr_sim tests on a normal event loop (real time) instead of the virtual clock",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{REALTIME_MARK}: run this ivr_sim test in real time, not on the virtual clock")


def wants_virtual_time(item: Any) -> bool:
    """Whether a test runs on the virtual clock: it uses ``ivr_sim`` and did not opt out."""
    return ("ivr_sim" in getattr(item, "fixturenames", ())
            and item.get_closest_marker(REALTIME_MARK) is None
            and not item.config.getoption("ivr_realtime", False))


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: Any, name: str, obj: object) -> None:
    # Mark the test function before pytest collects it: pytest-asyncio decides at collection
    # (and when it picks the loop) whether a function is an asyncio test.
    if (inspect.iscoroutinefunction(obj) and collector.funcnamefilter(name) and _asks_for_ivr_sim(obj)
            and not any(getattr(m, "name", "") == "asyncio" for m in getattr(obj, "pytestmark", []))):
        pytest.mark.asyncio(obj)  # works in strict mode: no asyncio_mode needed
    # pytest collects it as usual


def _asks_for_ivr_sim(func: Any) -> bool:
    try:
        if "ivr_sim" in inspect.signature(func).parameters:
            return True
    except (TypeError, ValueError):
        return False
    return any(getattr(m, "name", "") == "usefixtures" and "ivr_sim" in m.args
               for m in getattr(func, "pytestmark", []))


@pytest.hookimpl(optionalhook=True, trylast=True)  # a conftest's own loop factories win
def pytest_asyncio_loop_factories(config: pytest.Config, item: Any) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    # pytest-asyncio needs an answer for every async test once any plugin implements this
    # hook: other tests get asyncio.new_event_loop, which asks the configured policy as usual.
    if wants_virtual_time(item):
        return {"ivr_virtual_time": VirtualTimeLoop}
    return {"asyncio": asyncio.new_event_loop}


@_fixture
async def ivr_sim() -> AsyncIterator[IvrSim]:
    """Call flows on the built-in emulator: ``caller = await ivr_sim.call("flows/x.yaml")``."""
    sim = IvrSim()
    try:
        yield sim
    finally:
        await sim.close()
