"""Caller-controlled data against an http step (and an agent http tool), over real loopback
servers: URL values are percent-encoded, errors and logs name only the host, custom headers
stay with their origin on redirects, a CRLF in a header is an error result."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fake_call import FakeCall

from ivr.simulate import SimulatedCall

SECRET = "tok-5e3cr3t-q"


async def serve(app: web.Application, host: str = "127.0.0.1") -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)  # the test server's own log is not the worker's
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://{host}:{port}"


@pytest.fixture
async def services() -> Any:
    """Service A on 127.0.0.1 and B on 127.0.0.2 (another host); each logs (path, headers)."""
    seen: list[tuple[str, str, dict[str, str]]] = []
    urls: dict[str, str] = {}

    def app(name: str) -> web.Application:
        async def any_path(request: web.Request) -> web.StreamResponse:
            seen.append((name, request.raw_path, dict(request.headers)))
            if request.path == "/to-b":
                raise web.HTTPFound(urls["b"] + "/landed")
            if request.path == "/to-a":
                raise web.HTTPTemporaryRedirect("/landed")
            if request.path == "/loop":
                raise web.HTTPFound(f"/loop?token={SECRET}")
            return web.json_response({"ok": True})

        a = web.Application()
        a.router.add_route("*", "/{tail:.*}", any_path)
        return a

    runner_a, urls["a"] = await serve(app("a"))
    runner_b, urls["b"] = await serve(app("b"), "127.0.0.2")
    yield urls, seen
    await runner_a.cleanup()
    await runner_b.cleanup()


def write(folder: Path, text: str) -> Path:
    path = folder / "flow.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


async def run(path: Path, **kwargs: Any) -> Any:
    return await SimulatedCall(path, recordings_dir=path.parent / "rec", timeout=30, **kwargs).run()


async def test_values_in_an_http_url_are_percent_encoded(tmp_path: Path, services: Any) -> None:
    urls, seen = services
    path = write(tmp_path, f"""
    params: {{base: "{urls['a']}", sub: "v1/items"}}
    steps:
      - http: {{url: "{{{{ params.base | raw_url }}}}/lookup/{{{{ caller.number }}}}?q={{{{ caller.number }}}}"}}
      - http: {{url: "{{{{ params.base | raw_url }}}}/{{{{ params.sub | raw_url }}}}"}}
      - http: {{url: "{{{{ params.base | raw_url }}}}/grüße?n={{{{ 'ä b&c' }}}}", query: {{k: "x&y"}}}}
      - hangup
    """)
    report = await run(path, caller="../../admin/delete?all=1#")
    assert not report.record.errors
    paths = [p for _, p, _ in seen]
    evil = "..%2F..%2Fadmin%2Fdelete%3Fall%3D1%23"
    assert paths[:2] == [f"/lookup/{evil}?q={evil}", "/v1/items"]  # `| raw_url` keeps a trusted path as it is
    assert paths[2] == "/gr%C3%BC%C3%9Fe?n=%C3%A4%20b%26c&k=x%26y"  # the author's own text and query: encoded


async def test_http_errors_name_only_the_host(tmp_path: Path, services: Any,
                                              caplog: pytest.LogCaptureFixture) -> None:
    urls, _ = services
    path = write(tmp_path, f"""
    vars: {{base: "{urls['a']}"}}
    steps:
      - http: {{url: "{{{{ base | raw_url }}}}/loop?token={SECRET}", on_failure: [{{log: "A {{{{ last.error }}}}"}}]}}
      - http: {{url: "{{{{ 'ftp://files.example/x?token={SECRET}' | raw_url }}}}",
                on_failure: [{{log: "B {{{{ last.error }}}}"}}]}}
      - http: {{url: "{{{{ 'http://api.example:99999/x?token={SECRET}' | raw_url }}}}",
                on_failure: [{{log: "C {{{{ last.error }}}}"}}]}}
      - http: {{url: "{{{{ base | raw_url }}}}/loop?token={SECRET}"}}
    """)
    caplog.set_level(logging.DEBUG)
    report = await run(path)
    messages = [s.result["message"] for s in report.record.steps if s.step == "log"]
    assert messages == ["A 127.0.0.1: more than 10 redirects", "B files.example: not an http(s) URL",
                        "C api.example: invalid URL"]
    assert report.record.errors
    assert all("http GET failed: 127.0.0.1: more than 10 redirects" in e for e in report.record.errors)
    assert "flow.yaml:" in report.record.errors[0]  # where: the step's file and line
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("ivr")]
    everything = repr(report.record.steps) + repr(report.record.errors) + repr(ours)
    assert SECRET not in everything


async def test_redirects_keep_custom_headers_at_their_origin(tmp_path: Path, services: Any) -> None:
    urls, seen = services
    path = write(tmp_path, f"""
    vars: {{base: "{urls['a']}"}}
    steps:
      - http: {{url: "{{{{ base | raw_url }}}}/to-b", headers: {{X-Api-Key: "{SECRET}", Authorization: "Basic {SECRET}",
                Accept: application/json}}}}
      - http: {{method: POST, url: "{{{{ base | raw_url }}}}/to-a", headers: {{X-Api-Key: "{SECRET}"}}, json: {{n: 1}}}}
      - hangup
    """)
    report = await run(path)
    assert not report.record.errors
    hops = [(name, p) for name, p, _ in seen]
    assert hops == [("a", "/to-b"), ("b", "/landed"), ("a", "/to-a"), ("a", "/landed")]
    at_b = seen[1][2]
    assert "X-Api-Key" not in at_b and "Authorization" not in at_b  # another host: dropped
    assert at_b["Accept"] == "application/json"  # harmless headers go along
    assert seen[3][2]["X-Api-Key"] == SECRET  # same origin (a 307 keeps method and body): kept


async def test_a_crlf_in_an_agent_http_tool_header_is_an_error_result(services: Any) -> None:
    from ivr.agent import AgentTools, HttpTool
    from ivr.agent.tools import ToolBox
    from ivr.speech.base import ToolCall

    urls, seen = services
    tools = AgentTools(http=(HttpTool(name="lookup", url=urls["a"] + "/orders/{{ args.id }}",
                                      headers={"X-Order": "{{ args.id }}"}, parameters={"id": "string"}),))
    box = ToolBox(tools, call=FakeCall(), variables={})
    outcome = await box.run(ToolCall(id="1", name="lookup", arguments={"id": "7\r\nX-Injected: 1"}))
    assert outcome.end is None
    assert outcome.result == {"error": "lookup: request failed: 127.0.0.1: header 'X-Order' has a line break or NUL in it"}
    assert seen == []  # nothing was sent
    ok = await box.run(ToolCall(id="2", name="lookup", arguments={"id": "a/b"}))
    assert ok.result["status"] == 200 and seen[0][1] == "/orders/a%2Fb"


async def test_an_agent_argument_over_the_template_limits_is_an_error_result(services: Any) -> None:
    from ivr.agent import AgentTools, HttpTool
    from ivr.agent.tools import ToolBox
    from ivr.speech.base import ToolCall

    urls, seen = services
    tools = AgentTools(http=(HttpTool(name="lookup", url=urls["a"] + "/orders/{{ args.id * 3 }}",
                                      parameters={"id": "string"}),))
    outcome = await ToolBox(tools, call=FakeCall(), variables={}).run(
        ToolCall(id="1", name="lookup", arguments={"id": "x" * 50_000}))
    assert outcome.result["error"].startswith("lookup: url template") and "repetition" in outcome.result["error"]
    assert seen == []


async def test_a_failing_url_template_names_the_step_not_the_url(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, f"""
    steps:
      - http: {{url: "https://api.example/x?key={SECRET}&n={{{{ nosuch }}}}"}}
    """)
    report = await run(path)
    assert report.record.errors[0] == ("flow.yaml:2: http GET: url template for api.example failed: "
                                       "'nosuch' is undefined")
    assert SECRET not in repr(report.record.errors) + caplog.text
