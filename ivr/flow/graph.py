"""Flow diagrams: a validated :class:`~ivr.flow.schema.Flow` -> a graph -> Mermaid or DOT text.

:func:`build_graph` turns the step tree into a :class:`FlowGraph` of nodes and labelled edges
that mirrors how the interpreter runs it: a branch list ends by falling through to the step
after the branching step; an outcome with no steps of its own (a missing ``on_no_input``, an
``hours`` step with no ``open``) goes straight there; ``goto`` is a dashed edge to its target;
``hangup``, ``return``, end of a section and an answered transfer with no ``on_answered`` are
terminals. ``on_error`` and ``on_hangup`` are entry points of their own. What each branching
step's outcomes are, and what one without a written branch does, is the step model's own
declaration (:meth:`~ivr.flow.schema.StepBase.outcomes`), the one the interpreter follows.

:func:`to_mermaid` and :func:`to_dot` are pure text; :func:`render_dot` pipes DOT through
Graphviz's ``dot`` binary for SVG or PNG (:class:`GraphvizMissing` when it is not installed).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from .schema import Flow, Outcome, StepBase

__all__ = [
    "Cluster",
    "Edge",
    "FlowGraph",
    "GraphError",
    "GraphNode",
    "GraphvizMissing",
    "build_graph",
    "render_dot",
    "to_dot",
    "to_mermaid",
    "to_mermaid_markdown",
]

NodeKind = Literal["entry", "step", "decision", "subflow", "goto", "terminal"]
#: "invisible" edges only hold a never-reached step in place under the step before it.
EdgeStyle = Literal["solid", "dashed", "invisible"]

#: Longest text shown for one argument in a node label; longer text is cut with an ellipsis.
MAX_LABEL = 42
#: Subflows nested deeper than this are drawn but not expanded (a guard, not a limit authors hit).
MAX_EXPAND_DEPTH = 8
#: Seconds Graphviz may take for one diagram (a flow diagram takes milliseconds).
DOT_TIMEOUT = 30.0


class GraphError(Exception):
    """A flow cannot be drawn (a goto to a missing id in a flow built in code, a bad subflow)."""


class GraphvizMissing(GraphError):
    """The Graphviz ``dot`` binary is not on PATH."""


@dataclass
class GraphNode:
    """One box: ``lines`` of label text (no markup) and a ``kind`` that picks its shape."""

    id: str
    lines: list[str]
    kind: NodeKind = "step"
    reachable: bool = True


@dataclass
class Edge:
    """``src -> dst``; ``label`` names the outcome ("1", "no input", "busy"), "" for plain sequence."""

    src: str
    dst: str
    label: str = ""
    style: EdgeStyle = "solid"


@dataclass
class Cluster:
    """A group of nodes drawn in a box: an expanded subflow (clusters nest)."""

    id: str
    title: str
    nodes: list[str] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)


@dataclass
class FlowGraph:
    """Nodes (in creation order), edges, and the clusters some nodes belong to."""

    title: str
    nodes: dict[str, GraphNode] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    description: str = ""

    def node_cluster(self) -> dict[str, str]:
        """Node id -> id of the innermost cluster holding it (top-level nodes are absent)."""
        out: dict[str, str] = {}

        def visit(c: Cluster) -> None:
            for n in c.nodes:
                out[n] = c.id
            for inner in c.clusters:
                visit(inner)

        for c in self.clusters:
            visit(c)
        return out


# --- labels -----------------------------------------------------------------------------------


def _short(value: Any, limit: int = MAX_LABEL) -> str:
    text = " ".join(str(value).split())  # newlines and runs of spaces -> one space
    return text if len(text) <= limit else text[: limit - 1] + "…"


def step_lines(step: StepBase) -> list[str]:
    """Label lines of a step: ``type argument``, then ``id: x`` and ``when: cond`` if set."""
    lines = [_short(step.label())]
    if step.id:
        lines.append(f"id: {step.id}")
    if step.when is not None:
        lines.append(_short(f"when: {step.when.source}"))
    return lines


# --- model -> graph ---------------------------------------------------------------------------

Target = Callable[[], str]


class _Builder:
    def __init__(self, title: str, expand: bool) -> None:
        self.graph = FlowGraph(title)
        self.expand = expand
        self._count = 0

    def new_id(self, prefix: str = "n") -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def node(self, lines: list[str], kind: NodeKind, cluster: Cluster | None) -> str:
        nid = self.new_id()
        self.graph.nodes[nid] = GraphNode(nid, lines, kind)
        if cluster is not None:
            cluster.nodes.append(nid)
        return nid

    def edge(self, src: str, dst: str, label: str = "", style: EdgeStyle = "solid") -> None:
        # Outcomes that go to the same place share one edge: "busy / no answer".
        for e in self.graph.edges:
            if e.src == src and e.dst == dst and e.style == style:
                if label and label not in e.label.split(" / "):
                    e.label = f"{e.label} / {label}" if e.label else label
                return
        self.graph.edges.append(Edge(src, dst, label, style))


class _FlowBuilder:
    """Draws one flow (the top one or an expanded subflow) into the shared builder."""

    def __init__(self, b: _Builder, flow: Flow, cluster: Cluster | None, chain: tuple[Path, ...]) -> None:
        self.b, self.flow, self.cluster, self.chain = b, flow, cluster, chain
        self.ids: dict[int, str] = {}  # id(step) -> node id
        self.prev: dict[str, str] = {}  # node id -> node of the step before it in its list
        self.entries: dict[str, str] = {}  # section -> entry node id
        self.exits: list[str] = []  # terminals that hand control back to a calling flow
        self._terminals: dict[tuple[str, str], str] = {}

    def terminal(self, section: str, label: str) -> str:
        """One shared terminal node per section and label ("end", "transferred", "error")."""
        key = (section, label)
        if key not in self._terminals:
            self._terminals[key] = self.b.node([label], "terminal", self.cluster)
            if section != "on_hangup" and label == "end":
                self.exits.append(self._terminals[key])
        return self._terminals[key]

    def build(self) -> None:
        # Nodes first (file order, so the diagram reads like the file), then edges.
        names = {"steps": "start", "on_error": "on error", "on_hangup": "on hangup"}
        for section, steps in self.flow.sections():
            if steps:
                self.entries[section] = self.b.node([names[section]], "entry", self.cluster)
                self._nodes(steps)
        for section, steps in self.flow.sections():
            if steps:
                self.b.edge(self.entries[section], self.ids[id(steps[0])])
                self._edges(section, steps, partial(self.terminal, section, "end"))
        self._mark_unreachable()

    def _node_id(self, step: StepBase) -> str:
        return self.ids[id(step)]

    def _mark_unreachable(self) -> None:
        # A step nothing leads to (after a menu whose every choice jumps away) would float to
        # the top of the layout; say so, and keep it under the step written before it.
        reached = {e.dst for e in self.b.graph.edges if e.style != "invisible"}
        for nid, before in self.prev.items():
            if nid not in reached:
                node = self.b.graph.nodes[nid]
                node.lines.append("(unreachable)")
                node.reachable = False
                self.b.edge(before, nid, style="invisible")

    def _nodes(self, steps: list[StepBase]) -> None:
        before = None
        for step in steps:
            kind: NodeKind = ("goto" if step.kind == "goto" else "terminal" if step.ends_list else
                              "decision" if step.outcomes() else "subflow" if step.kind == "subflow" else "step")
            nid = self.ids[id(step)] = self.b.node(step_lines(step), kind, self.cluster)
            if before is not None:
                self.prev[nid] = before
            before = nid
            for _, branch in step.branches():
                self._nodes(branch)

    def _edges(self, section: str, steps: list[StepBase], cont: Target) -> None:
        for i, step in enumerate(steps):
            nid = self.ids[id(step)]
            nxt: Target = partial(self._node_id, steps[i + 1]) if i + 1 < len(steps) else cont
            if step.when is not None:
                self.b.edge(nid, nxt(), "skipped", "dashed")  # the condition was false
            self._step_edges(section, step, nid, nxt)

    def _step_edges(self, section: str, step: StepBase, nid: str, nxt: Target) -> None:
        kind = step.kind
        if kind == "hangup":
            return
        if kind == "return":
            if section != "on_hangup":
                self.exits.append(nid)
            return
        if kind == "goto":
            self.b.edge(nid, self._goto_target(step.action), style="dashed")
            return
        outcomes = step.outcomes()
        if outcomes:
            self._outcome_edges(section, step, outcomes, nid, nxt)
            return
        self.b.edge(nid, nxt())
        if kind == "subflow" and self.b.expand:
            self._expand(step, nid, nxt)

    def _outcome_edges(self, section: str, step: StepBase, outcomes: list[Outcome], nid: str, nxt: Target) -> None:
        # What each outcome does is the model's declaration (Outcome), as the interpreter reads it.
        collapsed = False
        for o in outcomes:
            if o.steps:
                self.b.edge(nid, self.ids[id(o.steps[0])], o.label)
                self._edges(section, o.steps, nxt)
            elif o.carries_on:  # no steps: on with the next step
                if step.unwritten_label is not None and not o.written:
                    collapsed = True
                else:
                    self.b.edge(nid, nxt(), o.label)
            elif o.unwritten in ("transferred", "hangup"):  # the call has left the IVR
                self.b.edge(nid, self.terminal(section, o.unwritten), o.label)
            elif self.flow.on_error and section != "on_error":  # the step fails: on_error runs
                self.b.edge(nid, self.entries["on_error"], o.label, "dashed")
            else:
                self.b.edge(nid, self.terminal(section, "error"), o.label)
        if collapsed and step.unwritten_label is not None:
            self.b.edge(nid, nxt(), step.unwritten_label)

    def _goto_target(self, target: str) -> str:
        found = self.flow.find(target)
        if found is None:
            where = self.flow.path or self.flow.name or "flow"
            raise GraphError(f"{where}: goto target {target!r} not found")
        return self.ids[id(found)]

    def _expand(self, step: StepBase, nid: str, nxt: Target) -> None:
        from .loader import load_flow

        path = (self.flow.folder / step.action.file).resolve()
        if path.suffix not in (".yaml", ".yml") or path in self.chain or len(self.chain) > MAX_EXPAND_DEPTH:
            return  # a Python flow has no steps to draw; a recursive subflow is drawn once
        sub = load_flow(path, check_files=False)  # FlowLoadError (file:line:col lines) propagates to the caller
        cluster = Cluster(self.b.new_id("c"), f"subflow {step.action.file}")
        (self.cluster.clusters if self.cluster else self.b.graph.clusters).append(cluster)
        inner = _FlowBuilder(self.b, sub, cluster, (*self.chain, path))
        inner.build()
        self.b.edge(nid, inner.entries["steps"], "runs", "dashed")
        for exit_id in inner.exits:
            self.b.edge(exit_id, nxt(), "back", "dashed")


def build_graph(flow: Flow, *, expand: bool = False) -> FlowGraph:
    """The diagram of ``flow``; with ``expand`` each YAML subflow is drawn inside a cluster.

    Raises :class:`GraphError` for a goto to a missing id (only possible for a flow built in
    code) and, when expanding, :class:`~ivr.flow.FlowLoadError` for an invalid subflow."""
    title = flow.name or (flow.path.stem if flow.path else "flow")
    b = _Builder(title, expand)
    b.graph.description = " ".join((flow.description or "").split())
    chain = (flow.path.resolve(),) if flow.path else ()
    _FlowBuilder(b, flow, None, chain).build()
    return b.graph


# --- Mermaid ------------------------------------------------------------------------------------

# Mermaid reads entity codes (#quot; #35;) inside quoted labels; '#' itself starts one, so it
# is escaped first. '<' '>' '&' would be read as HTML by the default HTML labels.
_MERMAID_ESCAPES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;", "`": "#96;"}
_MERMAID_SHAPES = {
    "entry": ('(["', '"])'), "terminal": ('(["', '"])'), "step": ('["', '"]'),
    "decision": ('{{"', '"}}'), "subflow": ('[["', '"]]'), "goto": ('>"', '"]'),
}
_STYLE = {  # (fill, stroke) shared by Mermaid classDefs and DOT
    "entry": ("#d9f2d9", "#2e7d32"), "terminal": ("#eeeeee", "#424242"), "step": ("#ffffff", "#455a64"),
    "decision": ("#fff4d6", "#b7791f"), "subflow": ("#e3ecfb", "#1e4fa3"), "goto": ("#f5f5f5", "#757575"),
}


def mermaid_escape(text: str) -> str:
    """Text made safe inside a double-quoted Mermaid label."""
    return "".join(_MERMAID_ESCAPES.get(ch, ch) for ch in text)


def to_mermaid(graph: FlowGraph) -> str:
    """Mermaid ``flowchart TD`` text of ``graph`` (node ids n1.., clusters c1..)."""
    out = ["flowchart TD"]

    def node_line(nid: str, indent: str) -> str:
        n = graph.nodes[nid]
        left, right = _MERMAID_SHAPES[n.kind]
        label = "<br/>".join(mermaid_escape(line) for line in n.lines)
        return f"{indent}{nid}{left}{label}{right}:::{n.kind}"

    def cluster(c: Cluster, indent: str) -> None:
        out.append(f'{indent}subgraph {c.id}["{mermaid_escape(c.title)}"]')
        for nid in c.nodes:
            out.append(node_line(nid, indent + "  "))
        for inner in c.clusters:
            cluster(inner, indent + "  ")
        out.append(f"{indent}end")

    in_cluster = graph.node_cluster()
    for nid in graph.nodes:
        if nid not in in_cluster:
            out.append(node_line(nid, "  "))
    for c in graph.clusters:
        cluster(c, "  ")
    for e in graph.edges:
        arrow = {"dashed": "-.->", "invisible": "~~~"}.get(e.style, "-->")
        label = f'|"{mermaid_escape(e.label)}"|' if e.label and e.style != "invisible" else ""
        out.append(f"  {e.src} {arrow}{label} {e.dst}")
    for kind, (fill, stroke) in _STYLE.items():
        out.append(f"  classDef {kind} fill:{fill},stroke:{stroke},color:#111")
    dead = [n.id for n in graph.nodes.values() if not n.reachable]
    if dead:  # greyed out: it can never run
        out.append("  classDef unreachable stroke-dasharray:4 3,color:#9e9e9e")
        out.append(f"  class {','.join(dead)} unreachable")
    return "\n".join(out) + "\n"


def to_mermaid_markdown(graph: FlowGraph) -> str:
    """A Markdown page: the flow's name and description, then a fenced ``mermaid`` block
    (GitHub and most editors render it)."""
    head = f"# {graph.title}\n\n" + (f"{graph.description}\n\n" if graph.description else "")
    return f"{head}```mermaid\n{to_mermaid(graph)}```\n"


# --- Graphviz -----------------------------------------------------------------------------------

_DOT_SHAPES = {
    "entry": 'shape=box, style="rounded,filled,bold"', "terminal": 'shape=box, style="rounded,filled"',
    "step": 'shape=box, style="filled"', "decision": 'shape=hexagon, style="filled"',
    "subflow": 'shape=box, style="filled", peripheries=2', "goto": 'shape=cds, style="filled"',
}


def dot_escape(text: str) -> str:
    """Text made safe inside a double-quoted DOT string (backslash escapes like \\N stay literal)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(graph: FlowGraph) -> str:
    """Graphviz DOT text of ``graph``; pipe it through ``dot -Tsvg``."""
    out = [
        "digraph flow {",
        f'  graph [rankdir=TB, fontname="Helvetica", fontsize=14, labelloc=t, '
        f'label="{dot_escape(graph.title)}", nodesep=0.35, ranksep=0.45];',
        '  node [fontname="Helvetica", fontsize=11, margin="0.15,0.06"];',
        '  edge [fontname="Helvetica", fontsize=10, color="#455a64"];',
    ]

    def node_line(nid: str, indent: str) -> str:
        n = graph.nodes[nid]
        fill, stroke = _STYLE[n.kind]
        label = "\\n".join(dot_escape(line) for line in n.lines)
        shape = _DOT_SHAPES[n.kind]
        if not n.reachable:  # greyed out: it can never run
            shape = shape.replace('filled"', 'filled,dashed", fontcolor="#9e9e9e"')
        return f'{indent}{nid} [label="{label}", {shape}, fillcolor="{fill}", color="{stroke}"];'

    def cluster(c: Cluster, indent: str) -> None:
        out.append(f"{indent}subgraph cluster_{c.id} {{")
        out.append(f'{indent}  label="{dot_escape(c.title)}"; style="dashed,rounded"; color="#1e4fa3";')
        for nid in c.nodes:
            out.append(node_line(nid, indent + "  "))
        for inner in c.clusters:
            cluster(inner, indent + "  ")
        out.append(f"{indent}}}")

    in_cluster = graph.node_cluster()
    for nid in graph.nodes:
        if nid not in in_cluster:
            out.append(node_line(nid, "  "))
    for c in graph.clusters:
        cluster(c, "  ")
    for e in graph.edges:
        attrs = []
        if e.label:
            attrs.append(f'label="{dot_escape(e.label)}"')
        if e.style == "dashed":
            attrs.append('style=dashed, color="#757575"')
        elif e.style == "invisible":
            attrs.append("style=invis")
        out.append(f"  {e.src} -> {e.dst}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    out.append("}")
    return "\n".join(out) + "\n"


