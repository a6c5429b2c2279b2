"""The agent's pure parts: sentence splitting, tool declarations and argument checks, the
YAML step's validation, and per-turn metrics."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from fake_call import FakeCall

from ivr.agent import AgentTools, ParamSpec, SentenceSplitter, ToolArgumentError, TurnMetrics, speakable
from ivr.agent.tools import ToolBox, validate_arguments
from ivr.flow import FlowLoadError, load_flow
from ivr.speech import ToolCall


def split(deltas: list[str], **kw: int) -> list[str]:
    s = SentenceSplitter(**kw)
    out = [x for d in deltas for x in s.feed(d)]
    return out + s.flush()


def test_sentences_complete_as_soon_as_the_next_word_starts() -> None:
    s = SentenceSplitter()
    assert s.feed("Hello there.") == []  # "there." might be "there.com": wait for a space
    assert s.feed(" How") == ["Hello there."]
    assert s.pending == "How"
    assert s.feed(" are you?\n") == ["How are you?"]


def test_sentences_keep_abbreviations_initials_and_decimals() -> None:
    text = "Dr. Smith from J. Doe Inc. will call. It costs 5.50 euros, e.g. today! Ok"
    assert split(list(text)) == ["Dr. Smith from J. Doe Inc. will call.", "It costs 5.50 euros, e.g. today!", "Ok"]


def test_sentences_cut_run_ons_at_a_comma_and_drop_markdown() -> None:
    run_on = "one, " * 60
    parts = split([run_on], max_chars=50)
    assert all(len(p) <= 50 for p in parts) and all(p.endswith("one,") or p == "one," for p in parts[:-1])
    assert split(["**Sure**: here are the options\n- sales\n- support"]) == [
        "Sure:", "here are the options", "sales", "support"]
    assert speakable("`code` and _this_") == "code and this"
    assert split(["...", " !"]) == []  # nothing to say


def test_tool_specs_enumerate_the_allowlist() -> None:
    tools = AgentTools.of({"transfer": {"sales": 101, "support": "102"}, "hangup": True, "set": ["name"],
                           "return": {"fields": {"reason": "string", "n": {"type": "integer", "required": False}}}})
    specs = {s.name: s for s in tools.specs()}
    assert set(specs) == {"transfer", "hang_up", "set_variable", "return_to_flow"}
    dest = specs["transfer"].parameters
    assert dest["properties"]["destination"]["enum"] == ["sales", "support"]
    assert dest["additionalProperties"] is False and dest["required"] == ["destination"]
    assert specs["return_to_flow"].parameters["required"] == ["reason"]
    assert AgentTools.of(None).specs() == []
    with pytest.raises(ValueError, match="unknown agent tool 'dial'"):
        AgentTools.of({"dial": True})
    with pytest.raises(ValueError, match="transfer destination 'x' is empty"):
        AgentTools(transfer={"x": " "})


def test_destination_resolution_accepts_only_the_allowlist() -> None:
    box = ToolBox(AgentTools(transfer={"Sales": "101"}), call=FakeCall(), variables={})
    assert box.resolve_destination("sales") == ("Sales", "101")
    assert box.resolve_destination(" 101 ") == ("Sales", "101")
    for bad in ("102", "1010", "sales; 0900", "+49101", "", None, {"to": "101"}):
        assert box.resolve_destination(bad) is None


async def test_refusals_and_bad_arguments_go_back_to_the_model() -> None:
    variables: dict[str, str] = {}
    box = ToolBox(AgentTools(transfer={"sales": "101"}, set={"name": ""}), call=FakeCall(), variables=variables)
    out = await box.run(ToolCall("1", "transfer", {"destination": "0900 123"}))
    assert out.end is None and out.result["error"].startswith("transfer refused: '0900 123' is not an allowed")
    out = await box.run(ToolCall("2", "transfer", {"destination": "sales", "via": "x"}))
    assert out.result == {"error": "transfer: unknown argument 'via'; expected: destination"}
    out = await box.run(ToolCall("3", "hang_up", {}))  # not declared: not offered, not run
    assert out.result["error"] == "there is no tool 'hang_up'; available: transfer, set_variable"
    out = await box.run(ToolCall("4", "set_variable", {"name": "other", "value": "x"}))
    assert "name must be one of name" in out.result["error"] and variables == {}
    out = await box.run(ToolCall("5", "set_variable", {"name": "name", "value": 42}))
    assert out.result == {"ok": True} and variables == {"name": "42"}


def test_argument_validation() -> None:
    params = {"n": ParamSpec("integer"), "x": ParamSpec("number", required=False),
              "ok": ParamSpec("boolean", required=False), "c": ParamSpec("string", enum=("a", "b"), required=False)}
    assert validate_arguments(params, {"n": "3", "x": "2.5", "ok": "true", "c": "a"}) == {
        "n": 3, "x": 2.5, "ok": True, "c": "a"}
    assert validate_arguments(params, {"n": 1, "x": None}) == {"n": 1}
    for args, message in [
        ({}, "missing argument 'n'"),
        ({"n": 1.5}, "n must be an integer"),
        ({"n": True}, "n must be a integer"),
        ({"n": "two"}, "n must be a integer"),
        ({"n": 1, "ok": "yes"}, "ok must be true or false"),
        ({"n": 1, "c": "z"}, "c must be one of a, b"),
        ({"n": 1, "zz": 1}, "unknown argument 'zz'"),
        ([1], "arguments must be an object"),
    ]:
        with pytest.raises(ToolArgumentError, match=message):
            validate_arguments(params, args)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="parameter type must be one of"):
        ParamSpec("date")


def test_turn_metrics_are_relative_to_the_end_of_speech() -> None:
    t = TurnMetrics(1, speech_end=10.0, vad_hangover=0.52)
    t.mark("stt", 10.1)
    t.mark("first_token", 10.3)
    t.mark("first_token", 10.9)  # later rounds do not move it
    d = t.to_dict()
    assert d["stt_ms"] == 100.0 and d["first_token_ms"] == 300.0 and d["first_audio_ms"] is None
    assert d["vad_hangover_ms"] == 520.0
    with pytest.raises(ValueError, match="unknown turn milestone"):
        t.mark("done", 11)


def load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    load_flow(path)


def test_agent_step_validates_with_positions(tmp_path: Path) -> None:
    load(tmp_path, """
    steps:
      - agent:
          system: "Caller {{ caller.number }}"
          tools:
            transfer: {sales: 101}
            http: [{name: status, url: "https://x.example/{{ args.id }}", parameters: {id: integer}}]
            set: [customer]
          on_returned: [{log: "{{ customer }}"}]
    """)
    with pytest.raises(FlowLoadError) as err:
        load(tmp_path, """
        steps:
          - agent:
              max_turns: 0
              tools:
                http: [{name: transfer, url: "ftp://x"}]
              on_retuned: []
        """)
    text = str(err.value)
    assert "f.yaml:3:18: error: 'max_turns' should be greater than or equal to 1" in text
    assert "f.yaml:5:23: error: http tool name 'transfer' is taken by a built-in tool" in text
    assert "f.yaml:5:38: error: url 'ftp://x' must start with http:// or https://" in text
    assert "f.yaml:6:7: error: unknown field 'on_retuned' in agent (did you mean 'on_returned'?)" in text


def test_a_barge_in_queued_before_the_reply_still_lets_it_start_then_stops_it() -> None:
    # The agent's wait on a reply takes the caller's inputs from the call's one stream; speech
    # already queued stops the reply, but only after its first step (the model request made,
    # then cancelled), as when the agent raced futures. Virtual-time loop: no real waiting.
    from types import SimpleNamespace

    from ivr.agent.loop import AgentLoop, AgentSettings
    from ivr.audio.vad import SpeechStarted
    from ivr.call.inputs import InputStream
    from ivr.testing.clock import run

    async def main() -> tuple[bool, list[str]]:
        steps: list[str] = []
        media = SimpleNamespace(inputs=InputStream())
        agent = AgentLoop(FakeCall(media=media, call_id="c1"), AgentSettings())  # type: ignore[arg-type]
        media.inputs.push(SpeechStarted(t=0.0))

        async def reply() -> None:
            steps.append("started")
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                steps.append("cancelled")
                raise

        barged = await agent._watch(reply())
        return barged, steps

    assert run(main()) == (True, ["started", "cancelled"])
