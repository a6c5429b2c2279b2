"""`ivr call` and `ivr demo` as a flow author meets them: hanging up, speaking into a
recording, no temporary folders left behind, the demo from any folder."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile
from helpers import write_tone

import ivr.cli
from ivr.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    """``python -m ivr.cli ARGS`` in another folder, this checkout on the path, a TMPDIR of its own."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir)}
    return subprocess.run([sys.executable, "-m", "ivr.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_ivr_demo_runs_outside_the_checkout_and_leaves_no_temporary_folder(tmp_path: Path) -> None:
    elsewhere, tmpdir = tmp_path / "elsewhere", tmp_path / "tmp"
    elsewhere.mkdir(), tmpdir.mkdir()
    done = run_cli("demo", "--json", cwd=elsewhere, tmpdir=tmpdir)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["record"]["outcome"] == "transferred"
    assert [Path(p).name for p in report["record"]["prompts"]] == ["welcome.wav", "main_menu.wav", "transferring.wav"]
    assert list(tmpdir.iterdir()) == []  # no ivr-recordings-* folder
    assert list(elsewhere.iterdir()) == []


def test_the_demo_ships_inside_the_package() -> None:
    """The demo's flows and prompts are package data (a wheel carries them)."""
    package = ROOT / "ivr"
    demo = ivr.cli.DEMO_FLOW
    assert demo.is_relative_to(package.resolve()) or demo.parent.parent == (package / "demo").resolve()
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ivr"]
    shipped = {f for pattern in patterns for f in glob.glob(pattern, root_dir=package, recursive=True)}
    needed = ["demo/flows/main_menu.yaml", "demo/flows/voicemail.yaml",
              *(f"demo/audio/{p.name}" for p in (package / "demo" / "audio").glob("*.wav"))]
    assert len(needed) > 10 and not [f for f in needed if f not in shipped]


def test_ivr_call_with_a_recording_keeps_it_and_says_where(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    flow = tmp_path / "vm.yaml"
    flow.write_text("steps: [answer, {record: {file: msg.wav, silence_end: 1, beep: false}}, hangup]\n")
    speech = write_tone(tmp_path / "speech.wav", 1.0, freq=300)
    assert main(["call", str(flow), "--speak", str(speech), "--json", "--log-level", "ERROR"]) == 0
    recordings = json.loads(capsys.readouterr().out)["record"]["recordings"]
    assert len(recordings) == 1 and Path(recordings[0]).is_file()  # kept: the report names it
    assert Path(recordings[0]).parent.parent == tmp_path / "tmp"


def test_ivr_call_speaks_into_a_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--speak (and --say) apply to a recording too: the caller's words are what it keeps."""
    flow = tmp_path / "vm.yaml"
    flow.write_text(textwrap.dedent("""
        steps:
          - answer
          - record: {file: msg.wav, max_seconds: 20, silence_end: 2, into: message}
          - hangup
    """))
    speech = write_tone(tmp_path / "speech.wav", 1.5, freq=300)
    rec = tmp_path / "rec"
    assert main(["call", str(flow), "--speak", str(speech), "--recordings", str(rec), "--json",
                 "--log-level", "ERROR"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["record"]["recordings"] == [str(rec / "msg.wav")]
    audio, rate = soundfile.read(str(rec / "msg.wav"), dtype="float32")
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    loud = np.sqrt((frames**2).mean(axis=1)) > 0.1  # 20 ms frames with the tone in them
    assert rate == 8000 and loud.sum() * 0.02 >= 1.3  # the 1.5 s the caller said, not silence


def test_ivr_call_hangup_after(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tone(tmp_path / "long.wav", 10.0)
    flow = tmp_path / "long.yaml"
    flow.write_text("steps: [answer, {play: long.wav}, {play: long.wav}, hangup]\n")
    assert main(["call", str(flow), "--hangup-after", "3", "--json", "--log-level", "ERROR"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["record"]["outcome"] == "caller_hangup"
    assert 2.5 <= report["seconds"] <= 4.0
    assert main(["call", str(flow), "--hangup-after", "-1"]) == 2
    assert "--hangup-after -1.0: expected seconds >= 0" in capsys.readouterr().err