def render_dot(dot_text: str, fmt: Literal["svg", "png"], *, dpi: int = 110) -> bytes:
    """Run Graphviz ``dot`` on ``dot_text``; the SVG or PNG bytes.

    Raises :class:`GraphvizMissing` when ``dot`` is not installed and :class:`GraphError`
    when it fails (with the first line of its message)."""
    if fmt not in ("svg", "png"):
        raise ValueError(f"render_dot: format must be 'svg' or 'png', not {fmt!r}")
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing(
            "Graphviz 'dot' not found on PATH: install the graphviz package "
            "(apt-get install graphviz, brew install graphviz) or write Mermaid with -o flow.md")
    args = [exe, f"-T{fmt}"] + ([f"-Gdpi={dpi}"] if fmt == "png" else [])
    try:
        proc = subprocess.run(args, input=dot_text.encode("utf-8"), capture_output=True,
                              timeout=DOT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise GraphError(f"Graphviz dot took more than {DOT_TIMEOUT:g} s") from None
    except OSError as exc:
        raise GraphError(f"cannot run Graphviz dot ({exe}): {exc.strerror or exc}") from None
    if proc.returncode != 0 or not proc.stdout:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GraphError(f"Graphviz dot failed (exit {proc.returncode}): {message[0] if message else 'no output'}")
    return proc.stdout
