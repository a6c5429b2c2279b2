"""``ivr graph``: flow -> graph -> Mermaid / DOT / SVG / PNG, and the CLI around it.

The Mermaid checks parse the text we emit (node declarations, edges, subgraphs) and hold it to
the flow model: every edge joins declared nodes, every menu key is an edge label, every goto
lands on the step with that id. DOT goes through the real Graphviz ``dot`` when it is installed.

``python -m tests.test_flow_graph`` regenerates docs/flows-diagrams.md and docs/img/*.svg.
"""

from __future__ import annotations

import re
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ivr.flow import FlowLoadError, load_flow, load_flow_text
from ivr.flow.graph import (
    FlowGraph,
    GraphvizMissing,
    build_graph,
    mermaid_escape,
    render_dot,
    to_dot,
    to_mermaid,
)
from ivr.flow.graph_cli import graph_main

ROOT = Path(__file__).resolve().parent.parent
FLOWS = sorted((ROOT / "flows").glob("*.yaml"))
DOC = ROOT / "docs" / "flows-diagrams.md"
HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz 'dot' is not installed (apt-get install graphviz)")


# --- a small Mermaid reader (just the subset to_mermaid writes) ---------------------------------

_NODE = re.compile(r'^\s*(n\d+)(\(\["|\["|\{\{"|\[\["|>")(.*?)("\]\)|"\]|"\}\}|"\]\])(?::::(\w+))?$')
_EDGE = re.compile(r'^\s*(n\d+) (-->|-\.->|~~~)(?:\|"(.*?)"\|)? (n\d+)$')
_ENTITY = re.compile(r"#(\d+|quot|lt|gt|amp);")
_NAMED = {"quot": '"', "lt": "<", "gt": ">", "amp": "&"}


def unescape(text: str) -> str:
    # '#' starts an entity in Mermaid, so a bare one (like a "#" menu key) must be escaped too
    assert "#" not in _ENTITY.sub("", text), f"bare '#' in Mermaid label: {text!r}"
    return _ENTITY.sub(lambda m: _NAMED.get(m.group(1)) or chr(int(m.group(1))), text)


def parse_mermaid(text: str) -> tuple[dict[str, list[str]], list[tuple[str, str, str, str]]]:
    """Nodes (id -> label lines) and edges (src, arrow, label, dst); fails on any other line."""
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    nodes: dict[str, list[str]] = {}
    edges: list[tuple[str, str, str, str]] = []
    depth = 0
    for line in lines[1:]:
        if m := _NODE.match(line):
            assert m.group(1) not in nodes, f"node declared twice: {line}"
            raw = m.group(3)
            assert '"' not in raw, f"unescaped quote in label: {line}"
            nodes[m.group(1)] = [unescape(part) for part in raw.split("<br/>")]
        elif m := _EDGE.match(line):
            assert '"' not in (m.group(3) or ""), f"unescaped quote in edge label: {line}"
            edges.append((m.group(1), m.group(2), unescape(m.group(3) or ""), m.group(4)))
        elif re.match(r'^\s*subgraph c\d+\[".*"\]$', line):
            depth += 1
        elif line.strip() == "end":
            depth -= 1
            assert depth >= 0, "unbalanced subgraph end"
        elif m := re.match(r"^\s*class ([\w,]+) unreachable$", line):
            assert set(m.group(1).split(",")) <= set(nodes), f"class names an undeclared node: {line}"
        elif not line.strip().startswith("classDef "):
            raise AssertionError(f"unexpected Mermaid line: {line!r}")
    assert depth == 0, "unclosed subgraph"
    return nodes, edges


def labels_from(edges: list[tuple[str, str, str, str]], src: str) -> set[str]:
    return {part for s, _, label, _ in edges if s == src for part in label.split(" / ") if part}


def node_with(nodes: dict[str, list[str]], first_line: str) -> str:
    found = [nid for nid, lines in nodes.items() if lines[0] == first_line]
    assert len(found) == 1, f"{first_line!r}: {found}"
    return found[0]


