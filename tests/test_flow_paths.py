"""Paths built from templates stay inside their root (record, voicemail, prompts), over a
real call: a hostile caller number is an error on the step, never a file elsewhere."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ivr.flow.paths import UnsafePathError, within_any, within_root
from ivr.simulate import SimulatedCall

ROOT = Path(__file__).resolve().parent.parent


def write(folder: Path, text: str) -> Path:
    path = folder / "flows" / "flow.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


async def run(path: Path, caller: str) -> Any:
    return await SimulatedCall(path, caller=caller, recordings_dir=path.parent.parent / "rec", timeout=30).run()


RECORD = """
steps:
  - answer
  - record: {file: "msg/{{ caller.number }}.wav", max_seconds: 0.5, beep: false}
  - hangup
on_error: [{log: "sorry: {{ error }}"}]
"""


async def test_a_record_file_from_a_hostile_caller_number_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, RECORD)
    report = await run(path, "../../escaped")
    assert not list(tmp_path.rglob("escaped*"))  # nothing written anywhere
    assert len(report.record.errors) == 1
    error = report.record.errors[0]
    assert error.startswith("flow.yaml:3: record file 'msg/../../escaped.wav' is outside ") and "\n" not in error
    assert [s.step for s in report.record.steps] == ["answer", "log"]  # on_error ran


async def test_a_record_file_inside_the_root_is_written(tmp_path: Path) -> None:
    path = write(tmp_path, RECORD)
    report = await run(path, "sub/../+4930123456")  # `..` that stays inside is fine
    assert not report.record.errors
    assert (tmp_path / "rec" / "msg" / "+4930123456.wav").is_file()


async def test_a_voicemail_box_from_the_caller_cannot_leave_the_recordings(tmp_path: Path) -> None:
    path = write(tmp_path, """
    steps:
      - answer
      - voicemail: {mailbox: "{{ caller.number }}", max_seconds: 0.5, beep: false}
    """)
    report = await run(path, "../../escaped")
    assert not list(tmp_path.rglob("escaped*")) and not list(tmp_path.rglob("*.wav"))
    assert report.record.errors[0].startswith("flow.yaml:3: voicemail file 'voicemail/../../escaped/")


async def test_a_prompt_from_a_template_cannot_read_outside_the_audio_folders(tmp_path: Path) -> None:
    secret = tmp_path / "private" / "other-callers-message.wav"
    secret.parent.mkdir()
    shutil.copy(ROOT / "audio" / "goodbye.wav", secret)
    path = write(tmp_path, """
    steps:
      - answer
      - play: "{{ caller.number }}.wav"
    """)
    report = await run(path, "../private/other-callers-message")
    assert report.record.errors[0].startswith(
        "flow.yaml:3: prompt file '../private/other-callers-message.wav' leaves the audio folders")
    report = await run(path, str(secret.with_suffix("")))  # an absolute path elsewhere
    assert "is outside the audio folders and recordings" in report.record.errors[0]


def test_path_rules(tmp_path: Path) -> None:
    assert within_root("a/../b/c.wav", tmp_path, "f") == "b/c.wav"
    assert within_root(str(tmp_path / "x.wav"), tmp_path, "f") == "x.wav"
    for bad in ("../x.wav", "/etc/passwd", "a/../../x", ".", "", "a\x00b"):
        with pytest.raises(UnsafePathError):
            within_root(bad, tmp_path, "f")
    assert within_any("prompts/x.wav", [tmp_path], "p") == "prompts/x.wav"
    assert within_any(str(tmp_path / "x.wav"), [tmp_path / "other", tmp_path], "p") == str(tmp_path / "x.wav")
    with pytest.raises(UnsafePathError):
        within_any(str(tmp_path.parent / "x.wav"), [tmp_path], "p")
