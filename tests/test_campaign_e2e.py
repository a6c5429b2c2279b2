"""A campaign through the real worker against the emulator (virtual clock): an answering
contact who confirms by pressing 1, a voicemail whose greeting the flow detects (amd step) and
leaves a message after the beep, busy, no-answer and not-registered contacts with retries, an
inbound call served normally in the middle of the campaign, and one results row a contact."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import soundfile as sf
from pydantic import SecretStr

from ivr.campaign.contacts import read_contacts
from ivr.campaign.dialer import WorkerDialer
from ivr.campaign.plan import CampaignPlan, CampaignSettings
from ivr.campaign.results import ResultsCsv, StateFile
from ivr.campaign.runner import CampaignRunner
from ivr.campaign.window import CallingWindow
from ivr.config import PbxSettings, Route, WorkerConfig
from ivr.emulator import Emulator, EmulatorConfig
from ivr.speech.services import SpeechServices
from ivr.testing.clock import run as run_virtual
from ivr.worker.runner import Worker

AUDIO = Path(__file__).resolve().parents[1] / "audio"
SECRET = "campaign-secret"
REMINDER = """\
params: {name: "", appointment: ""}
steps:
  - amd:
      into: answered_by
      machine:
        - say: "Hello {{ params.name }}, a reminder of your appointment on {{ params.appointment }}."
        - set: {left_message: "yes"}
        - hangup
  - menu:
      prompt: {say: "Hello {{ params.name }}. Your appointment is {{ params.appointment }}. Press 1 to confirm."}
      timeout: 5
      retries: 1
      choices:
        "1":
          - set: {confirmed: "yes"}
          - say: "Thank you."
          - hangup