# --- shipped flows --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.name)
def test_shipped_flow_mermaid_is_consistent_with_the_model(path: Path) -> None:
    flow = load_flow(path)
    nodes, edges = parse_mermaid(to_mermaid(build_graph(flow)))
    for src, _, _, dst in edges:
        assert src in nodes and dst in nodes, f"edge {src} -> {dst} names an undeclared node"
    steps = [step for step, _ in flow.walk()]
    step_nodes = [nid for nid, lines in nodes.items()
                  if lines[0] not in ("start", "on error", "on hangup", "end", "transferred", "error")]
    assert len(step_nodes) == len(steps)  # one node per step, none invented
    by_id = {lines[i][4:]: nid for nid, lines in nodes.items() for i in range(1, len(lines))
             if lines[i].startswith("id: ")}
    assert set(by_id) == set(flow.ids)
    # Walk steps and nodes together: both are in file order.
    for step, nid in zip(steps, step_nodes, strict=True):
        assert nodes[nid][0].split(" ")[0] == step.kind
        if step.kind == "menu":
            assert set(step.menu.choices) | {"no input", "no match"} <= labels_from(edges, nid)
        if step.kind == "goto":
            targets = [dst for s, arrow, _, dst in edges if s == nid and arrow == "-.->"]
            assert targets == [by_id[step.goto]], f"goto {step.goto} should land on its step"
    entries = [nid for nid, lines in nodes.items() if lines[0] in ("start", "on error", "on hangup")]
    for nid in entries:  # entry points have no way in
        assert not [e for e in edges if e[3] == nid]


def test_main_menu_shows_hours_transfer_results_and_on_error() -> None:
    text = to_mermaid(build_graph(load_flow(ROOT / "flows" / "main_menu.yaml")))
    nodes, edges = parse_mermaid(text)
    assert nodes[node_with(nodes, "menu main_menu.wav")][1:] == ["id: main"]
    assert labels_from(edges, node_with(nodes, "hours Europe/Berlin")) == {"open", "closed"}
    t101 = node_with(nodes, "transfer 101")
    assert labels_from(edges, t101) == {"answered", "busy", "no answer", "failed"}
    answered = [dst for s, _, label, dst in edges if s == t101 and label == "answered"]
    assert nodes[answered[0]] == ["transferred"]  # no on_answered: the call left the IVR
    assert [lines[0] for lines in nodes.values()].count("on error") == 1
    # The hangup after the menu can never run: it is marked and only held in place.
    dead = [nid for nid, lines in nodes.items() if lines == ["hangup", "(unreachable)"]]
    assert len(dead) == 2
    assert all(arrow == "~~~" for _, arrow, _, dst in edges if dst in dead)
    assert re.search(rf"^  class {','.join(dead)} unreachable$", text, re.M)


def test_pin_entry_shows_http_failure_if_branches_and_returns() -> None:
    nodes, edges = parse_mermaid(to_mermaid(build_graph(load_flow(ROOT / "flows" / "pin_entry.yaml"))))
    http = node_with(nodes, "http POST {{ params.pin_url | raw_url }}")
    assert labels_from(edges, http) == {"ok", "failure"}
    gather = node_with(nodes, "gather pin_prompt.wav → pin")
    assert labels_from(edges, gather) == {"match", "no input", "no match"}
    assert {"return verified = true", "return verified = false"} <= {lines[0] for lines in nodes.values()}
    for nid, lines in nodes.items():
        if lines[0].startswith("if "):
            assert labels_from(edges, nid) == {"then", "else"}


# --- semantics on small flows --------------------------------------------------------------------

BRANCHY = """
name: branchy
on_error: [{log: oops}]
on_hangup: [{log: gone}]
steps:
  - answer
  - switch: "{{ caller.number }}"
    cases:
      "100": [{say: "boss"}]
      "200": []
    default: [{play: other.wav}]
  - when: "{{ caller.number == '1' }}"
    pause: 0.5
  - http: {url: "https://example.org/x"}
  - http: {url: "https://example.org/y", on_failure: [{log: failed}]}
  - transfer: {to: 7, on_answered: [{log: bye}, hangup]}
  - id: last
    log: done
"""


def _graph(text: str, **kw) -> tuple[FlowGraph, dict[str, list[str]], list[tuple[str, str, str, str]]]:
    graph = build_graph(load_flow_text(text, "t.yaml", check_files=False), **kw)
    nodes, edges = parse_mermaid(to_mermaid(graph))
    return graph, nodes, edges


