"""Loading YAML flows: short forms, positions of every error, semantic checks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ivr.flow import FlowLoadError, load_flow, load_flow_text
from ivr.flow.schema import Flow, GotoStep, MenuStep, PlayStep, Prompt, SayPrompt, TransferStep


def write(tmp_path: Path, text: str, name: str = "flow.yaml", audio: tuple[str, ...] = ()) -> Path:
    (tmp_path / "audio").mkdir(exist_ok=True)
    for a in audio:
        (tmp_path / "audio" / a).write_bytes(b"RIFF")
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str, audio: tuple[str, ...] = ()) -> list[str]:
    """The formatted diagnostics, with the temp folder stripped."""
    path = write(tmp_path, text, audio=audio)
    with pytest.raises(FlowLoadError) as info:
        load_flow(path)
    assert str(info.value) == "\n".join(d.format() for d in info.value.diagnostics)
    return [d.format().replace(str(path), "f") for d in info.value.diagnostics]


FULL = """
# yaml-language-server: $schema=../ivr/flow/flow.schema.json
description: Company main menu
params: {department: sales}
vars: {tries: 0}
steps:
  - answer
  - play: welcome.wav
  - say: "Hello {{ caller.name or 'there' }}"
  - hours:
      timezone: Europe/Berlin
      weekly: {mon-fri: "08:00-18:00", sat: "09:00-12:00"}
      holidays: ["2026-12-25", 2026-12-26]
      closed: [{goto: after_hours}]
  - id: main
    menu:
      prompt: [main_menu.wav, {say: "or press 0"}]
      timeout: 5
      no_input_prompt: [no_input.wav, [no_input.wav, {say: "last chance"}]]
      no_match_prompt: invalid.wav
      choices:
        1: [{transfer: {to: 101, mode: routeto, timeout: 20}}]
        "2": [{transfer: {to: "102", on_busy: [{goto: voicemail}]}}]
        "0": [{goto: operator}]
      on_no_input: [{goto: operator}]
  - gather: {prompt: pin.wav, min_digits: 4, max_digits: 6, valid_digits: "0123456789", into: pin,
             on_match: [{set: {tries: "{{ tries + 1 }}"}}]}
  - if: "{{ vars.tries > 2 }}"
    then: [hangup]
    else: [{log: "tries {{ tries }}"}]
  - switch: "{{ digits }}"
    cases: {"1": [{pause: 0.5}]}
    default: [{attach_data: {department: "{{ department }}"}}]
  - transfer: "100"
  - id: operator
    http: {method: post, url: "https://example.com/x", json: {n: "{{ caller.number }}"}, into: resp,
           on_failure: [{goto: voicemail}]}
  - id: after_hours
    record: "recordings/{{ call.id }}.wav"
  - id: voicemail
    voicemail: {mailbox: "100", greeting: vm_greeting.wav}
  - return: {ok: true}
