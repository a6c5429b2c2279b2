"""``ivr validate FILE...``: ``validate_paths`` checks flow files (and worker configs) and the
subflows they call, collecting every problem.

Per file this is :func:`~ivr.flow.loader.load_flow` (YAML, schema, templates, ids, gotos,
files, reachability). Across files it adds what one file cannot know: subflow cycles and
subflow parameters the called flow does not declare. Nothing here raises for bad input:
every problem, even an unreadable path, is a :class:`Diagnostic`.

``validate_main`` prints one ``file:line:col: severity: message`` line per problem and exits 1
if any is an error (0 otherwise). It sits above ``ivr.config_loader`` (a config given to it
is checked with every flow it routes to), so it is not part of the flow package.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from ivr.config import ConfigError
from ivr.config_loader import load_config
from ivr.flow.checks import walk_nodes
from ivr.flow.diagnostics import Diagnostic, FlowLoadError
from ivr.flow.loader import load_flow
from ivr.flow.python_flow import load_python_flow
from ivr.flow.python_prompts import check_python_prompts
from ivr.flow.schema import Flow, SubflowStep

__all__ = ["FLOW_SUFFIXES", "Diagnostic", "expand_paths", "validate_main", "validate_paths"]

FLOW_SUFFIXES = (".yaml", ".yml", ".py")


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[Diagnostic]]:
    """Files to check: directories expand to the flow files under them (sorted)."""
    files: list[Path] = []
    problems: list[Diagnostic] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in FLOW_SUFFIXES and p.is_file()
                           and not any(part.startswith((".", "__")) for part in p.relative_to(path).parts))
            if not found:
                problems.append(Diagnostic(str(raw), 0, 0, "error", "no flow files (*.yaml, *.yml, *.py) in this directory"))
            files.extend(found)
        else:
            files.append(path)
    return files, problems


class _Validator:
    def __init__(self, check_files: bool) -> None:
        self.check_files = check_files
        self.flows: dict[Path, Flow | None] = {}
        self.names: dict[Path, str] = {}
        self.out: list[Diagnostic] = []

    def load(self, path: Path, name: str) -> Flow | None:
        key = path.resolve() if path.exists() else path.absolute()
        if key in self.flows:
            return self.flows[key]
        self.flows[key] = None  # placeholder: a cycle finds "loading", not a recursion
        self.names[key] = name
        flow: Flow | None = None
        try:
            if path.suffix not in FLOW_SUFFIXES and not path.is_dir():
                self.out.append(Diagnostic(name, 0, 0, "error",
                                           f"unknown flow type {path.suffix or '(no suffix)'!r}: use .yaml, .yml or .py"))
            elif path.suffix == ".py":
                load_python_flow(path)
                if self.check_files:
                    self.out.extend(check_python_prompts(path))
            elif _is_worker_config(path):
                self.load_config(path, name)
            else:
                flow = load_flow(path, check_files=self.check_files)
                self.out.extend(flow.diagnostics)
        except FlowLoadError as exc:
            self.out.extend(exc.diagnostics or [Diagnostic(name, 0, 0, "error", str(exc))])
        except RecursionError:
            self.out.append(Diagnostic(name, 1, 1, "error", "nested too deeply"))
        except Exception as exc:  # noqa: BLE001 - a validator reports, it never crashes
            self.out.append(Diagnostic(name, 0, 0, "error", f"cannot load: {type(exc).__name__}: {exc}"))
        self.flows[key] = flow
        return flow

    def load_config(self, path: Path, name: str) -> None:
        """A worker config (ivr.yaml) given to validate: check it, then every flow it routes to."""
        try:
            config = load_config(path)
        except ConfigError as exc:
            self.out.extend(_parse_diagnostic(line, name) for line in str(exc).splitlines())
            return
        for route in config.routes:
            flow_path = config.path(route.flow)
            self.load(flow_path, str(flow_path))

    def subflow_calls(self, flow: Flow) -> list[tuple[SubflowStep, Any, Path]]:
        calls = []
        for node, src, _, _ in walk_nodes(flow, flow._src):
            if isinstance(node, SubflowStep):
                calls.append((node, src, flow.folder / node.subflow.file))
        return calls

    def follow(self, path: Path, name: str, stack: list[Path]) -> None:
        """Load ``path`` and everything it calls; report cycles and unknown params."""
        flow = self.load(path, name)
        if flow is None:
            return
        me = path.resolve()
        stack.append(me)
        for step, src, target in self.subflow_calls(flow):
            if not target.is_file():
                continue  # already reported by the flow's own checks
            resolved = target.resolve()
            where = src.at("subflow", "file")
            if resolved in stack:
                chain = [*stack[stack.index(resolved):], resolved]
                names = " -> ".join(p.name for p in chain)
                self.out.append(Diagnostic(name, where.line, where.col, "error", f"subflow cycle: {names}"))
                continue
            already = resolved in self.flows
            if not already:
                self.follow(target, str(target), stack)
            callee = self.flows.get(resolved)
            if callee is not None:
                for param in step.subflow.params:
                    if param not in callee.params:
                        at = src.at("subflow", "params")
                        line, col = at.key_pos(param)
                        takes = ", ".join(callee.params) or "none"
                        self.out.append(Diagnostic(name, line, col, "error",
                                                   f"subflow {step.subflow.file!r} has no parameter {param!r} "
                                                   f"(it takes: {takes})"))
        stack.pop()


def validate_paths(paths: Iterable[str | Path], *, check_files: bool = True) -> list[Diagnostic]:
    """Every problem in the given flow files (directories are searched), errors and warnings,
    sorted by file and position. An empty list means all is well."""
    files, problems = expand_paths(paths)
    v = _Validator(check_files)
    v.out.extend(problems)
    for path in files:
        v.follow(path, str(path), [])
    unique = {(d.file, d.line, d.col, d.severity, d.message): d for d in v.out}
    return sorted(unique.values(), key=lambda d: (d.file, d.line, d.col, d.message))


_CONFIG_KEY = re.compile(r"^pbx\s*:", re.MULTILINE)
_DIAGNOSTIC = re.compile(r"^(?P<file>.*?):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning): (?P<msg>.*)$")


def _is_worker_config(path: Path) -> bool:
    """A YAML file with a top-level ``pbx:`` key is a worker config, not a flow."""
    if path.suffix not in (".yaml", ".yml"):
        return False
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:65536]
    except OSError:
        return False
    return bool(_CONFIG_KEY.search(head))


def _parse_diagnostic(line: str, name: str) -> Diagnostic:
    m = _DIAGNOSTIC.match(line)
    if m is None:
        return Diagnostic(name, 0, 0, "error", line.removeprefix(f"{name}: "))
    severity: Literal["error", "warning"] = "warning" if m["sev"] == "warning" else "error"
    return Diagnostic(m["file"], int(m["line"]), int(m["col"]), severity, m["msg"])


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


if __name__ == "__main__":  # python -m ivr.validate FILE...
    sys.exit(validate_main())
