"""What ``ivr dev`` serves: one flow file, or the routes and flows of an ``ivr.yaml``.

Either way the PBX is the built-in emulator: a config's ``pbx`` (and ``metrics``) section is
ignored, so ``ivr dev`` never touches a real 3CX and needs no secret.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from ivr.config import ConfigError, PbxSettings, Route, WorkerConfig
from ivr.flow import FlowLoadError
from ivr.flow.diagnostics import Diagnostic
from ivr.validate import validate_paths

DEFAULT_ROUTE_POINT = "800"
FLOW_SUFFIXES = (".yaml", ".yml", ".py")
# Sections of ivr.yaml that describe the real deployment, not the flows: dev replaces them.
_IGNORED_SECTIONS = ("pbx", "metrics")


class TargetError(Exception):
    """FLOW_OR_CONFIG cannot be served; ``str()`` is one line naming the file and the problem."""


@dataclass
class DevTarget:
    """Routes and flows to serve, plus the worker settings that do not depend on the emulator."""

    source: Path  # the file named on the command line
    routes: list[Route]
    base_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)  # other WorkerConfig fields
    is_config: bool = False

    @property
    def route_point(self) -> str:
        """The route point the emulator offers (the first route's; the emulator has one)."""
        return self.routes[0].route_point

    @property
    def flow_paths(self) -> list[Path]:
        """Every flow file the routes name, resolved, in route order without repeats."""
        seen: dict[Path, None] = {}
        for r in self.routes:
            p = Path(r.flow)
            seen[(p if p.is_absolute() else self.base_dir / p).resolve()] = None
        return list(seen)

    def worker_config(self, url: str, client_id: str, secret: str) -> WorkerConfig:
        """The worker's config, pointed at the emulator at ``url``."""
        pbx = PbxSettings(url=url, client_id=client_id, client_secret=SecretStr(secret))
        # No call-record file (the page shows each record) and a short drain: this is a dev loop.
        data = {**self.settings, "records": None, "drain_timeout": 2.0}
        data["pbx"], data["routes"] = pbx, self.routes
        cfg = WorkerConfig.model_validate(data)
        cfg.base_dir = self.base_dir
        return cfg

    def diagnostics(self) -> list[Diagnostic]:
        """Validation problems (errors and warnings) of every served flow, file:line:col."""
        return validate_paths(self.flow_paths)


def load_target(path: str | Path) -> DevTarget:
    """A flow file (``.yaml``/``.yml``/``.py`` with ``steps``) or an ``ivr.yaml`` worker config."""
    p = Path(path)
    if not p.is_file():
        raise TargetError(f"{p}: no such file")
    if p.suffix == ".py":
        return _flow_target(p)
    if p.suffix not in (".yaml", ".yml"):
        raise TargetError(f"{p}: expected a flow (.yaml, .yml, .py) or an ivr.yaml config")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        raise TargetError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"{p}: cannot read ({exc})") from None
    if isinstance(data, dict) and "routes" in data and "steps" not in data:
        return _config_target(p)
    return _flow_target(p)


def _flow_target(p: Path) -> DevTarget:
    flow = p.resolve()
    settings = {
        "audio_dirs": [],  # prompts are found from the flow's folder, never in this package's files
        "recordings_dir": tempfile.mkdtemp(prefix="ivr-dev-recordings-"),
    }
    route = Route(route_point=DEFAULT_ROUTE_POINT, flow=str(flow))
    return DevTarget(source=p, routes=[route], base_dir=flow.parent, settings=settings)


def _config_target(p: Path) -> DevTarget:
    from ivr.config_loader import load_config

    try:  # the same checks as `ivr run`: every problem as file:line:col
        cfg = load_config(p)
    except ConfigError as exc:
        raise TargetError(str(exc)) from None
    settings = cfg.model_dump(exclude={*_IGNORED_SECTIONS, "routes", "base_dir"})
    return DevTarget(source=p, routes=cfg.routes, base_dir=p.resolve().parent, settings=settings, is_config=True)


def check_flows(target: DevTarget) -> None:
    """Raise FlowLoadError listing every error (file:line:col) if a served flow is invalid."""
    errors = [d for d in target.diagnostics() if d.is_error]
    if errors:
        raise FlowLoadError(errors)
