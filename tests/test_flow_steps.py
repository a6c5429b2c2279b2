"""Step kinds as their models declare them: an empty branch carries on, the same in the
interpreter (over the real emulator and worker), the diagram and validation."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from ivr.flow import load_flow
from ivr.flow.graph import build_graph
from ivr.flow.schema import STEP_TYPES
from ivr.simulate import SimulatedCall
from ivr.validate import validate_paths

EMPTY_BRANCHES = """
    steps:
      - answer
      - http: {{url: "{base}/broken", on_failure: []}}
      - log: "after http {{{{ last.status }}}}"
      - transfer: {{to: "101", timeout: 5, on_answered: []}}
      - log: "after transfer {{{{ last.status }}}}"
    on_error:
      - log: "on_error ran"
"""


@pytest.fixture
async def broken_service() -> AsyncIterator[str]:
    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=500, text="down")

    app = web.Application()
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def write(folder: Path, text: str) -> Path:
    path = folder / "flow.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


async def test_an_empty_branch_carries_on_after_the_step(tmp_path: Path, broken_service: str) -> None:
    path = write(tmp_path, EMPTY_BRANCHES.format(base=broken_service))
    report = await SimulatedCall(path, recordings_dir=tmp_path / "rec", timeout=20).run()
    got = [(s.step, s.result.get("message") if s.step == "log" else None) for s in report.record.steps]
    # `on_failure: []`: the failed request is not an error; `on_answered: []`: the flow goes on.
    assert got == [("answer", None), ("http", None), ("log", "after http 500"), ("transfer", None),
                   ("log", "after transfer answered")]
    assert report.record.errors == []


def test_graph_and_validate_agree_that_an_empty_branch_carries_on(tmp_path: Path) -> None:
    path = write(tmp_path, EMPTY_BRANCHES.format(base="https://example.org"))
    assert [d for d in validate_paths([path]) if d.is_error] == []
    graph = build_graph(load_flow(path))
    node = {" / ".join(n.lines): nid for nid, n in graph.nodes.items()}
    edges = {(e.src, e.label, e.dst, e.style) for e in graph.edges}
    http, after_http = node["http GET https://example.org/broken"], node["log after http {{ last.status }}"]
    transfer, after_transfer = node["transfer 101"], node["log after transfer {{ last.status }}"]
    assert (http, "ok / failure", after_http, "solid") in edges  # no dashed edge to on error
    assert not any(src == http and dst == node["on error"] for src, _, dst, _ in edges)
    assert (transfer, "answered / busy / no answer / failed", after_transfer, "solid") in edges


def test_every_step_kind_declares_itself() -> None:
    # What the interpreter, graph and checks read from each model: a label for every step,
    # branch outcomes whose paths are the model's own nested step lists.
    for kind, cls in STEP_TYPES.items():
        assert cls.kind == kind
        assert isinstance(cls.audio, bool) and cls.waits_for in (None, "prompt", "input", "transfer",
                                                                   "recording", "http", "conversation")
    flow = load_flow(Path(__file__).resolve().parent.parent / "flows" / "main_menu.yaml", check_files=False)
    menu = next(step for step, _ in flow.walk() if step.kind == "menu")
    assert [(o.key, o.label, o.path) for o in menu.outcomes()][-2:] == [
        ("no_input", "no input", ("menu", "on_no_input")), ("no_match", "no match", ("menu", "on_no_match"))]
    assert menu.label() == "menu main_menu.wav" and menu.audio and menu.waits_for == "input"
    assert menu.outcome("9") is None  # a key without a choice: nothing to run, the flow carries on
