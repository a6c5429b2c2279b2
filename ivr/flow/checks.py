"""Semantic checks on a validated flow: ids, gotos, reachability, files, template names.

Runs after pydantic validation (which checks shapes and types), so every check here can
rely on the models. Each finding is a :class:`Diagnostic` positioned via the loader's
:class:`~ivr.flow.loader.Src` tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

# One prompt lookup for every flow (YAML, Python) and for validate: ivr.audio.prompts.
from ivr.audio.prompts import find_prompt
from ivr.audio.prompts import prompt_search_path as audio_search_path
from ivr.templating.templates import Condition, Template

from .diagnostics import Diagnostic, Severity
from .schema import (
    RESERVED_NAMES,
    STEP_TYPES,
    AgentHttpTool,
    AgentToolsArgs,
    Flow,
    GotoStep,
    HttpArgs,
    Node,
    PlayArgs,
    Prompt,
    SetStep,
    StepBase,
    SubflowStep,
    VoicemailArgs,
    suggest,
)

__all__ = ["AUDIO_STEPS", "audio_search_path", "check_flow", "resolve_audio", "walk_nodes"]

#: Steps that need the caller's audio (each step model says so: ``StepBase.audio``).
AUDIO_STEPS = frozenset(kind for kind, cls in STEP_TYPES.items() if cls.audio)
_JINJA_GLOBALS = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace",
                            "true", "false", "none", "True", "False", "None"})


def resolve_audio(name: str | Path, folder: Path) -> Path | None:
    """The audio file ``name`` refers to (absolute paths as they are), or None."""
    return find_prompt(name, audio_search_path(folder))


def walk_nodes(obj: Any, src: Any, parent: Any = None, key: Any = None) -> Iterator[tuple[Any, Any, Any, Any]]:
    """Yield (value, src, parent, key) for every model, list, dict, template and condition
    under ``obj``; ``src`` is the nearest known source position (short forms have none of
    their own, so they report their parent's)."""
    yield obj, src, parent, key
    if isinstance(obj, Node):
        for name, f in type(obj).model_fields.items():
            alias = f.alias or name
            value = getattr(obj, name)
            if value is None:
                continue
            yield from walk_nodes(value, src.child(alias) or src, obj, alias)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from walk_nodes(value, src.child(i) or src, obj, i)
    elif isinstance(obj, dict):
        for k, value in obj.items():
            yield from walk_nodes(value, src.child(k) or src, obj, k)


class _Checker:
    def __init__(self, flow: Flow, file: str, check_files: bool) -> None:
        self.flow, self.file, self.check_files = flow, file, check_files
        self.out: list[Diagnostic] = []

    def add(self, src: Any, severity: Severity, message: str, *, key: str | None = None) -> None:
        line, col = src.key_pos(key) if key is not None else (src.line, src.col)
        self.out.append(Diagnostic(self.file, line, col, severity, message))

    def run(self, root: Any) -> list[Diagnostic]:
        nodes = list(walk_nodes(self.flow, root))
        steps = [(n, s) for n, s, _, _ in nodes if isinstance(n, StepBase)]
        ids = self._ids(steps)
        known = self._known_names(nodes)
        tool_templates = {id(t) for n, s, _, _ in nodes if isinstance(n, AgentHttpTool)
                          for t, _, _, _ in walk_nodes(n, s) if isinstance(t, Template)}
        for node, src, parent, key in nodes:
            if isinstance(node, GotoStep) and node.goto not in ids:
                self.add(src.at("goto"), "error",
                         f"goto target {node.goto!r} not found{suggest(node.goto, ids)}")
            elif isinstance(node, list) and node and all(isinstance(s, StepBase) for s in node):
                self._unreachable(node, src)
            elif isinstance(node, (Template, Condition)):
                extra = {"mailbox"} if isinstance(parent, VoicemailArgs) and key == "file" else set()
                if id(node) in tool_templates:
                    extra = {"args"}  # an agent http tool: the model's checked arguments
                self._names(node, src, known | extra)
            elif isinstance(node, (HttpArgs, AgentHttpTool)):
                self._http(node, src)
            if self.check_files:
                self._files(node, src)
        for index, step in enumerate(self.flow.on_hangup):
            if step.audio:
                self.add(root.at("on_hangup", index), "warning",
                         f"{step.kind!r} is skipped in on_hangup: the caller is gone")
        return self.out

    def _ids(self, steps: list[tuple[StepBase, Any]]) -> dict[str, Any]:
        ids: dict[str, Any] = {}
        for step, src in steps:
            if step.id is None:
                continue
            if step.id in ids:
                first = ids[step.id]
                self.add(src.at("id"), "error",
                         f"duplicate step id {step.id!r} (first used on line {first.at('id').line})")
            else:
                ids[step.id] = src
        return ids

    def _unreachable(self, steps: list[StepBase], src: Any) -> None:
        dead_after: tuple[str, int] | None = None
        warned = False
        for i, step in enumerate(steps):
            step_src = src.child(i) or src
            if step.id is not None:
                dead_after, warned = None, False  # a goto target: reachable again
            if dead_after is not None and not warned:
                self.add(step_src, "warning",
                         f"unreachable step: it follows the {dead_after[0]} on line {dead_after[1]} and has no id")
                warned = True  # one warning per dead run
            if dead_after is None and step.ends_list and step.when is None:
                dead_after = (step.kind, step_src.line)

    def _known_names(self, nodes: list[tuple[Any, Any, Any, Any]]) -> set[str]:
        known = set(RESERVED_NAMES) | _JINJA_GLOBALS | set(self.flow.vars) | set(self.flow.params)
        for node, _, _, _key in nodes:
            if isinstance(node, SetStep):
                known.update(node.set)
            elif isinstance(node, Node) and (into := getattr(node, "into", None)):  # only some steps have `into`
                known.add(str(into))
            if isinstance(node, AgentToolsArgs):
                known.update(node.set)  # the agent may set these
        return known

    def _names(self, tmpl: Template | Condition, src: Any, known: set[str]) -> None:
        for name in sorted(tmpl.names - known):
            self.add(src, "warning", f"template uses unknown name {name!r}{suggest(name, known)}"
                     " (set it with 'set:' or 'vars:' first)")

    def _http(self, node: HttpArgs | AgentHttpTool, src: Any) -> None:
        from ivr.templating.urls import body_warning, url_warning

        problem = url_warning(node.url)
        if problem:
            self.add(src.at("url"), "warning", problem)
        body = getattr(node, "body", None)
        if body is not None and (problem := body_warning(body)):
            self.add(src.at("body"), "warning", problem)

    def _files(self, node: Any, src: Any) -> None:
        folder = self.flow.folder
        if isinstance(node, (PlayArgs, Prompt)):
            items, key = (node.files, "files") if isinstance(node, PlayArgs) else (node.parts, "parts")
            for i, item in enumerate(items):
                if isinstance(item, Template) and item.is_static and resolve_audio(item, folder) is None:
                    base = src.child(key) or src
                    self.add(base.child(i) or base, "error", f"audio file {str(item)!r} not found "
                             "(looked next to the flow and in audio/ folders)")
        elif isinstance(node, SubflowStep):
            if not (folder / node.subflow.file).is_file():
                self.add(src.at("subflow", "file"), "error", f"subflow file {node.subflow.file!r} not found")


def check_flow(flow: Flow, root: Any, file: str, *, check_files: bool = True) -> list[Diagnostic]:
    """All semantic problems of ``flow`` (errors and warnings), in file order."""
    out = _Checker(flow, file, check_files).run(root)
    return sorted(set(out), key=lambda d: (d.line, d.col, d.message))
