"""``ivr dev`` server over real loopback sockets: the page's WebSocket driven by aiohttp's client."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile

from ivr.dev import DevServer, TargetError, load_target
from ivr.dev.cli import main as dev_main
from ivr.flow import FlowLoadError

MENU_FLOW = """\
name: dev_menu
vars: {greeted: false}
steps:
  - answer
  - set: {greeted: true}
  - id: main
    menu:
      prompt: tone.wav
      timeout: 8
      retries: 0
      choices:
        "1":
          - transfer: {to: "101", timeout: 5}
  - hangup
"""

BROKEN_FLOW = """\
name: dev_menu
steps:
  - answer
  - play: {files: [tone.wav], loop: "twice"}
"""


def write_menu_flow(folder: Path, seconds: float = 1.0) -> Path:
    """``folder/menu.yaml`` plus ``folder/tone.wav`` (a 440 Hz tone of ``seconds``); returns the flow."""
    t = np.arange(int(8000 * seconds)) / 8000
    soundfile.write(str(folder / "tone.wav"), (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000,
                    subtype="PCM_16")
    flow = folder / "menu.yaml"
    flow.write_text(MENU_FLOW)
    return flow

FAST = {"ring_seconds": 0.1, "no_answer_timeout": 0.5}


class Page:
    """The page's side of the WebSocket: collects JSON messages and binary audio."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.audio = bytearray()
        self.frame_sizes: set[int] = set()

    async def until(self, pred, timeout: float = 8.0) -> Any:
        """Read until ``pred(message)`` is truthy for a JSON message; returns that message."""
        for m in self.messages:
            if pred(m):
                return m
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; got types {[m['type'] for m in self.messages]}")
            msg = await self.ws.receive(timeout=left)
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.audio += msg.data
                self.frame_sizes.add(len(msg.data))
            elif msg.type == aiohttp.WSMsgType.TEXT:
                m = json.loads(msg.data)
                self.messages.append(m)
                if pred(m):
                    return m
            else:
                raise AssertionError(f"socket closed: {msg.type}")

    async def read_for(self, seconds: float) -> None:
        """Take in whatever arrives during ``seconds``."""
        try:
            await self.until(lambda m: False, timeout=seconds)
        except (AssertionError, asyncio.TimeoutError):
            pass

    async def send(self, **msg: Any) -> None:
        await self.ws.send_str(json.dumps(msg))


async def open_page(server: DevServer, session: aiohttp.ClientSession) -> Page:
    page = Page(await session.ws_connect(server.url + "ws"))
    await page.until(lambda m: m["type"] == "hello")
    return page


@pytest.fixture
async def dev(tmp_path: Path):
    flow = write_menu_flow(tmp_path)
    server = DevServer(load_target(flow), port=0, reload_interval=0.1, emulator=FAST)
    async with server.running():
        yield server


async def test_page_and_assets_are_served(dev: DevServer) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(dev.url) as r:
            html = await r.text()
            assert r.status == 200 and 'id="keypad"' in html and "/static/app.js" in html
        for asset in ("app.js", "style.css", "capture-worklet.js"):
            async with s.get(dev.url + "static/" + asset) as r:
                assert r.status == 200, asset
                assert len(await r.read()) > 100


async def test_call_keys_audio_and_transfer(dev: DevServer) -> None:
    async with aiohttp.ClientSession() as s:
        page = await open_page(dev, s)
        hello = page.messages[0]
        assert hello["route_point"] == "800" and hello["caller"] == "+4930123456"
        await page.send(type="call", caller="+4930555111")
        started = await page.until(lambda m: m["type"] == "call_started")
        callid = started["callid"]
        # The flow's variables and the menu listening show up in the live view.
        await page.until(lambda m: m["type"] == "live" and str(m.get("activity", "")).endswith("listening for keys"))
        await page.until(lambda m: m["type"] == "live" and m.get("vars", {}).get("greeted") is True)
        # Let the 1 s tone play a while so audible audio reaches us, then press 1.
        await page.until(lambda m: m["type"] == "stats" and m["audio_bytes"] >= 8000 * 2 * 0.6)
        await page.send(type="dtmf", digits="1")
        transferred = await page.until(lambda m: m["type"] == "event" and m["entry"]["event"] == "routed")
        assert transferred["entry"]["destination"] == "101" and transferred["entry"]["result"] == "answered"
        record = await page.until(lambda m: m["type"] == "record")
        assert record["record"]["outcome"] == "transferred"
        assert record["record"]["digits"] == ["1"]
        assert [s["step"] for s in record["record"]["steps"]][:2] == ["answer", "set"]
        steps = [s for m in page.messages if m["type"] == "live" for s in m.get("new_steps", [])]
        assert [s["step"] for s in steps][:3] == ["answer", "set", "menu"]
        events = [m["entry"]["event"] for m in page.messages if m["type"] == "event"]
        assert events[0] == "created" and "dtmf" in events
        await page.send(type="hangup")
        await page.until(lambda m: m["type"] == "call_ended" and m["callid"] == callid)
        await page.ws.close()
    assert page.frame_sizes == {320}
    pcm = np.frombuffer(bytes(page.audio), dtype="<i2")
    # The tone is at half scale: most of one second of it must have come through intact.
    assert np.abs(pcm).max() > 10000
    assert int((np.abs(pcm) > 1000).sum()) > 8000 * 0.5