on_error: [{play: sorry.wav}, {transfer: {to: "100"}}]
on_hangup: [{log: "caller left"}]
"""
AUDIO = ("welcome.wav", "main_menu.wav", "no_input.wav", "invalid.wav", "pin.wav", "vm_greeting.wav", "sorry.wav")


def test_full_example_loads_with_short_forms_normalised(tmp_path: Path) -> None:
    flow = load_flow(write(tmp_path, FULL, "main_menu.yaml", AUDIO))
    assert isinstance(flow, Flow)
    assert flow.name == "main_menu" and flow.path == tmp_path / "main_menu.yaml"
    assert flow.params == {"department": "sales"} and flow.vars == {"tries": 0}
    assert [s.kind for s in flow.steps][:4] == ["answer", "play", "say", "hours"]
    assert flow.steps[1].play.files == ["welcome.wav"] and flow.steps[1].play.loop == 1
    menu = flow.find("main")
    assert isinstance(menu, MenuStep)
    assert list(menu.menu.choices) == ["1", "2", "0"]  # YAML int key 1 reads as "1"
    assert menu.menu.prompt.parts[1] == SayPrompt(say="or press 0")
    assert [len(p.parts) for p in menu.menu.no_input_prompt] == [1, 2]  # escalation list
    assert menu.menu.no_match_prompt == [Prompt(parts=["invalid.wav"])]
    t = menu.menu.choices["1"][0]
    assert isinstance(t, TransferStep) and t.transfer.to == "101"
    assert flow.steps[-2].action.mailbox == "100"
    assert flow.find("operator").http.method == "POST"
    assert next(s for s in flow.steps if s.kind == "transfer").transfer.to == "100"
    assert flow.diagnostics == []  # no warnings either


def test_ids_addresses_and_branches(tmp_path: Path) -> None:
    flow = load_flow(write(tmp_path, FULL, "main_menu.yaml", AUDIO))
    assert set(flow.ids) == {"main", "operator", "after_hours", "voicemail"}
    steps, index = flow.address("operator")[-1]
    assert steps is flow.steps and steps[index].id == "operator"
    with pytest.raises(KeyError, match="did you mean 'main'"):
        flow.address("mian")
    menu = flow.find("main")
    labels = [path for path, _ in menu.branches()]
    assert ("menu", "choices", "1") in labels and ("menu", "on_no_input") in labels
    nested = [s for s, addr in flow.walk() if len(addr) > 1 and isinstance(s, GotoStep)]
    assert {s.goto for s in nested} == {"after_hours", "voicemail", "operator"}


def test_bad_yaml_reports_the_parser_position(tmp_path: Path) -> None:
    assert problems(tmp_path, "steps:\n  - play: [a.wav\n") == [
        "f:3:1: error: YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)"]
    out = problems(tmp_path, "steps: [answer]\nsteps: [hangup]\n")
    assert out[0].startswith("f:2:1: error: YAML: found duplicate key \"steps\"")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "f:1:1: error: the flow file is empty: expected a mapping with 'steps'"),
        ("- answer\n", "f:1:1: error: a flow file is a mapping with 'steps', not a list"),
        ("steps: [answer]\n---\nsteps: [answer]\n", "f:1:1: error: a flow file holds one YAML document, found several"),
        ("name: x\n", "f:1:1: error: missing required field 'steps' in flow"),
        ("steps: []\n", "f:1:8: error: 'steps' needs at least 1 item"),
    ],
)
def test_document_shape(tmp_path: Path, text: str, expected: str) -> None:
    assert problems(tmp_path, text) == [expected]


def test_all_schema_errors_with_positions(tmp_path: Path) -> None:
    text = """
    steps:
      - answer
      - trasnfer: {to: "101"}
      - play: {files: [welcome.wav], loop: "x", tiemout: 3}
      - menu:
          prompt: welcome.wav
          choices: {"1": [hangup], "x": [hangup]}
          timout: 4
      - transfer: {mode: bogus}
      - say: "Hello {{ caller.name ( }}"
      - set: {caller: 1}
      - hours: {timezone: Mars/Base, weekly: {mon-fry: "08:00-18:00"}}
      - {play: a.wav, say: hi}
      - 42
      - then: [hangup]
      - play
      - if: "tries >"
      - id: "bad id"
        hangup:
      - gather: {min_digits: 5, max_digits: 2}
    """
    assert problems(tmp_path, text, audio=("welcome.wav",)) == [
        "f:3:5: error: unknown step 'trasnfer' (did you mean 'transfer'?)",
        "f:4:40: error: 'loop' should be a whole number, got 'x'",
        "f:4:45: error: unknown field 'tiemout' in play",
        "f:7:32: error: menu choice 'x' must be one key: 0-9, * or #",
        "f:8:7: error: unknown field 'timout' in menu (did you mean 'timeout'?)",
        "f:9:15: error: missing required field 'to' in transfer",
        "f:9:22: error: 'mode' should be 'routeto', 'transferto' or 'divert', got 'bogus'",
        "f:10:10: error: template syntax error: unexpected '}', expected ')'",
        "f:11:11: error: 'caller' is reserved by the template context "
        "(call, caller, digits, error, last, now, params, pbx, vars)",
        "f:12:23: error: unknown time zone 'Mars/Base' (use an IANA name like Europe/Berlin)",
        "f:12:43: error: unknown day 'fry' (use mon, tue, wed, thu, fri, sat, sun)",
        "f:13:19: error: a step has one action; found 'play' and 'say' (make them separate list items)",
        "f:14:5: error: a step is a name like 'answer' or a mapping like 'play: file.wav', not int",
        "f:15:5: error: 'then' belongs to an 'if' step, which is missing",
        "f:16:5: error: step 'play' needs a value, e.g. 'play: ...'",
        "f:17:9: error: template syntax error: unexpected 'end of template'",
        "f:18:9: error: step id 'bad id' must start with a letter or _ and use letters, digits, _ . -",
        "f:20:14: error: min_digits (5) is larger than max_digits (2)",
    ]


def test_template_errors_inside_values_point_at_the_string(tmp_path: Path) -> None:
    text = """
    steps:
      - http:
          url: "https://x.test/{{ a }"
          json: {outer: {inner: ["ok", "{{ b }"]}}
    """
    assert problems(tmp_path, text) == [
        "f:3:12: error: template syntax error: unexpected '}'",
        "f:4:36: error: template syntax error: unexpected '}'",
    ]


def test_semantic_errors_and_warnings(tmp_path: Path) -> None:
    text = """
    steps:
      - id: main
        play: welcome.wav
      - goto: mian
      - log: never runs
      - log: nor this
      - id: again
        play: missing.wav
      - subflow: {file: nowhere.yaml}
      - say: "{{ caler.name }}"
      - id: main
        hangup:
    """
    assert problems(tmp_path, text, audio=("welcome.wav",)) == [
        "f:4:11: error: goto target 'mian' not found (did you mean 'main'?)",
        "f:5:5: warning: unreachable step: it follows the goto on line 4 and has no id",
        "f:8:11: error: audio file 'missing.wav' not found (looked next to the flow and in audio/ folders)",
        "f:9:21: error: subflow file 'nowhere.yaml' not found",
        "f:10:10: warning: template uses unknown name 'caler' (did you mean 'caller'?) "
        "(set it with 'set:' or 'vars:' first)",
        "f:11:9: error: duplicate step id 'main' (first used on line 2)",
    ]


def test_warnings_alone_do_not_stop_loading(tmp_path: Path) -> None:
    flow = load_flow(write(tmp_path, """
    steps:
      - hangup
      - log: "after {{ whoever }}"
    on_hangup: [{play: bye.wav}]
    """, audio=("bye.wav",)))
    assert [d.format().split(": ", 1)[1] for d in flow.diagnostics] == [
        "warning: unreachable step: it follows the hangup on line 2 and has no id",
        "warning: template uses unknown name 'whoever' (set it with 'set:' or 'vars:' first)",
        "warning: 'play' is skipped in on_hangup: the caller is gone",
    ]


def test_when_guard_keeps_steps_reachable_and_known_names(tmp_path: Path) -> None:
    flow = load_flow(write(tmp_path, """
    vars: {x: 1}
    steps:
      - gather: {into: code}
      - goto: end
        when: "code == '1'"
      - log: "code {{ code }} x {{ x }} {{ params }} {{ last }} {{ now }}"
      - id: end
        return: {}
    """))
    assert flow.diagnostics == []


def test_file_checks_can_be_skipped_and_text_loading(tmp_path: Path) -> None:
    flow = load_flow_text("steps: [{play: nowhere.wav}]\n", tmp_path / "x.yaml", check_files=False)
    assert flow.name == "x"
    with pytest.raises(FlowLoadError, match=r"audio file 'nowhere.wav' not found"):
        load_flow_text("steps: [{play: nowhere.wav}]\n", tmp_path / "x.yaml")
    # templated file names cannot be checked before the call: not an error
    load_flow_text("steps: [{play: \"{{ lang }}/hello.wav\"}]\nvars: {lang: de}\n", tmp_path / "y.yaml")


def test_audio_found_next_to_the_flow_or_in_parent_audio(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.wav").write_bytes(b"")
    (tmp_path / "flows" / "b.wav").write_bytes(b"")
    path = tmp_path / "flows" / "f.yaml"
    path.write_text("steps: [{play: [a.wav, b.wav]}]\n")
    assert load_flow(path).steps[0].play.files == ["a.wav", "b.wav"]


def test_unreadable_inputs_are_load_errors(tmp_path: Path) -> None:
    for path, message in [
        (tmp_path / "missing.yaml", "file not found"),
        (tmp_path, "is a directory, not a flow file"),
    ]:
        with pytest.raises(FlowLoadError, match=message):
            load_flow(path)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"steps:\n  - \xff\xfe\x00")
    with pytest.raises(FlowLoadError) as info:
        load_flow(binary)
    assert info.value.diagnostics[0].format().endswith(":2:5: error: not UTF-8 text (binary file?)")


def test_programmatic_flow_and_play_short_forms() -> None:
    flow = Flow.model_validate({"steps": [{"play": ["a.wav", "b.wav"]}, {"play": {"files": "c.wav", "loop": 2}}]})
    assert isinstance(flow.steps[0], PlayStep)
    assert flow.steps[0].play.files == ["a.wav", "b.wav"] and flow.steps[1].play.files == ["c.wav"]
    assert flow.path is None


def test_docs_example_is_a_valid_flow(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parent.parent / "docs" / "flows.md"
    example = docs.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    flow = load_flow_text(example, tmp_path / "main_menu.yaml", check_files=False)
    assert flow.find("voicemail") is not None and flow.diagnostics == []