"""
INBOUND = "steps:\n  - answer\n  - say: Welcome\n  - transfer: {to: '101', timeout: 5}\n"
START = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


@asynccontextmanager
async def worker_on(emu: Emulator, folder: Path, inbound_flow: str) -> AsyncIterator[Worker]:
    """The real worker against ``emu`` (inbound calls run ``inbound_flow``; tone TTS), ready."""
    config = WorkerConfig(pbx=PbxSettings(url=emu.url, client_id="900"), records=None, base_dir=folder,
                          routes=[Route(route_point="800", flow=str(folder / inbound_flow))])
    speech_services = SpeechServices.from_settings(config.speech.model_copy(update={"tts": "tone"}))
    worker = Worker(config, secret=SecretStr(SECRET), reload_interval=60, speech=speech_services)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.ready.wait(), 30)
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def speech(name: str) -> np.ndarray:
    x, _ = sf.read(AUDIO / name, dtype="int16")
    return x


def beep() -> np.ndarray:
    t = np.arange(3200) / 8000
    return (9000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)


async def callee(emu: Emulator, stop: asyncio.Event, pressed: list[str]) -> None:
    """What the people (and the voicemail) at the dialled numbers do once they answer."""
    acted: set[int] = set()
    confirming: set[asyncio.Future[None]] = set()  # kept so the loop does not drop them
    hello = speech("welcome.wav")[2000:6800]  # 0.6 s: "Hello?"
    while not stop.is_set():
        for call in emu.controller.list_calls():
            callid = call["callid"]
            if callid in acted or call["direction"] != "outbound" or call["state"] != "connected":
                continue
            acted.add(callid)
            if call["to"] == "101":  # a person: says hello, then presses 1 during the menu
                await emu.speak(callid, hello)

                async def confirm(callid: int = callid) -> None:
                    await asyncio.sleep(4.0)
                    await emu.send_dtmf(callid, "1")
                    pressed.append(str(callid))

                confirming.add(asyncio.ensure_future(confirm()))
        await asyncio.sleep(0.1)


async def scenario(tmp_path: Path, flow: str = REMINDER) -> tuple[dict[str, int], Worker, Emulator, list[str], list[dict]]:
    (tmp_path / "reminder.yaml").write_text(flow)
    (tmp_path / "inbound.yaml").write_text(INBOUND)
    (tmp_path / "list.csv").write_text(
        "number,name,appointment\n101,Anna,Tuesday 10:00\n102,Bob,Wednesday\n103,Carla,Thursday\n"
        "104,Dan,Friday\n105,Eve,Monday\n")
    # The voicemail box at 105 plays its greeting (ending in a beep) when it answers.
    greeting = np.concatenate([speech("vm_greeting.wav"), np.zeros(2400, np.int16), beep()])
    sf.write(tmp_path / "greeting.wav", greeting, 8000, subtype="PCM_16")
    emu = Emulator(EmulatorConfig(client_secret=SECRET, ring_seconds=0.5, no_answer_timeout=3.0,
                                  answer_audio={"105": str(tmp_path / "greeting.wav")},
                                  extensions={"100": "answer", "101": "answer", "102": "busy", "103": "no_answer",
                                              "104": "not_registered", "105": "answer"}))
    inbound_records: list[dict] = []
    async with emu.running(), worker_on(emu, tmp_path, "inbound.yaml") as worker:
        t0 = asyncio.get_running_loop().time()

        def clock() -> datetime:
            return START + timedelta(seconds=asyncio.get_running_loop().time() - t0)

        contacts = read_contacts(tmp_path / "list.csv")
        settings = CampaignSettings(concurrency=3, rate=2.0, retries=1, retry_delay={"busy": 30, "no_answer": 30,
                                                                                       "not_registered": 30})
        dialer = WorkerDialer(worker, "reminder.yaml", ring_timeout=3)
        runner = CampaignRunner(CampaignPlan(contacts, settings), dialer, state=StateFile(tmp_path / "state.json"),
                                results=ResultsCsv(tmp_path / "out.csv", ["appointment"], ["confirmed"]),
                                free_capacity=dialer.free_capacity, clock=clock)
        callee_stop = asyncio.Event()
        pressed: list[str] = []
        acting = asyncio.create_task(callee(emu, callee_stop, pressed))
        campaign = asyncio.create_task(runner.run())
        await asyncio.sleep(2.0)
        inbound = await emu.place_call("+4930777", "800")  # a caller arrives mid-campaign
        counts = await asyncio.wait_for(campaign, 300)
        callee_stop.set()
        await acting
        inbound_records = [r.to_dict() for r in worker.completed if r.direction == "inbound"]
        info = emu.call_info(inbound)
    assert info["location"] == "101" or any(str(e.get("destination")) == "101" for e in info["log"])
    return counts, worker, emu, pressed, inbound_records


def test_a_reminder_campaign_against_the_emulator(tmp_path):
    counts, worker, _emu, pressed, inbound = run_virtual(scenario(tmp_path))
    assert counts["done"] == 5, counts
    rows = {r["number"]: r for r in csv.DictReader((tmp_path / "out.csv").open())}
    assert set(rows) == {"101", "102", "103", "104", "105"}
    assert rows["101"]["result"] == "answered" and rows["101"]["confirmed"] == "yes" and pressed
    assert rows["105"]["result"] == "machine" and '"left_message":"yes"' in rows["105"]["flow_variables"]
    assert rows["102"]["result"] == "busy" and rows["102"]["attempts"] == "2"  # retried once
    assert rows["103"]["result"] == "no_answer" and rows["103"]["attempts"] == "2"
    assert rows["104"]["result"] == "not_registered" and rows["104"]["attempts"] == "2"
    assert rows["101"]["appointment"] == "Tuesday 10:00"
    # The machine got its message after the beep: the amd step waited for the greeting's end.
    vm = next(r for r in worker.completed if r.direction == "outbound" and r.caller_number == "105")
    amd = next(s.result for s in vm.steps if s.step == "amd")
    assert amd["result"] == "machine" and amd["greeting_end"] == "beep", amd
    # The inbound caller in the middle was served by its own flow.
    assert len(inbound) == 1 and inbound[0]["outcome"] == "transferred"


def test_the_shipped_reminder_example_confirms_and_leaves_messages(tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "reminder" / "reminder.yaml"
    counts, _worker, _emu, pressed, _inbound = run_virtual(scenario(tmp_path, example.read_text()))
    rows = {r["number"]: r for r in csv.DictReader((tmp_path / "out.csv").open())}
    assert counts["done"] == 5 and pressed
    assert rows["101"]["result"] == "answered" and rows["101"]["confirmed"] == "yes"
    assert rows["105"]["result"] == "machine" and '"confirmed":"message left"' in rows["105"]["flow_variables"]


SIMPLE = "steps:\n  - say: 'Hello'\n  - hangup\n"


async def simple_campaign(tmp_path: Path, start: datetime, settings: CampaignSettings, act) -> tuple[list[float], dict]:
    """Three answering contacts; ``act(runner)`` runs beside the campaign. Returns when each
    attempt started (seconds after ``start``) and the final counts."""
    (tmp_path / "out.yaml").write_text(SIMPLE)
    (tmp_path / "in.yaml").write_text(INBOUND)
    (tmp_path / "list.csv").write_text("number,timezone\n101,Europe/Berlin\n102,Europe/Berlin\n103,America/New_York\n")
    emu = Emulator(EmulatorConfig(client_secret=SECRET, ring_seconds=0.5))
    async with emu.running(), worker_on(emu, tmp_path, "in.yaml") as worker:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        dialer = WorkerDialer(worker, "out.yaml", ring_timeout=3)
        runner = CampaignRunner(CampaignPlan(read_contacts(tmp_path / "list.csv"), settings), dialer,
                                free_capacity=dialer.free_capacity, clock=lambda: start + timedelta(seconds=loop.time() - t0))
        campaign = asyncio.create_task(runner.run())
        await act(runner)
        counts = await asyncio.wait_for(campaign, 12 * 3600)
        dialled_at = sorted(a.started for st in runner.plan.states.values() for a in st.attempts)
    return [(datetime.fromisoformat(d) - start).total_seconds() for d in dialled_at], counts


def test_calls_wait_for_the_window_in_each_contacts_zone(tmp_path):
    start = datetime(2026, 12, 7, 7, 59, 30, tzinfo=UTC)  # 08:59:30 in Berlin, 02:59:30 in New York
    settings = CampaignSettings(concurrency=3, rate=10, window=CallingWindow("mon-fri 09:00-18:00"), retries=0)

    async def nothing(_runner: CampaignRunner) -> None:
        return None

    dialled, counts = run_virtual(simple_campaign(tmp_path, start, settings, nothing))
    assert counts["answered"] == 3
    berlin, new_york = dialled[:2], dialled[2]
    assert all(30 <= t < 32 for t in berlin)  # 09:00 in Berlin
    assert 6 * 3600 + 30 <= new_york < 6 * 3600 + 32  # 09:00 in New York, six hours later


def test_pause_and_resume_against_the_emulator(tmp_path):
    start = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    settings = CampaignSettings(concurrency=1, rate=10, retries=0)

    async def pause_then_resume(runner: CampaignRunner) -> None:
        await asyncio.sleep(0.5)
        runner.pause()
        await asyncio.sleep(120)
        runner.resume()

    dialled, counts = run_virtual(simple_campaign(tmp_path, start, settings, pause_then_resume))
    assert counts["answered"] == 3
    assert dialled[0] < 1 and dialled[1] >= 120  # the call in progress went on; the next waited for resume