def test_switch_when_http_and_transfer_edges() -> None:
    _, nodes, edges = _graph(BRANCHY)
    switch = node_with(nodes, "switch {{ caller.number }}")
    assert labels_from(edges, switch) == {"100", "200", "default"}
    pause = node_with(nodes, "pause 0.5s")
    assert nodes[pause][1] == "when: {{ caller.number == '1' }}"
    http_x = node_with(nodes, "http GET https://example.org/x")
    http_y = node_with(nodes, "http GET https://example.org/y")
    # "200" has no steps: it goes straight to the next step, like the interpreter does.
    assert (switch, "-->", "200", pause) in edges
    assert (pause, "-.->", "skipped", http_x) in edges  # `when` false skips the step
    # No on_failure: the failure raises, which runs on_error (dashed: not a branch of its own).
    assert (http_x, "-.->", "failure", node_with(nodes, "on error")) in edges
    assert (http_y, "-->", "failure", node_with(nodes, "log failed")) in edges
    transfer = node_with(nodes, "transfer 7")
    assert (transfer, "-->", "answered", node_with(nodes, "log bye")) in edges
    assert (transfer, "-->", "busy / no answer / failed", node_with(nodes, "log done")) in edges
    assert "transferred" not in {lines[0] for lines in nodes.values()}  # on_answered is given
    # Each section ends in its own "end"; on_error and on_hangup are entries of their own.
    ends = [nid for nid, lines in nodes.items() if lines == ["end"]]
    assert len(ends) == 3
    for entry in ("start", "on error", "on hangup"):
        assert [e for e in edges if e[0] == node_with(nodes, entry)]


def test_mermaid_escaping_round_trips_awkward_text() -> None:
    awkward = 'He said "hi" <b>&amp;</b> #1 `x`'
    assert '"' not in mermaid_escape(awkward) and "<" not in mermaid_escape(awkward)
    assert unescape(mermaid_escape(awkward)) == awkward
    _, nodes, edges = _graph(f"""
steps:
  - say: '{awkward.replace("'", "''")}'
  - menu:
      prompt: {{say: 'press "#"'}}
      choices: {{"#": [hangup], "*": [hangup]}}
""")
    assert nodes[node_with(nodes, f'say "{awkward}"')]
    menu = node_with(nodes, 'menu "press "#""')
    assert {"#", "*"} <= labels_from(edges, menu)


def test_long_labels_are_cut() -> None:
    _, nodes, _ = _graph("steps:\n  - log: '" + "word " * 40 + "'\n")
    label = next(lines[0] for lines in nodes.values() if lines[0].startswith("log "))
    assert label.endswith("…") and len(label) <= 42


# --- subflows ---------------------------------------------------------------------------------


def test_subflow_is_a_node_and_expands_into_a_cluster() -> None:
    path = ROOT / "flows" / "main_menu.yaml"
    plain = to_mermaid(build_graph(load_flow(path)))
    assert "subgraph" not in plain and '[["subflow voicemail.yaml' in plain
    expanded = to_mermaid(build_graph(load_flow(path), expand=True))
    nodes, edges = parse_mermaid(expanded)
    assert 'subgraph c' in expanded and '["subflow voicemail.yaml"]' in expanded
    sub = node_with(nodes, "subflow voicemail.yaml")
    runs = [dst for s, arrow, label, dst in edges if s == sub and label == "runs"]
    assert [nodes[d] for d in runs] == [["start"]]
    assert "voicemail {{ params.mailbox }}" in {lines[0] for lines in nodes.values()}


