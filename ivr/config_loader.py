"""Read ``ivr.yaml``: YAML with positions, validated into :class:`~ivr.config.WorkerConfig`.

Every problem becomes ``file:line:col: error: message`` (one line each) inside a
:class:`~ivr.config.ConfigError`, never a traceback. Position tracking is shared with the
flow loader, so both kinds of file report errors the same way.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from ivr.config import ConfigError, WorkerConfig
from ivr.flow.diagnostics import Diagnostic
from ivr.flow.loader import _convert, _Invalid, _Limits, validation_diagnostics


def load_config(path: str | Path) -> WorkerConfig:
    file = str(path)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found (pass --config PATH)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read the config file: {exc}") from None
    return parse_config(text, file, base_dir=p.resolve().parent)


def parse_config(text: str, file: str = "<config>", *, base_dir: Path | None = None) -> WorkerConfig:
    try:
        root = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(_line(file, line, col, f"YAML: {problem}")) from None
    except RecursionError:  # ruamel recurses per nesting level
        raise ConfigError(_line(file, 1, 1, "YAML: nested too deeply")) from None
    if not isinstance(root, CommentedMap):
        raise ConfigError(_line(file, 1, 1, "the config is a mapping with 'pbx' and 'routes'"))
    try:
        data, src = _convert(root, 0, 0, 0, _Limits(), set())
    except _Invalid as exc:
        raise ConfigError(_line(file, exc.line, exc.col, exc.message)) from None
    try:
        config = WorkerConfig.model_validate(data)
    except ValidationError as exc:
        lines = [d.format() for d in validation_diagnostics(exc, src, {}, file)]
        raise ConfigError("\n".join(lines)) from None
    config.base_dir = base_dir or Path(".")
    problems = []
    for i, route in enumerate(config.routes):
        flow = config.path(route.flow)
        if not flow.exists():
            line, col = src.at("routes", i, "flow").line, src.at("routes", i, "flow").col
            problems.append(_line(file, line, col, f"flow file {route.flow} not found (looked at {flow})"))
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def _line(file: str, line: int, col: int, message: str) -> str:
    return Diagnostic(file, line, col, "error", message).format()
