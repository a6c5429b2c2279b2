"""Read ``ivr.yaml``: YAML with positions, validated into :class:`~ivr.config.WorkerConfig`.

Every problem becomes ``file:line:col: error: message`` (one line each) inside a
:class:`~ivr.config.ConfigError`, never a traceback. Position tracking is shared with the
flow loader, so both kinds of file report errors the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from ivr.config import ConfigError, WorkerConfig
from ivr.flow.diagnostics import Diagnostic
from ivr.flow.loader import _convert, _Invalid, _Limits, validation_diagnostics

#: Largest ivr.yaml read by default; a real one is a few kB (a 200 MB file took 20 s to
#: parse). The environment variable IVR_CONFIG_MAX_BYTES changes it.
MAX_CONFIG_BYTES = 1024 * 1024


def config_max_bytes() -> int:
    """The ivr.yaml size limit: IVR_CONFIG_MAX_BYTES if set, else :data:`MAX_CONFIG_BYTES`."""
    raw = os.environ.get("IVR_CONFIG_MAX_BYTES", "").strip()
    if not raw:
        return MAX_CONFIG_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"IVR_CONFIG_MAX_BYTES: expected a number of bytes, got {raw!r}")
    return int(raw)


def load_config(path: str | Path, *, max_bytes: int | None = None) -> WorkerConfig:
    """Read and validate ``path``; ConfigError (one line per problem) otherwise."""
    file = str(path)
    p = Path(path)
    if max_bytes is None:
        max_bytes = config_max_bytes()
    try:
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)  # never more: the file may be endless (a FIFO, /dev/zero)
        if len(data) > max_bytes:
            raise ConfigError(f"{file}: config file too large (over {max_bytes} bytes; ivr.yaml is a few kB)")
        text = data.decode("utf-8")
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
