"""CampaignRunner on the virtual clock: pacing in time, retries, pause/resume/stop, the state
file and the results CSV (ivr/campaign/runner.py, results.py). The dialler here answers from a
script so the runner's own rules are what is tested; tests/test_campaign_e2e.py runs campaigns
through the real worker against the emulator."""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ivr.campaign.contacts import Contact, read_contacts
from ivr.campaign.plan import CampaignPlan, CampaignSettings
from ivr.campaign.results import ResultsCsv, StateFile
from ivr.campaign.runner import CampaignRunner, DialResult
from ivr.testing.clock import run as run_virtual

START = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


class ScriptedDialer:
    """Each number's attempts answer from a list of (result, seconds the call lasts)."""

    def __init__(self, script: dict[str, list[tuple[str, float]]]) -> None:
        self.script = script
        self.calls: list[tuple[float, str]] = []
        self.active = 0
        self.most_active = 0

    async def dial(self, contact: Contact) -> DialResult:
        loop = asyncio.get_running_loop()
        self.calls.append((loop.time(), contact.number))
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        result, seconds = self.script[contact.number].pop(0)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.active -= 1
        variables = {"confirmed": "yes"} if result == "answered" else {}
        return DialResult(result, call_id=f"c{len(self.calls)}", outcome="ivr_hangup" if result == "answered" else None,
                          variables=variables)


def clock() -> datetime:
    return START + timedelta(seconds=asyncio.get_running_loop().time())


def make(tmp_path: Path, numbers: list[str], **settings) -> tuple[list[Contact], CampaignPlan]:
    path = tmp_path / "list.csv"
    path.write_text("number,name,slot\n" + "".join(f"{n},N{n},s{n}\n" for n in numbers))
    contacts = read_contacts(path)
    return contacts, CampaignPlan(contacts, CampaignSettings(**settings))


def test_a_campaign_paces_retries_and_writes_one_row_per_contact(tmp_path):
    numbers = [f"+4930{i:04d}" for i in range(6)]
    script = {n: [("answered", 20.0)] for n in numbers}
    script[numbers[1]] = [("busy", 1.0), ("answered", 5.0)]
    script[numbers[2]] = [("no_answer", 25.0), ("no_answer", 25.0)]
    _, plan = make(tmp_path, numbers, concurrency=2, rate=0.5, retries=1, retry_delay={"busy": 60, "no_answer": 120})
    dialer = ScriptedDialer(script)
    results = ResultsCsv(tmp_path / "out.csv", ["slot"], variables=["confirmed"])
    runner = CampaignRunner(plan, dialer, state=StateFile(tmp_path / "state.json"), results=results, clock=clock)

    counts = run_virtual(runner.run())

    assert counts["done"] == 6 and counts["answered"] == 5 and counts["no_answer"] == 1
    assert dialer.most_active == 2  # concurrency
    starts = [t for t, _ in dialer.calls]
    assert all(b - a >= 2.0 - 1e-6 for a, b in itertools.pairwise(starts))  # 0.5 calls a second
    busy_calls = [t for t, n in dialer.calls if n == numbers[1]]
    assert busy_calls[1] - busy_calls[0] >= 61  # the busy delay after a 1 s attempt
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert sorted(r["number"] for r in rows) == sorted(numbers)  # one row a contact
    by_number = {r["number"]: r for r in rows}
    assert by_number[numbers[1]]["attempts"] == "2" and by_number[numbers[1]]["result"] == "answered"
    assert by_number[numbers[0]]["confirmed"] == "yes" and by_number[numbers[0]]["slot"] == f"s{numbers[0]}"
    assert json.loads(by_number[numbers[0]]["flow_variables"]) == {"confirmed": "yes"}
    assert by_number[numbers[2]]["result"] == "no_answer" and by_number[numbers[2]]["confirmed"] == ""
    assert json.loads((tmp_path / "state.json").read_text())["version"] == 1


def test_pause_stops_new_calls_and_resume_goes_on(tmp_path):
    numbers = [f"+4931{i:04d}" for i in range(4)]
    _, plan = make(tmp_path, numbers, concurrency=1, rate=10)
    dialer = ScriptedDialer({n: [("answered", 10.0)] for n in numbers})
    runner = CampaignRunner(plan, dialer, clock=clock)

    async def scenario() -> dict[str, int]:
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(5)
        runner.pause()
        assert runner.status()["state"] == "paused"
        await asyncio.sleep(60)
        assert len(dialer.calls) == 1  # the call in progress went on; no new one started
        runner.resume()
        return await task

    counts = run_virtual(scenario())
    assert counts["answered"] == 4
    gap = dialer.calls[1][0] - dialer.calls[0][0]
    assert gap >= 65  # the second call waited for the resume


def test_stop_then_resume_calls_nobody_twice(tmp_path):
    numbers = [f"+4932{i:04d}" for i in range(5)]
    contacts, plan = make(tmp_path, numbers, concurrency=2, rate=10)
    dialer = ScriptedDialer({n: [("answered", 10.0)] for n in numbers})
    state = StateFile(tmp_path / "state.json")
    results = ResultsCsv(tmp_path / "out.csv", ["slot"])
    runner = CampaignRunner(plan, dialer, state=state, results=results, clock=clock)

    async def first_run() -> dict[str, int]:
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(12)
        runner.stop()
        return await task

    first = run_virtual(first_run())
    called_first = [n for _, n in dialer.calls]
    assert first["done"] == len(called_first) < 5  # the calls in progress finished; no new ones
    resumed_plan = CampaignPlan(contacts, CampaignSettings(concurrency=2, rate=10), state=state.load())
    second_dialer = ScriptedDialer({n: [("answered", 10.0)] for n in numbers})
    run_virtual(CampaignRunner(resumed_plan, second_dialer, state=state, results=results, clock=clock).run())
    called_second = [n for _, n in second_dialer.calls]
    assert not set(called_first) & set(called_second)
    assert sorted(called_first + called_second) == sorted(numbers)
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert sorted(r["number"] for r in rows) == sorted(numbers)


def test_a_dialler_failure_is_a_failed_attempt_not_the_end_of_the_campaign(tmp_path):
    numbers = ["+49330001", "+49330002"]
    _, plan = make(tmp_path, numbers, concurrency=1, rate=10, retries=0)

    class Broken(ScriptedDialer):
        async def dial(self, contact: Contact) -> DialResult:
            if contact.number == numbers[0]:
                raise RuntimeError("PBX said no\nsecond line")
            return await super().dial(contact)

    dialer = Broken({numbers[1]: [("answered", 1.0)]})
    counts = run_virtual(CampaignRunner(plan, dialer, clock=clock).run())
    assert counts["failed"] == 1 and counts["answered"] == 1
    detail = plan.states[plan.contacts and next(iter(plan.contacts))].attempts[0].detail
    assert detail == "RuntimeError: PBX said no second line"


def test_results_cells_that_look_like_formulas_are_quoted(tmp_path):
    (tmp_path / "list.csv").write_text("number,note\n+4930111,=HYPERLINK(\"x\")\n")
    contacts = read_contacts(tmp_path / "list.csv")
    plan = CampaignPlan(contacts, CampaignSettings(rate=10))
    dialer = ScriptedDialer({"+4930111": [("answered", 1.0)]})
    run_virtual(CampaignRunner(plan, dialer, results=ResultsCsv(tmp_path / "out.csv", ["note"]), clock=clock).run())
    row = next(csv.DictReader((tmp_path / "out.csv").open()))
    assert row["note"] == "'=HYPERLINK(\"x\")" and row["number"] == "+4930111"
