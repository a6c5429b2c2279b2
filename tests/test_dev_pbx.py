"""``ivr dev --pbx-config``: the page's calls reach a flow that reads the PBX description (dial by
name from its users), over the dev server's WebSocket on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from ivr.dev import DevServer, load_target
from ivr.dev.cli import main as dev_main
from ivr.emulator.xapi import load_description
from tests.test_dev_server import FAST, open_page

PBX = """\
users:
  - {number: "201", first_name: Anna, last_name: Miller}
  - {number: "202", first_name: Ben, last_name: Parker, presence: Away}
"""
FLOW = """\
steps:
  - answer
  - directory:
      match: last
      check_presence: true
      on_unavailable: [{say: "{{ last.transfer.reason }}"}]
"""


async def test_dev_server_with_a_pbx_description(tmp_path: Path) -> None:
    (tmp_path / "pbx.yaml").write_text(PBX)
    (tmp_path / "dir.yaml").write_text(FLOW)
    server = DevServer(load_target(tmp_path / "dir.yaml"), port=0, emulator=FAST,
                       pbx=load_description(tmp_path / "pbx.yaml"))
    async with server.running(), aiohttp.ClientSession() as s:
        assert server.worker is not None and server.worker.xapi is not None
        assert server.worker.xapi.interval == 2.0  # an author's change shows on the next call
        page = await open_page(server, s)
        await page.send(type="call")
        await page.until(lambda m: m["type"] == "live" and str(m.get("activity", "")).endswith("listening for keys"))
        await page.send(type="dtmf", digits="6455#")
        # the live view shows the announcement playing, then the page presses its key
        await page.until(lambda m: m["type"] == "live" and "For Anna Miller, press 1" in json.dumps(m))
        await page.send(type="dtmf", digits="1")
        routed = await page.until(lambda m: m["type"] == "event" and m["entry"]["event"] == "routed")
        assert routed["entry"]["destination"] == "201" and routed["entry"]["result"] == "answered"


def test_dev_cli_rejects_a_bad_description(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "dir.yaml").write_text(FLOW)
    (tmp_path / "bad.yaml").write_text("users: [{number: '201', colour: red}]\n")
    assert dev_main([str(tmp_path / "dir.yaml"), "--pbx-config", str(tmp_path / "bad.yaml"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.yaml:1:" in err and "colour" in err
