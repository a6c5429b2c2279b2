"""The live view's flow diagram: a YAML flow drawn as inline SVG, no Graphviz, no script.

:func:`flow_diagram` draws :func:`ivr.flow.graph.build_graph`'s nodes and edges with a small
layered layout (the page may not load anything from the internet, and Graphviz is an
optional tool) and says which node each step is, by file and line, so the page can light
the step running now and the path the call took. Every node is ``<g class="node"
data-node="n3">`` and every edge ``<g class="edge" data-src="n1" data-dst="n3">``; the page
only toggles classes on them.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from ivr.flow.checks import walk_nodes
from ivr.flow.graph import Edge, FlowGraph, GraphNode, build_graph, step_lines
from ivr.flow.loader import load_flow
from ivr.flow.schema import Flow, StepBase

__all__ = ["Diagram", "flow_diagram", "layout_svg", "step_label"]

log = logging.getLogger("ivr.dev")

# Layout, in SVG px.
CHAR_W = 6.6  # average width of a character of the 11 px label font
LINE_H = 15
PAD_X, PAD_Y = 10, 7
GAP_X, GAP_Y = 26, 44
MARGIN = 16
BACK_LANE = 18  # how far right of its nodes an edge going back up runs

# Enough to read the drawing on its own; the page's stylesheet adds the live states
# (.current, .visited, .taken).
_SVG_STYLE = (
    ".node text{font:11px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;fill:#1d232a}"
    ".node rect{stroke-width:1.2}.node.unreachable rect{stroke-dasharray:3 2;opacity:.7}"
    ".edge path{stroke:#90a4ae;stroke-width:1.3}.edge.dashed path{stroke-dasharray:5 3}"
    ".arrowhead{fill:#90a4ae}.edge-label-bg{fill:#fff;opacity:.85}"
    ".edge-label{font:10px system-ui,sans-serif;fill:#546e7a}"
)

_FILL = {  # kind -> (fill, stroke), as the Mermaid/DOT diagrams colour them
    "entry": ("#d9f2d9", "#2e7d32"), "terminal": ("#eeeeee", "#424242"), "step": ("#ffffff", "#455a64"),
    "decision": ("#fff4d6", "#b7791f"), "subflow": ("#e3ecfb", "#1e4fa3"), "goto": ("#f5f5f5", "#757575"),
}


@dataclass
class Diagram:
    """One flow's drawing and where its steps are in it."""

    flow: str  # the flow file, resolved
    svg: str
    # (file, line, label) -> node id; the label tells apart steps written on one line
    # (``on_busy: [{play: busy.wav}, {goto: voicemail}]``)
    node_at: dict[tuple[str, int, str], str] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)  # drawn edges, (src, dst)

    def node_for(self, file: str, line: int, label: str) -> str | None:
        """The node of the step at ``file:line`` labelled ``label`` (:func:`step_label`), else None."""
        return self.node_at.get((_resolved(file), line, label))


def step_label(step: StepBase) -> str:
    """What a step's node says first (``goto voicemail``)."""
    return step_lines(step)[0]


def _resolved(file: str | Path) -> str:
    try:
        return str(Path(file).resolve())
    except (OSError, RuntimeError):
        return str(file)


def flow_diagram(path: str | Path) -> Diagram | None:
    """The diagram of the YAML flow at ``path``; None for a Python flow or a file that does not
    load (the page then shows the steps without a drawing)."""
    p = Path(path)
    if p.suffix not in (".yaml", ".yml"):
        return None
    try:
        flow = load_flow(p, check_files=False)
        graph = build_graph(flow)
    except Exception as exc:  # noqa: BLE001 - a drawing must never break the live view
        log.debug("no diagram for %s: %s", p, exc)
        return None
    diagram = Diagram(_resolved(p), layout_svg(graph))
    diagram.node_at = _step_nodes(flow, graph, diagram.flow)
    diagram.edges = [(e.src, e.dst) for e in graph.edges if e.style != "invisible"]
    return diagram


