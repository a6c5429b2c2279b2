"""What callers do that flows must take in their stride (issue 14, "Callers"): a terminator
typed after max_digits, hanging up during a prompt. Real worker + emulator over loopback."""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import textwrap
from pathlib import Path

import pytest

from ivr.simulate import FlowHarness, until_listening, until_next_listen

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "audio").mkdir()
    for name in ("main_menu.wav", "pin_prompt.wav", "goodbye.wav"):
        shutil.copy(ROOT / "audio" / name, tmp_path / "audio" / name)
    return tmp_path


def flow(folder: Path, text: str, name: str = "flow.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.mark.parametrize("step", [
    "menu: {prompt: main_menu.wav, choices: {'1': [{log: one}]}}",
    "gather: {prompt: pin_prompt.wav, max_digits: 4}",
])
async def test_hanging_up_during_a_prompt_ends_cleanly(folder: Path, step: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    path = flow(folder, f"""
    steps:
      - answer
      - {step}
      - log: not reached
    """)
    caplog.set_level(logging.DEBUG)
    async with FlowHarness(path, recordings_dir=folder / "rec") as h:
        callid, call = await h.place_call()
        assert await until_listening(call, timeout=10)
        await asyncio.sleep(0.5)  # the prompt is playing
        await h.emulator.hangup(callid)
        record = await asyncio.wait_for(h.record_of(call), 10)
        await asyncio.sleep(0.2)
        gc.collect()  # an unretrieved task exception is logged when the task is collected
        await asyncio.sleep(0)
    assert record.outcome == "caller_hangup"
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]