async def test_audio_is_paced_in_real_time(dev: DevServer) -> None:
    async with aiohttp.ClientSession() as s:
        page = await open_page(dev, s)
        await page.send(type="call")
        await page.until(lambda m: m["type"] == "call_started")
        t0 = time.monotonic()
        await page.read_for(1.5)
        elapsed = time.monotonic() - t0
        seconds = len(page.audio) / 16000
        # Never ahead of the clock, and not far behind it (2 shared cores: generous slack).
        assert seconds <= elapsed + 0.1
        assert seconds >= elapsed - 0.6
        await page.ws.close()


async def test_microphone_frames_reach_the_ivr(dev: DevServer) -> None:
    async with aiohttp.ClientSession() as s:
        page = await open_page(dev, s)
        await page.send(type="call")
        callid = (await page.until(lambda m: m["type"] == "call_started"))["callid"]
        await page.until(lambda m: m["type"] == "live" and str(m.get("activity", "")).endswith("listening for keys"))
        call = dev.calls[callid]
        heard: list[np.ndarray] = []
        call.media.add_listener(lambda frame: heard.append(np.array(frame)))
        t = np.arange(160) / 8000
        frame = (8000 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()
        for _ in range(15):  # 300 ms of "voice", sent like the page does: one frame per 20 ms
            await page.ws.send_bytes(frame)
            await asyncio.sleep(0.02)
        stats = await page.until(lambda m: m["type"] == "stats" and m["mic_bytes"] >= 15 * 320)
        assert stats["mic_bytes"] == 15 * 320
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sum(int((np.abs(f) > 4000).sum()) for f in heard) < 15 * 100:
            await asyncio.sleep(0.05)
        # The IVR's inbound stream carried our frames: loud samples, as many as we sent (roughly).
        assert sum(int((np.abs(f) > 4000).sum()) for f in heard) >= 15 * 100
        await page.ws.close()


async def test_wav_and_bad_messages(dev: DevServer, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as s:
        page = await open_page(dev, s)
        await page.send(type="dtmf", digits="1")
        err = await page.until(lambda m: m["type"] == "error")
        assert "no active call" in err["message"]
        await page.ws.send_str("not json")
        await page.until(lambda m: m["type"] == "error" and "not JSON" in m["message"])
        await page.send(type="call")
        await page.until(lambda m: m["type"] == "call_started")
        await page.send(type="dtmf", digits="x")
        await page.until(lambda m: m["type"] == "error" and "'x'" in m["message"])
        await page.send(type="call")
        await page.until(lambda m: m["type"] == "error" and "still active" in m["message"])
        wav = base64.b64encode((tmp_path / "tone.wav").read_bytes()).decode()
        await page.send(type="wav", data=wav)
        queued = await page.until(lambda m: m["type"] == "wav_queued")
        assert abs(queued["seconds"] - 1.0) < 0.01
        await page.until(lambda m: m["type"] == "event" and m["entry"]["event"] == "audio")
        await page.ws.close()


async def test_reload_pushes_validation_errors_then_success(dev: DevServer, tmp_path: Path) -> None:
    flow = tmp_path / "menu.yaml"
    good = flow.read_text()
    async with aiohttp.ClientSession() as s:
        page = await open_page(dev, s)
        flow.write_text(BROKEN_FLOW)
        bad = await page.until(lambda m: m["type"] == "reload")
        assert bad["ok"] is False and bad["file"] == str(flow.resolve())
        texts = [d["text"] for d in bad["diagnostics"]]
        assert any(t.startswith(f"{flow}:4:") and "loop" in t for t in texts), texts
        first = next(d for d in bad["diagnostics"] if d["severity"] == "error")
        assert first["line"] == 4 and first["col"] > 1
        # A page opened now learns the current state in its hello.
        late = await open_page(dev, s)
        assert late.messages[0]["reload"]["ok"] is False
        await late.ws.close()
        flow.write_text(good + "  - set: {again: 1}\n")
        os.utime(flow, (time.time() + 2, time.time() + 2))  # a new mtime even on coarse clocks
        fixed = await page.until(lambda m: m["type"] == "reload" and m["ok"])
        assert fixed["version"]
        # Warnings come along with a good reload: the added step sits after the hangup.
        assert [(d["severity"], d["line"]) for d in fixed["diagnostics"]] == [("warning", 15)]
        assert "unreachable" in fixed["diagnostics"][0]["text"]
        await page.ws.close()


async def test_page_going_away_hangs_up_its_call(dev: DevServer) -> None:
    async with aiohttp.ClientSession() as s:
        page = await open_page(dev, s)
        await page.send(type="call")
        callid = (await page.until(lambda m: m["type"] == "call_started"))["callid"]
        await page.ws.close()
    deadline = time.monotonic() + 3
    while dev.emu.call_info(callid)["state"] != "ended" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    info = dev.emu.call_info(callid)
    assert info["state"] == "ended"
    assert info["log"][-1] == {**info["log"][-1], "event": "dropped", "by": "caller"}


def test_targets_and_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow = write_menu_flow(tmp_path)
    cfg = tmp_path / "ivr.yaml"
    cfg.write_text(f"pbx: {{url: https://pbx.example.com, client_id: '1', client_secret_env: NOPE}}\n"
                   f"routes:\n  - route_point: '810'\n    flow: {flow.name}\naudio_dirs: [.]\n")
    target = load_target(cfg)
    assert target.is_config and target.route_point == "810" and target.flow_paths == [flow.resolve()]
    wc = target.worker_config("http://127.0.0.1:9", "900", "s3cret")
    assert wc.pbx.url == "http://127.0.0.1:9" and wc.records is None and wc.path("x") == tmp_path / "x"
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("pbx: {url: http://x, client_id: '1'}\nroutes: []\n")
    with pytest.raises(TargetError, match=r"bad.yaml:\d+:\d+: error: .*routes"):
        load_target(bad_cfg)
    assert dev_main([str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml: no such file" in capsys.readouterr().err
    (tmp_path / "broken.yaml").write_text(BROKEN_FLOW)
    assert dev_main([str(tmp_path / "broken.yaml"), "--port", "0"]) == 1
    assert "broken.yaml:4:" in capsys.readouterr().err
    assert dev_main([str(flow), "--port", "70000"]) == 2


async def test_broken_flow_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(BROKEN_FLOW)
    server = DevServer(load_target(tmp_path / "broken.yaml"), port=0)
    with pytest.raises(FlowLoadError, match=r"broken.yaml:4:"):
        await server.start()


async def test_pages_from_other_origins_and_rebound_hosts_are_refused(dev: DevServer) -> None:
    port = dev.port
    ws_url = dev.url + "ws"
    hostile = [
        {"Origin": "http://evil.example"},  # a page elsewhere, open in the developer's browser
        {"Origin": "null"},  # a sandboxed frame or a file:// page
        {"Origin": f"http://localhost:{port + 1 if port < 65535 else port - 1}"},  # another local server's page
        {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},  # DNS rebinding: same "origin"
        {"Host": f"evil.example:{port}"},
    ]
    async with aiohttp.ClientSession() as session:
        for headers in hostile:
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await session.ws_connect(ws_url, headers=headers)
            assert err.value.status == 403, headers
        async with session.get(dev.url, headers={"Host": f"rebound.example:{port}"}) as resp:
            assert resp.status == 403 and "is not allowed" in await resp.text()
        assert not dev.sessions and not dev.emu.controller.pbx.calls  # nothing was opened or placed
        # the page itself (either loopback name) and clients without an Origin are served
        for headers in ({"Origin": f"http://127.0.0.1:{port}"},
                        {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}, {}):
            ws = await session.ws_connect(ws_url, headers=headers)
            page = Page(ws)
            assert (await page.until(lambda m: m["type"] == "hello"))["route_point"]
            await ws.close()


def test_allowed_host_names(tmp_path: Path) -> None:
    server = DevServer(load_target(write_menu_flow(tmp_path)), host="0.0.0.0", port=8080, allowed_hosts=["ivr.lan"])
    assert server.refusal("ivr.lan:8080", "http://ivr.lan:8080") is None
    assert server.refusal("[::1]:8080", "http://[::1]:8080") is None
    assert server.refusal("0.0.0.0:8080", None) is not None  # a wildcard bind is not a name
    assert server.refusal("ivr.lan:8080", "https://ivr.lan") is not None  # port 443 is another origin