def _step_nodes(flow: Flow, graph: FlowGraph, file: str) -> dict[tuple[str, int, str], str]:
    """(file, line, label) of each step -> its node. build_graph makes, per section, an entry node
    and then one node per step depth first in file order (Flow.walk's order); the labels are
    checked, so a different builder gives no mapping (nothing lit) rather than a wrong one."""
    lines: dict[int, int] = {}
    if flow._src is not None:
        for node, src, _, _ in walk_nodes(flow, flow._src):
            if isinstance(node, StepBase):
                lines.setdefault(id(node), src.line)
    step_nodes = [n for n in graph.nodes.values() if n.kind != "entry"]
    steps = [step for step, _ in flow.walk()]
    out: dict[tuple[str, int, str], str] = {}
    for step, node in zip(steps, step_nodes):
        if node.lines[: len(step_lines(step))] != step_lines(step):
            log.debug("diagram of %s: node %s is not step %s; steps not mapped", file, node.id, step.kind)
            return {}
        line = lines.get(id(step), 0)
        if line:
            out.setdefault((file, line, step_label(step)), node.id)
    return out


# --- layout -----------------------------------------------------------------------------------


@dataclass
class _Box:
    node: GraphNode
    index: int
    layer: int = 0
    x: float = 0.0  # left
    y: float = 0.0  # top
    w: float = 0.0
    h: float = 0.0

    @property
    def cx(self) -> float:
        return self.x + self.w / 2