def test_expand_stops_at_recursion_and_reports_bad_subflows(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("steps:\n  - subflow: b.yaml\n  - hangup\n")
    (tmp_path / "b.yaml").write_text("steps:\n  - if: true\n    then: [return]\n  - subflow: a.yaml\n")
    graph = build_graph(load_flow(tmp_path / "a.yaml"), expand=True)
    assert [c.title for c in graph.clusters] == ["subflow b.yaml"] and not graph.clusters[0].clusters
    nodes, edges = parse_mermaid(to_mermaid(graph))
    back = [(nodes[s][0], nodes[d][0]) for s, _, label, d in edges if label == "back"]
    assert back == [("return", "hangup"), ("end", "hangup")]  # both ways out of b return to a
    (tmp_path / "b.yaml").write_text("steps:\n  - play: {files: x.wav, bogus: 1}\n")
    with pytest.raises(FlowLoadError, match=r"b\.yaml:2:\d+: error: .*bogus"):
        build_graph(load_flow(tmp_path / "a.yaml"), expand=True)


# --- Graphviz ---------------------------------------------------------------------------------


@needs_dot
@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.name)
def test_dot_renders_svg_with_every_node(path: Path) -> None:
    graph = build_graph(load_flow(path), expand=True)
    svg = render_dot(to_dot(graph), "svg")
    root = ET.fromstring(svg)  # well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    titles = {t.text for t in root.iter(f"{ns}title")}
    assert set(graph.nodes) <= titles
    texts = {t.text for t in root.iter(f"{ns}text")}
    for node in graph.nodes.values():
        assert node.lines[0] in texts


@needs_dot
def test_dot_keeps_quotes_and_backslashes_literal() -> None:
    graph = build_graph(load_flow_text('steps:\n  - log: \'a "q" \\N b\\\\c\'\n', "t.yaml"))
    svg = render_dot(to_dot(graph), "svg").decode()
    assert "log a &quot;q&quot; \\N b\\\\c" in svg


def test_missing_dot_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no dot on it
    with pytest.raises(GraphvizMissing, match="install the graphviz package"):
        render_dot("digraph {}", "svg")
    out = tmp_path / "f.png"
    assert graph_main([str(ROOT / "flows" / "voicemail.yaml"), "-o", str(out)]) == 1
    assert not out.exists()


# --- CLI ------------------------------------------------------------------------------------------


