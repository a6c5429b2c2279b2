"""``ivr campaign`` as a user runs it: real processes (an emulator, ``ivr run``), the campaign
inside the running worker through its control API (no second token), alone as the owner,
resume without calling anyone twice, the do-not-call list, metrics, and one-line errors."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from cluster_rig import Cluster

REMINDER = 'params: {name: "", appointment: ""}\nsteps:\n  - say: "Hello {{ params.name }}"\n  - set: {told: "yes"}\n  - hangup\n'


@pytest.fixture
async def cluster(tmp_path: Path):
    c = Cluster(tmp_path)
    (tmp_path / "reminder.yaml").write_text(REMINDER)
    (tmp_path / "list.csv").write_text("number,name,appointment\n101,Anna,Tue\n102,Bob,Wed\n103,Carla,Thu\n")
    (tmp_path / "dnc.txt").write_text("# opted out\n103\n")
    try:
        await c.up()
        yield c
    finally:
        await c.close()


def campaign(cluster: Cluster, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivr.cli", "campaign", *args, "--config", str(tmp_path / "a.yaml")],
                          capture_output=True, text=True, env=cluster.env, timeout=120, cwd=tmp_path)


def rows(tmp_path: Path) -> dict[str, dict[str, str]]:
    return {r["number"]: r for r in csv.DictReader((tmp_path / "list.results.csv").open())}


async def test_a_campaign_runs_inside_the_running_worker(cluster: Cluster, tmp_path: Path):
    owner, port = cluster.worker("a")
    await cluster.ready(port)
    tokens = owner.text().count("token issued")
    done = await asyncio.to_thread(campaign, cluster, tmp_path, "run", "list.csv", "--flow", "reminder.yaml",
                                   "--rate", "5", "--dnc", "dnc.txt", "--var", "told")
    assert done.returncode == 0, done.stderr
    assert "runs in the worker" in done.stdout and "3/3 done" in done.stdout
    assert "token issued" not in done.stderr and owner.text().count("token issued") == tokens
    got = rows(tmp_path)
    assert got["101"]["result"] == got["102"]["result"] == "answered" and got["101"]["told"] == "yes"
    assert got["103"]["result"] == "do_not_call" and got["103"]["attempts"] == "0"
    assert "campaign" in owner.text() and "ended" in owner.text()
    status = await asyncio.to_thread(campaign, cluster, tmp_path, "status")
    assert status.returncode == 0 and ": done, 3 contacts" in status.stdout
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        metrics = await resp.text()
    assert 'ivr_campaign_contacts{campaign=' in metrics and 'status="answered"} 2.0' in metrics


async def test_alone_the_command_is_the_owner_and_a_rerun_calls_nobody_twice(cluster: Cluster, tmp_path: Path):
    cluster.config("a")
    first = await asyncio.to_thread(campaign, cluster, tmp_path, "run", "list.csv", "--flow", "reminder.yaml",
                                    "--rate", "5")
    assert first.returncode == 0, first.stderr
    assert len(rows(tmp_path)) == 3
    calls_before = len([c for c in await cluster_calls(cluster) if c["direction"] == "outbound"])
    again = await asyncio.to_thread(campaign, cluster, tmp_path, "run", "list.csv", "--flow", "reminder.yaml")
    assert again.returncode == 0 and "3/3 done" in again.stdout
    assert len([c for c in await cluster_calls(cluster) if c["direction"] == "outbound"]) == calls_before
    assert len((tmp_path / "list.results.csv").read_text().splitlines()) == 4  # header + one row a contact


async def cluster_calls(cluster: Cluster) -> list[dict]:
    async with cluster.session.get(f"{cluster.url}/_emulator/calls") as resp:
        return list(await resp.json())


@pytest.mark.parametrize("args, message", [
    (["run", "missing.csv", "--flow", "reminder.yaml"], "missing.csv: cannot read the call list"),
    (["run", "list.csv", "--flow", "reminder.yaml", "--window", "mon 9-17"], "bad time '9'"),
    (["run", "list.csv", "--flow", "reminder.yaml", "--retry-on", "answered"], "cannot retry on answered"),
    (["run", "list.csv", "--flow", "nope.yaml"], "nope.yaml"),
    (["status"], "no running worker publishes a control API"),
])
async def test_bad_input_is_one_line(cluster: Cluster, tmp_path: Path, args, message):
    cluster.config("a")
    done = await asyncio.to_thread(campaign, cluster, tmp_path, *args)
    assert done.returncode == 1, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("ivr campaign:"), done.stderr
