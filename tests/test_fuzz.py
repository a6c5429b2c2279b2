"""Property-based fuzzing of everything that reads input from outside the process.

* the event socket: any frame (malformed JSON, wrong types, huge numbers, unknown event
  types, deep nesting, binary) is skipped or handled; nothing escapes the socket loop. Once
  over a real WebSocket on loopback into a real PbxClient, which must stay connected.
* the flow loader: any text gives a Flow or a FlowLoadError whose every line is
  ``file:line:col: severity: message`` - never another exception.
* the config loader: likewise, a WorkerConfig or a ConfigError of ``file:line:col`` lines.

Example counts are bounded so the whole file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from ivr.config import ConfigError, WorkerConfig
from ivr.config_loader import parse_config
from ivr.flow import FlowLoadError, load_flow_text
from ivr.pbx import PbxClient, PbxConfig
from ivr.pbx.events import DtmfReceived
from ivr.pbx.eventsocket import EventStream
from ivr.pbx.models import WsMessage

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIAG = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (error|warning): \S")

# --- generators -------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
entities = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda dn, kind, ident: f"/callcontrol/{dn}/{kind}/{ident}",
        st.text(alphabet=string.printable, max_size=8),
        st.sampled_from(["participants", "devices", "dns", ""]),
        st.one_of(st.integers(-(2**70), 2**70).map(str), st.text(alphabet=string.printable, max_size=10)),
    ),
)
# Message-shaped objects with every field possibly of the wrong type or out of range.
events = st.fixed_dictionaries(
    {},
    optional={
        "event_type": st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([0, 1, 2, 3, 4, 99]), json_values),
        "entity": st.one_of(entities, json_values),
        "attached_data": st.one_of(
            st.none(), st.dictionaries(st.sampled_from(["dtmf_input", "x"]), json_values, max_size=2), json_values
        ),
    },
)
messages = st.one_of(
    st.fixed_dictionaries(
        {"sequence": st.one_of(st.integers(-(2**70), 2**70), json_values), "event": st.one_of(events, json_values)}
    ),
    json_values,
)
frames = st.one_of(
    messages.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=200),
    st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),  # deep nesting
    st.integers(1, 5000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    messages.map(lambda m: json.dumps(m).encode("utf-8")),  # JSON in a binary frame
)


def _stream() -> EventStream:
    """An EventStream that is never run: only its parser is used."""
    cfg = PbxConfig(url="http://127.0.0.1:9", client_id="900", client_secret="s")

    async def nothing(*_a: Any) -> None:
        return None

    async def make() -> EventStream:
        return EventStream(cfg, None, resync=nothing, handle=nothing)  # type: ignore[arg-type]

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(make())
    finally:
        loop.close()


PARSER = _stream()


@FAST
@given(frames)
def test_event_parser_never_raises(frame):
    msg = PARSER._parse(frame)
    assert msg is None or isinstance(msg, WsMessage)
    if msg is not None:
        # What the socket loop does next with a parsed message must not raise either.
        assert isinstance(msg.sequence, int)
        msg.event.kind  # noqa: B018 - None for unknown types
        assert isinstance(msg.event.dtmf_digits, str)


# --- a real socket: hostile frames into a real PbxClient ---------------------------------


class HostilePbx:
    """Token, snapshot, 404 for everything else, and an event socket that sends ``frames``
    followed by one valid DTMF event (which the client must still deliver)."""

    def __init__(self, frames: list[str | bytes]) -> None:
        self.frames = frames
        self.sockets = 0
        self.sent_all = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/connect/token", self.token)
        app.router.add_get("/callcontrol", self.snapshot)
        app.router.add_get("/callcontrol/ws", self.ws)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    async def token(self, _r: web.Request) -> web.Response:
        return web.json_response({"token_type": "Bearer", "expires_in": 60, "access_token": "not-a-jwt"})

    async def snapshot(self, _r: web.Request) -> web.Response:
        return web.json_response([{"dn": "800", "type": "Wroutepoint", "devices": [], "participants": []}])

    async def not_found(self, _r: web.Request) -> web.Response:
        return web.json_response({"error": "not_found", "error_description": "nothing here"}, status=404)

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.sockets += 1
        if self.sockets == 1:
            for frame in self.frames:
                if isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_str(frame)
            last = {"sequence": 10**30, "event": {"event_type": 2, "entity": "/callcontrol/800/participants/7",
                                                 "attached_data": {"dtmf_input": "5"}}}
            await ws.send_str(json.dumps(last))
            self.sent_all.set()
        async for msg in ws:
            if msg.type == WSMsgType.CLOSE:
                break
        return ws


async def _hostile_session(frames: list[str | bytes]) -> None:
    pbx = HostilePbx(frames)
    runner = web.AppRunner(pbx.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    cfg = PbxConfig(url=f"http://127.0.0.1:{port}", client_id="900", client_secret="s", retry_attempts=0)
    try:
        async with PbxClient(cfg) as client:
            events = client.events()
            await asyncio.wait_for(pbx.sent_all.wait(), 10)
            digit = await events.next(DtmfReceived, timeout=10)
            assert (digit.dn, digit.participant_id, digit.digits) == ("800", 7, "5")
            assert client.event_stream.is_connected
            assert client.event_stream.connects == 1 and pbx.sockets == 1, "the hostile frames cost the socket"
    finally:
        await runner.cleanup()


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(frames, min_size=20, max_size=60))
def test_hostile_frames_over_a_real_socket_do_not_break_the_client(frames_list):
    fixed: list[str | bytes] = [
        b"\xff\xfe\x00binary", "", "null", "[]", "{}", '{"sequence": "1", "event": {}}',
        '{"sequence": 99999999999999999999999999999, "event": {"event_type": 12345678901234567890}}',
        '{"sequence": 1, "event": {"event_type": 2, "entity": "/callcontrol/800/participants/x"}}',
        '{"sequence": 2, "event": {"event_type": 0, "entity": "/callcontrol/800/participants/1"}}',
        '{"sequence": 3, "event": {"event_type": 0, "entity": "/callcontrol/%2F..%2F/devices/%ZZ"}}',
        "[" * 100_000,
    ]
    asyncio.run(_hostile_session(fixed + frames_list))


# --- the flow loader ----------------------------------------------------------------------

STEP_NAMES = [
    "answer", "hangup", "play", "say", "menu", "gather", "transfer", "record", "voicemail", "set", "if",
    "switch", "goto", "subflow", "http", "pause", "log", "attach_data", "return", "hours", "bogus",
]
steps = st.one_of(
    st.sampled_from(STEP_NAMES),
    st.dictionaries(st.sampled_from([*STEP_NAMES, "id", "when", "then", "else"]), json_values, min_size=1, max_size=3),
    json_values,
)
flow_docs = st.fixed_dictionaries(
    {},
    optional={
        "steps": st.one_of(st.lists(steps, max_size=6), json_values),
        "on_error": st.one_of(st.lists(steps, max_size=3), json_values),
        "on_hangup": json_values,
        "vars": json_values,
        "params": json_values,
        "name": json_values,
    },
)


def _yaml(doc: Any) -> str:
    import io

    buf = io.StringIO()
    YAML(typ="safe", pure=True).dump(doc, buf)
    return buf.getvalue()


yaml_texts = st.one_of(
    st.text(max_size=300),
    flow_docs.map(_yaml),
    json_values.map(_yaml),
    flow_docs.map(json.dumps),  # JSON is YAML too
    st.integers(1, 3000).map(
        lambda n: "steps:\n" + "".join("  " * i + "- if: x\n" + "  " * i + "  then:\n" for i in range(min(n, 300)))),
    st.integers(1, 20000).map(lambda n: "steps: " + "[" * n + "]" * n),
    st.integers(1, 3000).map(lambda n: "steps:\n" + "  - answer\n" * n),  # long
    st.just("a: &x [*x]\n"),  # a self-referencing alias
    st.just("steps: [!!python/object:os.system {}]\n"),
    st.just("x: " + "&a " * 100 + "1\n"),
)


def _check_diagnostics(text: str, file: str) -> None:
    lines = text.splitlines()
    assert lines, "an error without a message"
    for line in lines:
        m = DIAG.match(line)
        assert m, f"not file:line:col: {line!r}"
        assert m["file"] == file and int(m["line"]) >= 1 and int(m["col"]) >= 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(yaml_texts)
def test_flow_loader_gives_a_flow_or_positioned_errors(text):
    try:
        load_flow_text(text, "fuzz.yaml", check_files=False)
    except FlowLoadError as exc:
        _check_diagnostics(str(exc), "fuzz.yaml")


# --- the config loader --------------------------------------------------------------------

config_docs = st.fixed_dictionaries(
    {},
    optional={
        "pbx": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "url": st.one_of(st.sampled_from(["https://pbx:5001", "ftp://x", "http://"]), json_values),
                    "client_id": json_values,
                    "client_secret_env": json_values,
                    "verify_tls": json_values,
                },
            ),
            json_values,
        ),
        "routes": st.one_of(
            st.lists(st.fixed_dictionaries({}, optional={"route_point": json_values,
                                                         "flow": st.one_of(st.just("f.yaml"), json_values)}), max_size=3),
            json_values,
        ),
        "overflow": json_values,
        "drain_timeout": json_values,
        "max_calls": json_values,
        "metrics": st.one_of(st.fixed_dictionaries({}, optional={"port": json_values, "host": json_values}), json_values),
        "speech": json_values,
    },
)
config_texts = st.one_of(st.text(max_size=300), config_docs.map(_yaml), json_values.map(_yaml),
                         st.integers(1, 3000).map(lambda n: "pbx: " + "{a: " * n + "1" + "}" * n))


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cfg")
    (folder / "f.yaml").write_text("steps: [answer]\n")
    return folder


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=config_texts)
def test_config_loader_gives_a_config_or_positioned_errors(config_dir, text):
    try:
        config = parse_config(text, "ivr.yaml", base_dir=config_dir)
    except ConfigError as exc:
        _check_diagnostics(str(exc), "ivr.yaml")
    else:
        assert isinstance(config, WorkerConfig)


def test_a_huge_flow_is_refused_with_a_position():
    text = "steps:\n" + "  - {log: x}\n" * 300_000
    with pytest.raises(FlowLoadError) as err:
        load_flow_text(text, "big.yaml", check_files=False)
    _check_diagnostics(str(err.value), "big.yaml")