@needs_dot
def test_cli_writes_png_and_svg(tmp_path: Path) -> None:
    flow = str(ROOT / "flows" / "pin_entry.yaml")
    assert graph_main([flow, "-o", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert graph_main([flow, "-o", str(tmp_path / "f.svg"), "--expand"]) == 0
    assert b"<svg" in (tmp_path / "f.svg").read_bytes()


def test_cli_mermaid_markdown_dot_and_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow = str(ROOT / "flows" / "voicemail.yaml")
    assert graph_main([flow, "-o", str(tmp_path / "f.md")]) == 0
    md = (tmp_path / "f.md").read_text()
    assert md.startswith("# voicemail\n") and "```mermaid\nflowchart TD\n" in md and md.endswith("```\n")
    assert graph_main([flow, "-o", str(tmp_path / "f.dot")]) == 0
    assert (tmp_path / "f.dot").read_text().startswith("digraph flow {")
    capsys.readouterr()
    assert graph_main([flow]) == 0
    assert capsys.readouterr().out == to_mermaid(build_graph(load_flow(flow)))


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert graph_main([str(missing), "-o", str(tmp_path / "x.md")]) == 1
    err = capsys.readouterr().err
    assert re.match(rf"{re.escape(str(missing))}:1:1: error: .*", err) and len(err.splitlines()) == 1

    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - answer\n  - plya: a.wav\n  - menu: {prompt: m.wav, choices: {'12': [hangup]}}\n")
    assert graph_main([str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 2 and all(re.match(rf"{re.escape(str(bad))}:\d+:\d+: error: ", ln) for ln in lines)
    assert lines[0].startswith(f"{bad}:3:5: error: unknown step 'plya'")

    assert graph_main([str(ROOT / "flows" / "voicemail.yaml"), "-o", str(tmp_path / "f.jpg")]) == 2
    err = capsys.readouterr().err
    assert "unknown output type '.jpg'" in err and ".svg" in err and len(err.splitlines()) == 1

    (tmp_path / "f.py").write_text("async def run(call): pass\n")
    assert graph_main([str(tmp_path / "f.py")]) == 1
    assert "only YAML flows" in capsys.readouterr().err

    assert graph_main([str(ROOT / "flows" / "voicemail.yaml"), "-o", str(tmp_path / "no" / "dir.md")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_missing_audio_does_not_stop_drawing(tmp_path: Path) -> None:
    flow = tmp_path / "f.yaml"
    flow.write_text("steps:\n  - play: not_recorded_yet.wav\n")
    assert graph_main([str(flow), "-o", str(tmp_path / "f.mmd")]) == 0
    assert "play not_recorded_yet.wav" in (tmp_path / "f.mmd").read_text()


# --- docs -----------------------------------------------------------------------------------------


def docs_text() -> str:
    """docs/flows-diagrams.md as generated from the shipped flows."""
    parts = [DOC_HEAD]
    for path in FLOWS:
        graph = build_graph(load_flow(path))
        parts.append(f"## {graph.title}\n\n`flows/{path.name}`: {graph.description}\n\n"
                     f"![{graph.title}](img/{path.stem}.svg)\n\n```mermaid\n{to_mermaid(graph)}```\n")
    parts.append("## main_menu with its subflow expanded\n\n`ivr graph flows/main_menu.yaml --expand "
                 "-o main_menu-expanded.svg`\n\n![main_menu expanded](img/main_menu-expanded.svg)\n")
    return "\n".join(parts)


DOC_HEAD = """# Flow diagrams

`ivr graph FLOW -o OUT` draws a YAML flow. The suffix of OUT picks the format: `.md` (Markdown
with a Mermaid block, rendered by GitHub), `.mmd` (bare Mermaid), `.dot` (Graphviz text),
`.svg` and `.png` (need Graphviz: `apt-get install graphviz`). Without `-o` the Mermaid text
goes to stdout. `--expand` draws YAML subflows inside the diagram, in a box of their own.

    ivr graph flows/main_menu.yaml -o main_menu.svg
    ivr graph flows/main_menu.yaml -o main_menu.md
    ivr graph flows/main_menu.yaml --expand -o main_menu.png

How to read a diagram:

- green boxes are entry points: `start`, and `on error` / `on hangup` when the flow has them;
- grey rounded boxes end the flow: `hangup`, `return`, `end` (ran off the end of a list) and
  `transferred` (an answered transfer with no `on_answered` steps: the call left the IVR);
- yellow hexagons branch; each edge is labelled with its outcome: a menu key, `no input`,
  `no match`, `answered` / `busy` / `no answer` / `failed`, `open` / `closed`, `then` /
  `else`, a switch case or `default`, `ok` / `failure`. Outcomes that share a target share an
  edge (`busy / no answer / failed`). An outcome without steps continues with the next step;
- `goto` steps are arrow-shaped, with a dashed edge to their target; a step with `when:` has
  a dashed `skipped` edge; an `http` step without `on_failure` has a dashed `failure` edge to
  `on error`;
- subflows are double-bordered boxes; expanded, a dashed `runs` edge enters the subflow and
  dashed `back` edges return from its `return` steps and its end;
- a step marked `(unreachable)` can never run: nothing leads to it (here, every outcome of the
  menu or transfer before it jumps elsewhere). It is drawn under the step written before it.

The sections below are generated from `flows/*.yaml` (`python -m tests.test_flow_graph`
rewrites this page and `docs/img/`; a test fails when the page is out of date).
"""


def test_docs_page_is_up_to_date() -> None:
    assert DOC.exists(), "docs/flows-diagrams.md is missing: run python -m tests.test_flow_graph"
    assert DOC.read_text(encoding="utf-8") == docs_text(), \
        "docs/flows-diagrams.md is stale: run python -m tests.test_flow_graph"
    for block in re.findall(r"```mermaid\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        parse_mermaid(block)
    for path in FLOWS:
        assert (ROOT / "docs" / "img" / f"{path.stem}.svg").exists()


def write_docs() -> None:
    """Regenerate docs/flows-diagrams.md and the SVGs it shows (needs Graphviz)."""
    img = ROOT / "docs" / "img"
    img.mkdir(parents=True, exist_ok=True)
    for path in FLOWS:
        graph = build_graph(load_flow(path))
        (img / f"{path.stem}.svg").write_bytes(render_dot(to_dot(graph), "svg"))
    main = build_graph(load_flow(ROOT / "flows" / "main_menu.yaml"), expand=True)
    (img / "main_menu-expanded.svg").write_bytes(render_dot(to_dot(main), "svg"))
    DOC.write_text(docs_text(), encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)} and {len(FLOWS) + 1} SVGs in {img.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    write_docs()
