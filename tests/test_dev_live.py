"""``ivr dev``'s live view: the flow's diagram with the running step and the path taken,
steps and variables; ``--at`` pins the flows' clock. Over the page's real WebSocket."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from test_dev_server import FAST, open_page, write_menu_flow

from ivr.dev import DevServer, load_target
from ivr.dev.cli import main as dev_main
from ivr.dev.diagram import flow_diagram

ROOT = Path(__file__).resolve().parent.parent


def test_the_diagram_maps_every_step_of_the_shipped_flows_to_a_node() -> None:
    for name in ("main_menu.yaml", "speech_menu.yaml", "pin_entry.yaml", "voicemail.yaml"):
        diagram = flow_diagram(ROOT / "flows" / name)
        assert diagram is not None, name
        nodes = {n for n in diagram.node_at.values()}
        drawn = set(diagram.svg.split('data-node="')[1:]) and {
            part.split('"', 1)[0] for part in diagram.svg.split('data-node="')[1:]}
        assert nodes and nodes <= drawn, name
        assert "<script" not in diagram.svg and "http://www.w3.org/2000/svg" in diagram.svg
    main = flow_diagram(ROOT / "flows" / "main_menu.yaml")
    assert main is not None
    # two steps written on one line are two nodes: on_busy: [{play: busy.wav}, {goto: voicemail}]
    line = next(i for i, text in enumerate((ROOT / "flows" / "main_menu.yaml").read_text().splitlines(), 1)
                if '"101"' in text)
    on_line = {k[2]: v for k, v in main.node_at.items() if k[1] == line}
    assert {"transfer 101", "play busy.wav", "goto voicemail", "goto operator"} <= set(on_line)
    assert len(set(on_line.values())) == len(on_line)


def test_python_flows_have_no_diagram(tmp_path: Path) -> None:
    flow = tmp_path / "f.py"
    flow.write_text("async def main(call):\n    await call.answer()\n")
    assert flow_diagram(flow) is None


async def test_live_view_sends_the_diagram_the_current_step_and_the_path(tmp_path: Path) -> None:
    flow = write_menu_flow(tmp_path, seconds=1.0)
    server = DevServer(load_target(flow), port=0, reload_interval=0.1, emulator=FAST)
    async with server.running(), aiohttp.ClientSession() as s:
        page = await open_page(server, s)
        await page.send(type="call")
        diagram = await page.until(lambda m: m["type"] == "diagram")
        svg = diagram["svg"]
        assert svg.startswith("<svg") and diagram["flow"] == str(flow.resolve())
        labels = {part.split('"', 1)[0]: part.split("<title>", 1)[1].split("</title>", 1)[0]
                  for part in svg.split('data-node="')[1:]}
        listening = await page.until(lambda m: m["type"] == "live" and m.get("current")
                                     and labels[m["current"]].startswith("menu"))
        assert [labels[n] for n in listening["path"]] == ["answer", "set greeted = true", "menu tone.wav / id: main"]
        await page.send(type="dtmf", digits="1")
        await page.until(lambda m: m["type"] == "live" and "current" in m and m["current"] is None, timeout=15)
        view: dict = {}  # the page's picture: each live message updates what it names
        for m in page.messages:
            if m["type"] == "live":
                view.update(m)
        assert [labels[n] for n in view["path"]][-2:] == ["menu tone.wav / id: main", "transfer 101"]
        assert view["current"] is None  # the call is over: no step is running
        steps = [m for m in page.messages if m["type"] == "live" and m.get("new_steps")]
        assert [s["step"] for m in steps for s in m["new_steps"]][:3] == ["answer", "set", "menu"]


async def test_ivr_dev_at_pins_the_clock_of_each_call(tmp_path: Path) -> None:
    flow = tmp_path / "clock.yaml"
    flow.write_text("steps:\n  - answer\n  - set: {today: \"{{ now.strftime('%A %H:%M') }}\"}\n  - pause: 5\n  - hangup\n")
    at = datetime.fromisoformat("2026-11-22T10:00+01:00")  # a Sunday morning
    server = DevServer(load_target(flow), port=0, reload_interval=0.1, emulator=FAST, at=at)
    async with server.running(), aiohttp.ClientSession() as s:
        page = await open_page(server, s)
        await page.send(type="call")
        live = await page.until(lambda m: m["type"] == "live" and m.get("vars", {}).get("today"))
    assert live["vars"]["today"] == "Sunday 10:00"


def test_ivr_dev_at_must_be_a_time_with_an_offset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow = write_menu_flow(tmp_path)
    assert dev_main([str(flow), "--at", "2026-11-22T10:00"]) == 2
    assert "--at '2026-11-22T10:00': give a UTC offset" in capsys.readouterr().err
    assert dev_main([str(flow), "--at", "monday"]) == 2
    assert "expected ISO 8601" in capsys.readouterr().err