def _back_edges(order: list[str], edges: list[Edge]) -> set[int]:
    """Edges that close a cycle (a goto back to a menu): found by a depth-first walk from each
    node in creation order; they are drawn going up and do not push layers down."""
    out_edges: dict[str, list[int]] = {n: [] for n in order}
    for i, e in enumerate(edges):
        out_edges[e.src].append(i)
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    back: set[int] = set()
    for root in order:
        if root in state:
            continue
        stack = [(root, iter(out_edges[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                continue
            dst = edges[nxt].dst
            if state.get(dst) == 1:
                back.add(nxt)
            elif dst not in state:
                state[dst] = 1
                stack.append((dst, iter(out_edges[dst])))
    return back


def _layers(order: list[str], edges: list[Edge], back: set[int]) -> dict[str, int]:
    """Longest path from the top over the forward edges: each node one row below all it comes from."""
    preds: dict[str, list[str]] = {n: [] for n in order}
    succs: dict[str, list[str]] = {n: [] for n in order}
    for i, e in enumerate(edges):
        if i not in back and e.src != e.dst:
            preds[e.dst].append(e.src)
            succs[e.src].append(e.dst)
    layer = {n: 0 for n in order}
    waiting = {n: len(preds[n]) for n in order}
    ready = [n for n in order if waiting[n] == 0]
    while ready:
        n = ready.pop(0)
        for m in succs[n]:
            layer[m] = max(layer[m], layer[n] + 1)
            waiting[m] -= 1
            if waiting[m] == 0:
                ready.append(m)
    return layer


def _order_rows(rows: list[list[_Box]], edges: list[Edge], back: set[int], boxes: dict[str, _Box]) -> None:
    """A few barycentre sweeps: each node moves towards the mean position of its neighbours
    in the row above (then below), which removes most crossings in flow-shaped graphs."""
    up: dict[str, list[str]] = {}
    down: dict[str, list[str]] = {}
    for i, e in enumerate(edges):
        if i in back or boxes[e.src].layer == boxes[e.dst].layer:
            continue
        up.setdefault(e.dst, []).append(e.src)
        down.setdefault(e.src, []).append(e.dst)
    pos = {b.node.id: i for row in rows for i, b in enumerate(row)}

    def barycentre(b: _Box, neighbours: dict[str, list[str]]) -> float:
        near = neighbours.get(b.node.id, [])
        return sum(pos[n] for n in near) / len(near) if near else pos[b.node.id]

    for sweep in range(4):
        neighbours, seq = (up, rows[1:]) if sweep % 2 == 0 else (down, rows[-2::-1])
        for row in seq:
            row.sort(key=functools.partial(barycentre, neighbours=neighbours))
            for i, b in enumerate(row):
                pos[b.node.id] = i


def layout_svg(graph: FlowGraph) -> str:
    """``graph`` as a standalone SVG document (top to bottom)."""
    order = list(graph.nodes)
    edges = [e for e in graph.edges if e.src in graph.nodes and e.dst in graph.nodes]
    back = _back_edges(order, edges)
    layer = _layers(order, edges, back)
    boxes: dict[str, _Box] = {}
    for i, nid in enumerate(order):
        node = graph.nodes[nid]
        width = max(len(line) for line in node.lines) * CHAR_W + 2 * PAD_X
        boxes[nid] = _Box(node, i, layer[nid], w=max(56.0, width), h=len(node.lines) * LINE_H + 2 * PAD_Y)
    rows: list[list[_Box]] = [[] for _ in range(max(layer.values(), default=0) + 1)]
    for b in boxes.values():
        rows[b.layer].append(b)
    _order_rows(rows, edges, back, boxes)

    # Rows top to bottom; in a row, each node as near the centre of what leads to it as fits.
    preds: dict[str, list[str]] = {}
    for i, e in enumerate(edges):
        if i not in back and boxes[e.src].layer < boxes[e.dst].layer:
            preds.setdefault(e.dst, []).append(e.src)
    y = float(MARGIN)
    for row in rows:
        right = float(MARGIN)
        for b in row:
            near = preds.get(b.node.id, [])
            want = sum(boxes[n].cx for n in near) / len(near) - b.w / 2 if near else right
            b.x = max(want, right)
            right = b.x + b.w + GAP_X
        height = max((b.h for b in row), default=0.0)
        for b in row:
            b.y = y + (height - b.h) / 2
        y += height + GAP_Y
    width = max((b.x + b.w for b in boxes.values()), default=0.0) + MARGIN + BACK_LANE * 4
    height = y - GAP_Y + MARGIN

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" class="flow-diagram" width="{width:.0f}" '
              f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
              f'aria-label="{escape(graph.title)}">'),
             f'<style>{_SVG_STYLE}</style>',
             ('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" '
              'markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
              '<path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>')]
    lanes: dict[str, int] = {}
    for i, e in enumerate(edges):
        if e.style == "invisible":
            continue
        parts.append(_edge_svg(e, boxes[e.src], boxes[e.dst], i in back or boxes[e.dst].layer <= boxes[e.src].layer,
                               lanes))
    for nid in order:
        parts.append(_node_svg(boxes[nid]))
    parts.append("</svg>")
    return "\n".join(parts)


def _node_svg(b: _Box) -> str:
    node = b.node
    fill, stroke = _FILL.get(node.kind, _FILL["step"])
    rx = b.h / 2 if node.kind in ("entry", "terminal") else 4
    classes = f"node kind-{node.kind}" + ("" if node.reachable else " unreachable")
    text = "".join(
        f'<tspan x="{b.cx:.1f}" dy="{LINE_H if i else 0}">{escape(line)}</tspan>' for i, line in enumerate(node.lines))
    first_baseline = b.y + PAD_Y + LINE_H - 4
    return (f'<g class="{classes}" data-node="{node.id}"><title>{escape(" / ".join(node.lines))}</title>'
            f'<rect x="{b.x:.1f}" y="{b.y:.1f}" width="{b.w:.1f}" height="{b.h:.1f}" rx="{rx:.1f}" '
            f'fill="{fill}" stroke="{stroke}"/>'
            f'<text x="{b.cx:.1f}" y="{first_baseline:.1f}" text-anchor="middle">{text}</text></g>')


def _edge_svg(e: Edge, src: _Box, dst: _Box, upward: bool, lanes: dict[str, int]) -> str:
    if upward:  # back up (a goto, a retry): out of the right side, along a lane, into the right side
        lane = lanes[dst.node.id] = lanes.get(dst.node.id, 0) + 1
        x_out = max(src.x + src.w, dst.x + dst.w) + BACK_LANE * lane
        sx, sy = src.x + src.w, src.y + src.h / 2
        tx, ty = dst.x + dst.w, dst.y + dst.h / 2
        d = f"M{sx:.1f},{sy:.1f} C{x_out:.1f},{sy:.1f} {x_out:.1f},{ty:.1f} {tx:.1f},{ty:.1f}"
        lx, ly = x_out - 2, (sy + ty) / 2
    else:
        sx, sy = src.cx, src.y + src.h
        tx, ty = dst.cx, dst.y
        bend = max(18.0, (ty - sy) / 2)
        d = f"M{sx:.1f},{sy:.1f} C{sx:.1f},{sy + bend:.1f} {tx:.1f},{ty - bend:.1f} {tx:.1f},{ty:.1f}"
        lx, ly = (sx + tx) / 2, (sy + ty) / 2 + 4
    classes = "edge" + (" dashed" if e.style == "dashed" else "")
    label = ""
    if e.label:
        w = len(e.label) * 6.0 + 6
        label = (f'<rect class="edge-label-bg" x="{lx - w / 2:.1f}" y="{ly - 10:.1f}" width="{w:.1f}" height="13" rx="3"/>'
                 f'<text class="edge-label" x="{lx:.1f}" y="{ly:.1f}" text-anchor="middle">{escape(e.label)}</text>')
    return (f'<g class="{classes}" data-src="{e.src}" data-dst="{e.dst}"><path d="{d}" fill="none" '
            f'marker-end="url(#arrow)"/>{label}</g>')
