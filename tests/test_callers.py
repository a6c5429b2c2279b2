"""What callers do that flows must take in their stride (issue 14, "Callers"): a terminator
typed after max_digits, hanging up during a prompt, a hesitating voicemail caller. Real worker
+ emulator over loopback, on the virtual clock (ivr.testing.clock): timings are simulated
seconds, which a loaded machine does not stretch."""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import textwrap
from pathlib import Path

import pytest

from ivr.simulate import FlowHarness, until_listening, until_next_listen
from ivr.testing import clock

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
def test_hanging_up_during_a_prompt_ends_cleanly(folder: Path, step: str, caplog: pytest.LogCaptureFixture) -> None:
    path = flow(folder, f"""
    steps:
      - answer
      - {step}
      - log: not reached
    """)
    caplog.set_level(logging.DEBUG)

    async def scenario() -> object:
        async with FlowHarness(path, recordings_dir=folder / "rec") as h:
            callid, call = await h.place_call()
            assert await until_listening(call, timeout=10)
            await asyncio.sleep(0.5)  # the prompt is playing
            await h.emulator.hangup(callid)
            record = await asyncio.wait_for(h.record_of(call), 10)
            await asyncio.sleep(0.2)
            gc.collect()  # an unretrieved task exception is logged when the task is collected
            await asyncio.sleep(0)
        return record

    record = clock.run(scenario())
    gc.collect()
    assert record.outcome == "caller_hangup"  # type: ignore[attr-defined]
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


TERMINATED = """
steps:
  - answer
  - id: account
    gather: {prompt: pin_prompt.wav, max_digits: 4, first_digit_timeout: 10}
  - id: thanks
    play: main_menu.wav
  - id: second
    gather: {max_digits: 4, first_digit_timeout: 10, retries: 1}
  - hangup
"""


def _results(record: object) -> dict[str, object]:
    return {s.id: s.result for s in record.steps if s.id}  # type: ignore[attr-defined]


async def _type_then_terminate(path: Path, folder: Path) -> tuple[object, object]:
    async with FlowHarness(path, recordings_dir=folder / "rec") as h:
        callid, call = await h.place_call()
        assert await until_listening(call, timeout=10)
        await h.emulator.send_dtmf(callid, "1234")
        for _ in range(200):
            if "thanks" in call.current_step:
                break
            await asyncio.sleep(0.01)
        assert "thanks" in call.current_step
        await asyncio.sleep(0.3)  # the prompt plays; the caller presses the # they were told to
        await h.emulator.send_dtmf(callid, "#")
        assert await until_next_listen(call, 1, timeout=20)
        await h.emulator.send_dtmf(callid, "56#")
        record = await asyncio.wait_for(h.record_of(call), 20)
    return record, call


def test_terminator_after_max_digits_does_not_cut_the_next_prompt(folder: Path) -> None:
    """A real caller: "1234", then "#" a moment later, while the next prompt has begun."""
    record, call = clock.run(_type_then_terminate(flow(folder, TERMINATED), folder))
    results = _results(record)
    assert results["thanks"]["completed"] is True, results["thanks"]  # type: ignore[index]
    assert call.media.barge_ins["dtmf"] == 1  # type: ignore[attr-defined]  # "1" stopped the first prompt; "#" nothing
    assert results["account"]["digits"] == "1234"  # type: ignore[index]
    assert results["second"]["digits"] == "56" and results["second"]["attempts"] == 1  # type: ignore[index]


def test_simulator_treats_a_typed_terminator_like_a_real_call(folder: Path) -> None:
    """`ivr call --digits 1234#,56#`: the # goes with the first gather, not to the second."""
    from ivr.simulate import SimulatedCall

    path = flow(folder, TERMINATED)
    report = clock.run(SimulatedCall(path, digits="1234#,56#", recordings_dir=folder / "rec", timeout=30).run())
    results = _results(report.record)
    assert results["account"]["digits"] == "1234"  # type: ignore[index]
    assert results["second"]["status"] == "match", results["second"]  # type: ignore[index]
    assert results["second"]["digits"] == "56" and results["second"]["attempts"] == 1  # type: ignore[index]


# --- voicemail: a caller who hesitates, and empty messages --------------------------------


VOICEMAIL = """
steps:
  - answer
  - voicemail:
      mailbox: "100"
      into: vm
      discard_empty: {discard}
      on_empty: [{{log: "empty message"}}, {{set: {{empty_branch: true}}}}]
  - log: "after {{{{ vm.reason }}}}"
  - hangup
"""


async def _recording(call: object) -> None:
    for _ in range(500):
        if "voicemail" in call.current_step:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # the beep


async def test_voicemail_waits_for_a_caller_who_hesitates(ivr_sim, tmp_path: Path) -> None:
    flow_path = tmp_path / "vm.yaml"  # the plain step: the new defaults do it
    flow_path.write_text("steps:\n  - answer\n  - voicemail: {mailbox: '100'}\n  - hangup\n")
    caller = await ivr_sim.call(flow_path)
    await _recording(caller.call)
    await asyncio.sleep(3.5)  # thinking: longer than silence_end (3 s), shorter than initial_silence (5 s)
    await caller.says("please call me back about my order")
    record = await caller.record()
    vm = next(s.result for s in record.steps if s.step == "voicemail")
    assert vm["empty"] is False and vm["reason"] == "silence", vm
    assert vm["path"] is not None and vm["duration"] > 4.0, vm


@pytest.mark.parametrize("discard", [False, True])
async def test_an_empty_voicemail_branches_and_can_be_dropped(ivr_sim, tmp_path: Path, discard: bool) -> None:
    flow_path = tmp_path / "vm.yaml"
    flow_path.write_text(textwrap.dedent(VOICEMAIL.format(discard=str(discard).lower())).lstrip("\n"))
    caller = await ivr_sim.call(flow_path)
    record = await caller.record()
    vm = next(s.result for s in record.steps if s.step == "voicemail")
    assert vm["empty"] is True and vm["reason"] == "no_speech", vm
    assert 4.5 <= vm["duration"] <= 5.5, vm  # initial_silence: 5 s by default
    assert (vm["path"] is None) is discard
    assert [s.step for s in record.steps].count("log") == 2  # on_empty ran, then the step after it
    assert len(record.recordings) == (0 if discard else 1)


async def test_a_python_flow_drops_an_empty_recording(ivr_sim, tmp_path: Path) -> None:
    flow_path = tmp_path / "vm.py"
    flow_path.write_text(textwrap.dedent("""
        async def main(call):
            await call.answer()
            result = await call.record("msg.wav", initial_silence=2.0, discard_empty=True)
            call.vars["outcome"] = "empty" if result.empty else "message"
            call.vars["path"] = result.path
            await call.hangup()
    """))
    caller = await ivr_sim.call(flow_path)
    record = await caller.record()
    assert caller.call.vars["outcome"] == "empty" and caller.call.vars["path"] is None
    step = next(s for s in record.steps if s.step == "record")
    assert step.result["empty"] is True and step.result["reason"] == "no_speech"
    assert 1.5 <= step.result["duration"] <= 2.5
    assert record.recordings == []
