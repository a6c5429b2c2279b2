"""``ivr dev`` end to end in headless Chromium (Selenium + Debian's chromium-driver).

The real page, the real server, emulator and worker: click Call, hear the prompt (the page
counts received audio in data-* attributes), press 1 on the keypad, see the transfer in the
live view. Skipped when chromium, chromedriver or selenium are not installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ivr.dev import DevServer, load_target

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} missing (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

FLOW = """\
name: dev_menu
vars: {greeted: false}
steps:
  - answer
  - set: {greeted: true}
  - id: main
    menu:
      prompt: tone.wav
      timeout: 15
      retries: 0
      choices:
        "1":
          - transfer: {to: "101", timeout: 5}
  - hangup
"""


def _wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    soundfile.write(str(path), samples.astype(np.float32), rate, subtype="PCM_16")
    return path


class ServerThread:
    """A DevServer on its own event loop in a thread (Selenium's API is blocking)."""

    def __init__(self, server: DevServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> DevServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[DevServer]:
    t = np.arange(8000 * 2) / 8000
    _wav(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 8000)
    (tmp_path / "menu.yaml").write_text(FLOW)
    server = DevServer(load_target(tmp_path / "menu.yaml"), port=0, emulator={"ring_seconds": 0.1})
    with ServerThread(server) as running:
        yield running


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    # The fake microphone says nothing (silence), so it cannot barge in on the prompt.
    mic = _wav(tmp_path / "mic.wav", np.zeros(48000 * 2), 48000)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={mic}",
                 "--autoplay-policy=no-user-gesture-required", "--disable-background-networking",
                 "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1200,900"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(15)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _data(driver: webdriver.Chrome, name: str) -> str:
    return driver.execute_script("return document.body.dataset[arguments[0]] || ''", name)


def test_call_hear_press_1_see_transfer(served: DevServer, browser: webdriver.Chrome, tmp_path: Path) -> None:
    wait = WebDriverWait(browser, 12, poll_frequency=0.1)
    browser.get(served.url)
    wait.until(lambda d: _data(d, "ws") == "open")
    assert "route point 800" in browser.find_element(By.ID, "source").text

    browser.find_element(By.ID, "mic").click()
    wait.until(lambda d: _data(d, "mic") == "on")
    browser.find_element(By.ID, "call").click()

    # The 2 s prompt tone at half scale arrives as audio frames the page counts and plays.
    wait.until(lambda d: int(_data(d, "audioPeak") or 0) > 10000)
    wait.until(lambda d: int(_data(d, "audioBytes") or 0) >= 8000 * 2 * 0.5)
    wait.until(lambda d: _data(d, "activity").endswith("listening for keys"))
    assert _data(browser, "audioRate") == "8000"
    assert '"greeted":true' in _data(browser, "vars")
    assert "greeted" in browser.find_element(By.ID, "vars").text  # a row: name, value

    browser.find_element(By.CSS_SELECTOR, '#keypad button[data-digit="1"]').click()
    wait.until(lambda d: _data(d, "transferred") == "101")
    routed = browser.find_element(By.CSS_SELECTOR, '#events li[data-event="routed"]').text
    assert "destination=101" in routed and "result=answered" in routed
    wait.until(lambda d: _data(d, "outcome") == "transferred")
    assert '"transferred_to": "101"' in browser.find_element(By.ID, "record").text
    assert _data(browser, "digits") == "1"

    # The microphone ran the whole time: the page sent frames and the server received them.
    assert int(_data(browser, "micBytes") or 0) > 0
    wait.until(lambda d: int(_data(d, "serverMicBytes") or 0) > 0)
    browser.save_screenshot(str(tmp_path / "ivr-dev.png"))

    browser.find_element(By.ID, "hangup").click()
    wait.until(lambda d: _data(d, "callState") == "ended")
    severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


ROOT = Path(__file__).resolve().parent.parent


def test_live_view_shows_the_flow_the_step_running_and_the_path(browser: webdriver.Chrome, tmp_path: Path) -> None:
    """The shipped main menu in the page: its diagram with the menu lit while it listens, the
    path there in green, steps and variables as rows; nothing loaded from elsewhere. Set
    IVR_DEV_SCREENSHOT=path.png to keep the screenshot."""
    monday = datetime.fromisoformat("2026-11-23T10:00+01:00")
    server = DevServer(load_target(ROOT / "flows" / "main_menu.yaml"), port=0, emulator={"ring_seconds": 0.1}, at=monday)
    with ServerThread(server) as served:
        wait = WebDriverWait(browser, 20, poll_frequency=0.1)
        browser.get(served.url)
        wait.until(lambda d: _data(d, "ws") == "open")
        browser.find_element(By.ID, "call").click()
        wait.until(lambda d: _data(d, "diagram") == "shown")
        wait.until(lambda d: _data(d, "currentLabel").startswith("menu main_menu.wav"))
        current = browser.find_elements(By.CSS_SELECTOR, "#diagram svg g.node.current")
        assert len(current) == 1 and current[0].get_attribute("data-node") == _data(browser, "current")
        visited = [e.find_element(By.TAG_NAME, "title").get_attribute("textContent")
                   for e in browser.find_elements(By.CSS_SELECTOR, "#diagram svg g.node.visited")]
        assert {"answer", "play welcome.wav", "hours Europe/Berlin"} <= set(visited)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#diagram svg g.edge.taken")) >= 3
        # the lit node is drawn highlighted (computed style, not just a class)
        fill = browser.execute_script(
            "return getComputedStyle(document.querySelector('#diagram g.node.current rect')).fill")
        assert fill == "rgb(255, 224, 138)"
        rows = browser.find_elements(By.CSS_SELECTOR, "#steps tbody tr")
        assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows][:3] == ["answer", "play", "hours"]
        assert "open" in rows[2].text  # the hours step's result, as a readable pair
        shot = Path(os.environ.get("IVR_DEV_SCREENSHOT") or tmp_path / "ivr-dev-live.png")
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000

        browser.find_element(By.CSS_SELECTOR, '#keypad button[data-digit="1"]').click()
        wait.until(lambda d: _data(d, "transferred") == "101")
        wait.until(lambda d: _data(d, "current") == "" and _data(d, "path").count(",") >= 5)
        visited = [e.find_element(By.TAG_NAME, "title").get_attribute("textContent")
                   for e in browser.find_elements(By.CSS_SELECTOR, "#diagram svg g.node.visited")]
        assert {"play transferring.wav", "transfer 101"} <= set(visited)
        # everything the page loaded came from the dev server
        urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert urls and all(u.startswith(served.url) for u in urls), urls
        browser.find_element(By.ID, "hangup").click()
        severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == []


def test_pbx_panel_flips_presence_and_forced_mode(tmp_path: Path, browser: webdriver.Chrome) -> None:
    """ivr dev --pbx-config: the page lists the PBX's people and departments; choosing a presence
    or a forced mode in it changes the emulated PBX and the worker's view of it."""
    from selenium.webdriver.support.ui import Select

    from ivr.emulator.xapi import load_description

    (tmp_path / "pbx.yaml").write_text("users:\n  - {number: '201', first_name: Anna, last_name: Miller}\n"
                                       "  - {number: '202', first_name: Eva, last_name: Page, hidden: true}\n"
                                       "departments:\n  - {name: Sales, members: ['201']}\n")
    (tmp_path / "f.yaml").write_text("steps:\n  - answer\n  - hours: {pbx: {department: Sales}}\n")
    server = DevServer(load_target(tmp_path / "f.yaml"), port=0, emulator={"ring_seconds": 0.1},
                       pbx=load_description(tmp_path / "pbx.yaml"))
    with ServerThread(server) as running:
        wait = WebDriverWait(browser, 12, poll_frequency=0.1)
        browser.get(running.url)
        wait.until(lambda d: d.find_element(By.ID, "pbx").is_displayed())

        def fresh(read):  # the panel re-renders as the PBX changes: read again from the page
            def attempt(_driver):
                try:
                    return read()
                except StaleElementReferenceException:
                    return None
            return wait.until(attempt)

        def user_rows():
            rows = browser.find_elements(By.CSS_SELECTOR, "#pbxusers tbody tr")
            numbers = [r.get_attribute("data-number") for r in rows]
            return (numbers, rows[1].text) if len(numbers) == 2 else None

        numbers, hidden_row = fresh(user_rows)
        assert numbers == ["201", "202"]
        assert "(not listed)" in hidden_row
        fresh(lambda: Select(browser.find_element(By.CSS_SELECTOR, '#pbxusers tbody tr[data-number="201"] select'))
              .select_by_value("Away") or True)
        store = running.emu.xapi
        wait.until(lambda d: store.users[next(iter(store.users))]["CurrentProfileName"] == "Away")
        fresh(lambda: Select(browser.find_element(By.CSS_SELECTOR, '#pbxdepts tbody tr[data-name="Sales"] select'))
              .select_by_value("ForceHoliday") or True)
        wait.until(lambda d: running.worker.xapi.snapshot.group("Sales").CurrentGroupHours == "ForceHoliday")
        assert running.worker.xapi.snapshot.user("201").CurrentProfileName == "Away"
        browser.save_screenshot(str(tmp_path / "pbx-panel.png"))
