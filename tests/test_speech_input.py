"""Speech input in gather/menu and barge-in by speech, through the full path:
emulator (caller speaks hibari audio) -> worker -> Call -> VAD pipeline -> pocketsphinx.

The caller's audio is made with hibari TTS at 8 kHz, padded with 0.5 s of silence, and
spoken by the emulator once the IVR listens (``call.listening``).
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import write_tone

from ivr.call.speech_input import SpeechOptions
from ivr.simulate import FlowHarness, until_listening
from ivr.speech.services import SpeechServices

PAD = np.zeros(4000, np.int16)  # 0.5 s



# --- matching (sans-I/O) ------------------------------------------------------------------


def test_match_maps_synonyms_to_choices_and_rejects():
    opts = SpeechOptions(phrases={"1": ["sales", "buy"], 2: "technical support"})
    assert opts.phrase_list() == ["sales", "buy", "technical support"]
    assert opts.match("Buy!", 0.9).choice == "1"
    assert opts.match("technical support", 0.9).choice == "2"
    assert opts.match("sales please", 0.9).choice == "1"  # one choice's phrase inside: that choice
    assert opts.match("sales or technical support", 0.9).reason == "no_phrase"  # two choices: ambiguous
    assert opts.match("weather", 0.9).reason == "no_phrase"
    assert opts.match("sales", 0.3).reason == "low_confidence"  # VoiceXML default confidencelevel 0.5
    assert opts.match("", 1.0).reason == "empty"
    assert SpeechOptions(phrases=["Yes", "No"]).match("yes", 1).choice == "Yes"  # a list: phrase = choice
    assert SpeechOptions().match("Open answer.", 1).choice == "Open answer."  # no phrases: transcript


@pytest.mark.parametrize("bad, message", [
    ({"phrases": []}, "empty"),
    ({"phrases": {"1": []}}, "no phrases"),
    ({"phrases": {"1": ["sales"], "2": ["Sales!"]}}, "listed for choices"),
    ({"phrases": ["?"]}, "no words"),
    ({"min_confidence": 1.5}, "less than or equal to 1"),
])
def test_options_say_what_is_wrong(bad, message):
    with pytest.raises(ValueError, match=message):
        SpeechOptions(**bad)


# --- the full path ------------------------------------------------------------------------

MENU = """
    steps:
      - answer
      - menu:
          prompt: beep.wav
          timeout: {timeout}
          retries: 1
          no_match_prompt: beep.wav
          choices:
            "1": [{cap}, {{set: {{dept: sales}}}}]
            "2": [{cap}, {{set: {{dept: support}}}}]
            "0": [{cap}, {{set: {{dept: operator}}}}]
          speech:
            phrases:
              "1": [sales]
              "2": [support, technical support]
              "0": [operator, agent]
            {extra}
          into: key
          on_no_input: [{cap}, {{set: {{dept: none}}}}]
      - hangup
