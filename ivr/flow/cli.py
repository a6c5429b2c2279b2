"""``ivr schema``: the flow JSON Schema (``ivr validate`` is :mod:`ivr.validate`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["schema_main", "schema_text"]


def schema_text() -> str:
    """The flow JSON Schema as the text shipped in ``ivr/flow/flow.schema.json``."""
    from .schema import flow_json_schema

    return json.dumps(flow_json_schema(), indent=2, sort_keys=False) + "\n"


def schema_main(argv: Sequence[str] | None = None) -> int:
    """Print the JSON Schema of flow files (``ivr schema > flow.schema.json``)."""
    parser = argparse.ArgumentParser(prog="ivr schema", description="Print the flow file JSON Schema.")
    parser.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    text = schema_text()
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"ivr schema: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0

