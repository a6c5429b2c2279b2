"""``ivr validate FILE...`` and ``ivr schema``.

``validate_main`` prints one ``file:line:col: severity: message`` line per problem and exits 1
if any is an error (0 otherwise). It never shows a traceback: unreadable, binary, huge or
deeply nested input is reported like any other problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["schema_main", "schema_text", "validate_main"]


def validate_main(argv: Sequence[str] | None = None) -> int:
    """Check flow files; exit status 1 on any error, 0 otherwise (2 for bad usage)."""
    parser = argparse.ArgumentParser(prog="ivr validate", description="Check flow files (YAML or Python).")
    parser.add_argument("paths", nargs="+", metavar="FILE", help="flow files or folders of flows")
    parser.add_argument("--no-file-checks", action="store_true",
                        help="do not check that audio and subflow files exist")
    parser.add_argument("--quiet", "-q", action="store_true", help="print errors only, no warnings or summary")
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse already printed the usage message
        return int(exc.code or 0)
    try:
        from .validate import validate_paths

        diagnostics = validate_paths(args.paths, check_files=not args.no_file_checks)
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        print(f"ivr validate: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    for d in diagnostics:
        if d.is_error or not args.quiet:
            print(d.format())
    if not args.quiet:
        summary = f"{errors} error(s), {warnings} warning(s)" if diagnostics else "ok"
        print(summary, file=sys.stderr)
    return 1 if errors else 0


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


if __name__ == "__main__":  # python -m ivr.flow.cli FILE...
    sys.exit(validate_main())
