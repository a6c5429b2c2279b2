"""``ivr graph FLOW [-o OUT] [--expand]``: draw a flow.

The output type follows the suffix of OUT: ``.md`` (Markdown with a Mermaid block),
``.mmd`` (bare Mermaid), ``.dot``/``.gv`` (Graphviz text), ``.svg`` and ``.png`` (need
Graphviz's ``dot``). Without ``-o`` the Mermaid text goes to stdout. An invalid flow prints
its ``file:line:col: error: ...`` lines; every failure is one line on stderr and exit 1
(2 for bad usage), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["OUTPUT_TYPES", "graph_main", "render_graph"]

#: Output suffix -> format name.
OUTPUT_TYPES = {".md": "markdown", ".mmd": "mermaid", ".mermaid": "mermaid", ".dot": "dot", ".gv": "dot",
                ".svg": "svg", ".png": "png"}


def render_graph(flow_path: str | Path, fmt: str, *, expand: bool = False) -> bytes:
    """Load the YAML flow at ``flow_path`` and draw it as ``fmt`` (a value of OUTPUT_TYPES).

    Raises FlowLoadError (invalid flow or subflow), GraphError / GraphvizMissing."""
    from . import load_flow
    from .graph import build_graph, render_dot, to_dot, to_mermaid, to_mermaid_markdown

    # Drawing needs no audio files: a flow is often drawn before its prompts are recorded.
    graph = build_graph(load_flow(flow_path, check_files=False), expand=expand)
    if fmt == "markdown":
        return to_mermaid_markdown(graph).encode()
    if fmt == "mermaid":
        return to_mermaid(graph).encode()
    dot = to_dot(graph)
    if fmt == "dot":
        return dot.encode()
    return render_dot(dot, fmt)  # type: ignore[arg-type]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ivr graph", description="Draw a YAML flow as a diagram (Mermaid, DOT, SVG or PNG).",
        epilog="SVG and PNG need Graphviz (apt-get install graphviz); .md and .mmd need nothing.")
    p.add_argument("flow", metavar="FLOW", help="a YAML flow file")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file: .md, .mmd, .dot, .svg or .png (default: Mermaid on stdout)")
    p.add_argument("--expand", action="store_true", help="draw YAML subflows inside the diagram")
    return p


def graph_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ivr graph``; returns the exit status (0 ok, 1 failure, 2 usage)."""
    from .diagnostics import FlowLoadError
    from .graph import GraphError

    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse printed the usage message
        return int(exc.code or 0)
    fmt = "mermaid"
    if args.output:
        suffix = Path(args.output).suffix.lower()
        if suffix not in OUTPUT_TYPES:
            known = ", ".join(sorted(set(OUTPUT_TYPES) - {".mermaid", ".gv"}))
            print(f"ivr graph: {args.output}: unknown output type {suffix or '(no suffix)'!r}; use one of {known}",
                  file=sys.stderr)
            return 2
        fmt = OUTPUT_TYPES[suffix]
    if Path(args.flow).suffix == ".py":
        print(f"ivr graph: {args.flow}: Python flows have no steps to draw; only YAML flows can be drawn",
              file=sys.stderr)
        return 1
    try:
        data = render_graph(args.flow, fmt, expand=args.expand)
    except FlowLoadError as exc:
        print(str(exc), file=sys.stderr)  # one file:line:col: error: line per problem
        return 1
    except GraphError as exc:
        print(f"ivr graph: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        print(f"ivr graph: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not args.output:
        sys.stdout.write(data.decode())
        return 0
    try:
        Path(args.output).write_bytes(data)
    except OSError as exc:
        print(f"ivr graph: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # python -m ivr.flow.graph_cli FLOW -o flow.svg
    sys.exit(graph_main())
