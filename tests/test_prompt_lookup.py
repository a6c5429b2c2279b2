"""One prompt lookup for YAML and Python flows: the flow's folder and the audio/ folders from
it upwards, never the files shipped with this package; `ivr validate` checks a Python flow's
literal prompt names as it checks a YAML flow's."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from helpers import write_tone

from ivr.simulate import SimulatedCall, run_blocking
from ivr.validate import validate_paths

PACKAGE_AUDIO = Path(__file__).resolve().parent.parent / "audio"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A flow author's project: flows/ and audio/ side by side, run from its own folder."""
    (tmp_path / "flows").mkdir()
    (tmp_path / "audio").mkdir()
    write_tone(tmp_path / "audio" / "greeting.wav", 0.2)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def call(flow: Path) -> object:
    return run_blocking(SimulatedCall(flow, recordings_dir=flow.parent / "rec").run())


def test_python_and_yaml_flows_find_prompts_in_the_same_places(project: Path) -> None:
    py = write(project / "flows" / "hello.py", """
        async def main(call):
            await call.answer()
            await call.play("greeting.wav")
    """)
    yml = write(project / "flows" / "hello.yaml", "steps: [answer, {play: greeting.wav}, hangup]\n")
    for flow in (py, yml):
        report = call(flow)
        assert report.record.outcome == "ivr_hangup", (flow.name, report.record.errors)
        assert [Path(p).name for p in report.record.prompts] == ["greeting.wav"], flow.name
        assert len(report.heard) >= 0.2 * 8000, flow.name  # the project's tone was heard


def test_a_python_flow_never_plays_the_packages_own_prompts(project: Path) -> None:
    assert (PACKAGE_AUDIO / "welcome.wav").is_file()  # the name exists, but not in this project
    flow = write(project / "flows" / "acme.py", """
        async def main(call):
            await call.answer()
            await call.play("welcome.wav")
    """)
    report = call(flow)
    assert report.record.prompts == []  # the package's greeting was not played
    error = " ".join(report.record.errors)
    assert "audio file welcome.wav not found" in error
    assert str(PACKAGE_AUDIO) not in error
    searched = error.split("looked in ", 1)[1]
    # the flow's folder and its audio/ folders, each named once
    assert searched.startswith(f"{project / 'flows'}, {project / 'flows' / 'audio'}, {project / 'audio'}")
    dirs = searched.rstrip(")").split(", ")
    assert len(dirs) == len(set(dirs))


def test_validate_reports_missing_literal_prompts_in_python_flows(project: Path) -> None:
    flow = write(project / "flows" / "menu.py", """
        PROMPT = "computed.wav"

        async def main(call):
            await call.answer()
            await call.play("greeting.wav", "missing.wav")
            await call.play(PROMPT)  # not a literal: not checked
            await call.menu(prompt=["greeting.wav", {"say": "or"}, "nope.wav"], choices=["1"],
                            no_input_prompt=[["gone.wav"]], no_match_prompt="greeting.wav")
            await call.gather(prompt=f"{call.did}.wav", reprompt="again.wav")
            await call.play_prompt("greeting.wav")
    """)
    found = [d.format() for d in validate_paths([flow])]
    missing = "error: audio file {!r} not found (looked next to the flow and in audio/ folders)"
    assert found == [
        f"{flow}:6:37: " + missing.format("missing.wav"),
        f"{flow}:8:60: " + missing.format("nope.wav"),
        f"{flow}:9:39: " + missing.format("gone.wav"),
        f"{flow}:10:58: " + missing.format("again.wav"),
    ]
    # the same flow without the file check (ivr dev's reload path may skip it)
    assert validate_paths([flow], check_files=False) == []