"""
# What the menu returned, as the flow sees it (`last` right after the menu).
CAP = ('{set: {heard: "{{ last.transcript }}", how: "{{ last.source }}", why: "{{ last.reason }}", '
       'attempts: "{{ last.attempts }}"}}')


@pytest.fixture
def menu_flow(tmp_path: Path):
    write_tone(tmp_path / "beep.wav", 0.2)

    def make(timeout: float = 3, extra: str = "") -> Path:
        path = tmp_path / "menu.yaml"
        path.write_text(textwrap.dedent(MENU.format(timeout=timeout, extra=extra, cap=CAP)))
        return path

    return make


WORDS = ("sales", "support", "operator", "pizza")


@pytest.fixture(scope="module")
def said():
    """8 kHz hibari speech of each of WORDS, 0.5 s of silence on both sides (made once)."""
    from ivr.speech import get_tts, synthesize_all

    async def make() -> dict[str, np.ndarray]:
        tts = get_tts("hibari")
        return {w: np.concatenate([PAD, await synthesize_all(tts, w), PAD]) for w in WORDS}

    return asyncio.run(make()).__getitem__


async def run_call(flow: Path, actions, *, speech: SpeechServices | None = None, timeout: float = 20):
    """One call. ``actions``: pcm arrays are spoken and key strings pressed once the IVR
    listens; a float sleeps; ``("prompts", n)`` waits until n prompts were played.
    Returns (call vars, call record)."""
    async with FlowHarness(flow, speech=speech) as h:
        callid, call = await h.place_call()
        for act in actions:
            if isinstance(act, float):
                await asyncio.sleep(act)
            elif isinstance(act, tuple):
                while len(call.call_record.prompts) < act[1] and not call.hung_up:
                    await asyncio.sleep(0.01)
            else:
                assert await until_listening(call, 10), "the IVR never listened"
                if isinstance(act, str):
                    await h.emulator.send_dtmf(callid, act)
                else:
                    await h.emulator.speak(callid, act)
        record = await asyncio.wait_for(h.record_of(call), timeout)
        return dict(call.vars), record


@pytest.mark.speech
@pytest.mark.parametrize("word, key", [("sales", "1"), ("support", "2"), ("operator", "0")])
async def test_menu_choice_by_speech(menu_flow, said, word, key):
    vars_, _record = await run_call(menu_flow(), [said(word)])
    assert vars_["key"] == key and vars_["dept"] == word
    assert vars_["how"] == "speech" and vars_["heard"] == word and vars_["attempts"] == 1


@pytest.mark.speech
async def test_digits_still_work_in_a_speech_menu(menu_flow):
    vars_, _record = await run_call(menu_flow(), ["2"])
    assert vars_["key"] == "2" and vars_["dept"] == "support" and vars_["how"] == "dtmf"


@pytest.mark.speech
async def test_phrase_outside_the_list_is_no_match_then_retry_succeeds(menu_flow, said):
    vars_, record = await run_call(menu_flow(), [said("pizza"), ("prompts", 3), said("operator")])
    # "pizza" against sales/support/operator: pocketsphinx's grammar search reaches no phrase
    # (measured 6/6 through this path); a phrase it does force-match would count as that phrase.
    assert vars_["dept"] == "operator" and vars_["attempts"] == 2 and vars_["how"] == "speech"
    assert record.prompts.count(str(menu_flow().parent / "beep.wav")) >= 3  # prompt, no-match prompt, prompt


@pytest.mark.speech
async def test_silence_is_no_input(menu_flow):
    vars_, _ = await run_call(menu_flow(timeout=0.5), [])
    assert vars_["dept"] == "none" and vars_["key"] is None and vars_["attempts"] == 2


async def test_stt_failure_falls_back_to_keys(menu_flow, said):
    """A failing STT (ScriptedSTT with no transcript left fails every utterance): the caller's
    speech goes unheard, the menu still takes keys, and the flow sees why."""
    flow = menu_flow(extra="stt: scripted")
    tone_speech = (0.3 * 32767 * np.sin(2 * np.pi * 300 * np.arange(6000) / 8000)).astype(np.int16)
    vars_, _record = await run_call(flow, [np.concatenate([PAD, tone_speech, PAD]), 1.5, "1"],
                                   speech=SpeechServices(stt="pocketsphinx", tts=None))
    assert vars_["key"] == "1" and vars_["dept"] == "sales" and vars_["how"] == "dtmf"
    assert vars_["attempts"] == 1  # the failed recognition cost no attempt


async def test_stt_failure_is_visible_to_the_flow(tmp_path):
    write_tone(tmp_path / "beep.wav", 0.2)
    flow = tmp_path / "g.yaml"
    flow.write_text(textwrap.dedent("""
        steps:
          - answer
          - gather:
              prompt: beep.wav
              first_digit_timeout: 0.5
              retries: 0
              speech: {phrases: [yes, no], stt: no-such-engine}
          - set: {why: "{{ last.reason }}", err: "{{ last.speech_error }}"}
          - hangup
    """))
    vars_, _ = await run_call(flow, [])
    assert vars_["why"] == "speech_unavailable" and "no-such-engine" in vars_["err"]


# --- barge-in -----------------------------------------------------------------------------

BARGE = """
    steps:
      - answer
      - play: {{files: long.wav, barge_in: {barge_in}}}
      - set: {{cut: "{{{{ last.interrupted_by }}}}"}}
      - hangup
"""


def loud_until(pcm: np.ndarray, after: float, threshold: int = 500) -> float:
    """Time (s) of the last loud 10 ms block at or after ``after``."""
    blocks = np.abs(pcm[: len(pcm) // 80 * 80].astype(np.int32)).reshape(-1, 80).max(axis=1)
    loud = np.nonzero(blocks[int(after * 100):] > threshold)[0]
    return after + (loud[-1] + 1) / 100 if len(loud) else after


async def barge(tmp_path: Path, said, barge_in: bool) -> tuple[float, float, dict]:
    write_tone(tmp_path / "long.wav", 3.0, 300)
    flow = tmp_path / "barge.yaml"
    flow.write_text(textwrap.dedent(BARGE.format(barge_in=str(barge_in).lower())))
    speech = said("operator")
    onset = np.nonzero(np.abs(speech) > 500)[0][0] / 8000  # the voice starts after the padding
    async with FlowHarness(flow, speech=SpeechServices(stt=None, tts=None)) as h:
        callid, call = await h.place_call()
        while not call.call_record.prompts:  # the prompt has been queued
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        start, _ = await h.emulator.speak(callid, speech)
        await asyncio.wait_for(h.record_of(call), 10)
        heard = h.emulator.heard_pcm(callid)
    return start + onset, loud_until(heard, start + onset), dict(call.vars)


@pytest.mark.speech
async def test_speech_barges_into_a_prompt(tmp_path, said):
    spoke, stopped, vars_ = await barge(tmp_path, said, True)
    print(f"\nIVR audio stopped {1000 * (stopped - spoke):.0f} ms after the caller started speaking")
    assert vars_["cut"] == "speech"
    assert stopped - spoke < 0.5  # VAD start 60 ms + pacer lead 60 ms + transport; headroom for 2 shared cores


@pytest.mark.speech
async def test_prompt_without_barge_in_is_not_cut(tmp_path, said):
    spoke, stopped, vars_ = await barge(tmp_path, said, False)
    assert vars_["cut"] in (None, "", "None")  # played to the end: nothing interrupted it
    assert stopped - spoke > 1.5  # the 3 s prompt played on well past the speech (about 1 s of it)


@pytest.mark.speech
async def test_sim_caller_says_a_menu_choice(ivr_sim, menu_flow):
    caller = await ivr_sim.call(menu_flow())
    # Once the menu listens: said at call arrival, the words could start before the caller's
    # audio stream was open, and the menu heard only their end.
    await caller.says("technical support", when_listening=True)
    record = await caller.record()
    assert caller.call.vars["dept"] == "support" and caller.call.vars["how"] == "speech"
    assert "hangup" in str(record.outcome)
