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
departments:
  - {name: Sales, members: ["201"]}
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


async def test_the_page_flips_presence_and_forced_mode(tmp_path: Path) -> None:
    (tmp_path / "pbx.yaml").write_text(PBX)
    (tmp_path / "dir.yaml").write_text(FLOW)
    server = DevServer(load_target(tmp_path / "dir.yaml"), port=0, emulator=FAST,
                       pbx=load_description(tmp_path / "pbx.yaml"))
    async with server.running(), aiohttp.ClientSession() as s:
        page = await open_page(server, s)
        pbx = page.messages[0]["pbx"]
        assert [(u["number"], u["presence"]) for u in pbx["users"]] == [("201", "Available"), ("202", "Away")]
        assert pbx["departments"] == [{"name": "Sales", "forced": "Default"}] and "ForceClosed" in pbx["modes"]
        await page.send(type="pbx", user="201", presence="Out of office")
        view = await page.until(lambda m: m["type"] == "pbx")
        assert view["users"][0]["presence"] == "Out of office"
        assert server.worker is not None and server.worker.xapi is not None
        snap = server.worker.xapi.snapshot
        assert snap is not None and snap.user("201").CurrentProfileName == "Out of office"  # read at once
        await page.send(type="pbx", department="Sales", forced="ForceClosed")
        view = await page.until(lambda m: m["type"] == "pbx" and m["departments"][0]["forced"] == "ForceClosed")
        group = server.worker.xapi.snapshot.group("Sales")
        assert group is not None and group.CurrentGroupHours == "ForceClosed"
        await page.send(type="pbx", department="Nowhere", forced="ForceClosed")
        error = await page.until(lambda m: m["type"] == "error")
        assert "Nowhere" in error["message"]
        # the next call sees the change: Anna is out of office, nobody is rung
        await page.send(type="call")
        await page.until(lambda m: m["type"] == "live" and str(m.get("activity", "")).endswith("listening for keys"))
        await page.send(type="dtmf", digits="6455#")
        await page.until(lambda m: m["type"] == "live" and "For Anna Miller, press 1" in json.dumps(m))
        await page.send(type="dtmf", digits="1")
        await page.until(lambda m: m["type"] == "live" and "Anna is out of office today" in json.dumps(m))
        assert not any(m["type"] == "event" and m["entry"]["event"] == "routed" for m in page.messages)


def test_dev_cli_rejects_a_bad_description(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "dir.yaml").write_text(FLOW)
    (tmp_path / "bad.yaml").write_text("users: [{number: '201', colour: red}]\n")
    assert dev_main([str(tmp_path / "dir.yaml"), "--pbx-config", str(tmp_path / "bad.yaml"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.yaml:1:" in err and "colour" in err
