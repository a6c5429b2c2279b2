"""Load a YAML flow file into a validated :class:`~ivr.flow.schema.Flow`.

Steps: read bytes (size-capped, UTF-8) -> parse with ruamel.yaml's round-trip loader, which
keeps the line and column of every key and value -> convert to plain Python data plus a
parallel :class:`Src` tree of positions -> validate with pydantic -> map each validation
error's ``loc`` back to a position -> run the semantic checks (:mod:`ivr.flow.checks`).
Every problem becomes a :class:`Diagnostic`; if any is an error, :class:`FlowLoadError`
carries them all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .diagnostics import Diagnostic, FlowLoadError
from .schema import UNION_TAGS, Flow, Node, suggest

__all__ = ["MAX_BYTES", "Src", "load_flow", "load_flow_text", "parse_yaml"]

#: Larger files are refused: a flow is a page or two of YAML, not a data set (and the
#: round-trip parser needs about 1 s per 100 KB).
MAX_BYTES = 512 * 1024
#: Nesting deeper than this is refused before pydantic recurses into it.
MAX_DEPTH = 64
#: Nodes after alias expansion; stops "billion laughs" documents.
MAX_NODES = 200_000


@dataclass(eq=False)
class Src:
    """Where a YAML node came from: its position, its keys' positions and its children.

    ``line``/``col`` are 1-based. Mapping children are keyed by ``str(key)``, sequence
    children by index. ``obj`` is the plain Python value built from the node.
    """

    line: int
    col: int
    obj: Any = None
    keys: dict[str, tuple[int, int]] = field(default_factory=dict)
    items: dict[Any, Src] = field(default_factory=dict)

    def child(self, key: Any) -> Src | None:
        """The child at ``key`` (a mapping key or a list index), or None."""
        if isinstance(key, int) and not isinstance(key, bool) and key in self.items:
            return self.items[key]
        return self.items.get(str(key))

    def at(self, *path: Any) -> Src:
        """Follow ``path`` as far as it exists; the deepest node found (never None)."""
        cur = self
        for key in path:
            nxt = cur.child(key)
            if nxt is None:
                break
            cur = nxt
        return cur

    def key_pos(self, key: Any) -> tuple[int, int]:
        """Position of a mapping key (the mapping's own position if unknown)."""
        return self.keys.get(str(key), (self.line, self.col))


class _Limits:
    def __init__(self) -> None:
        self.nodes = 0


class _Invalid(Exception):
    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(message)
        self.line, self.col, self.message = line, col, message


def _convert(node: Any, line: int, col: int, depth: int, limits: _Limits, active: set[int]) -> tuple[Any, Src]:
    """Plain data + positions from a ruamel node (0-based line/col in, 1-based out)."""
    limits.nodes += 1
    if limits.nodes > MAX_NODES:
        raise _Invalid(line + 1, col + 1, f"document too large: more than {MAX_NODES} values (alias expansion?)")
    if depth > MAX_DEPTH:
        raise _Invalid(line + 1, col + 1, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, (CommentedMap, CommentedSeq)):
        if id(node) in active:
            raise _Invalid(line + 1, col + 1, "recursive alias: a node contains itself")
        active.add(id(node))
        try:
            if isinstance(node, CommentedMap):
                return _convert_map(node, depth, limits, active)
            return _convert_seq(node, depth, limits, active)
        finally:
            active.discard(id(node))
    src = Src(line + 1, col + 1)
    value = _scalar(node, line + 1, col + 1)
    src.obj = value
    return value, src


def _scalar(node: Any, line: int = 1, col: int = 1) -> Any:
    # ruamel's round-trip scalars are subclasses (ScalarFloat, HexInt, ...); plain types
    # keep pydantic and templates from seeing surprising classes.
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return _text(str(node), line, col)
    return node  # dates, timestamps


def _text(text: str, line: int, col: int) -> str:
    """JSON-style escapes arrive as UTF-16 surrogate halves ("\\ud83d\\ude00"): join the
    pairs; a lone half is not text (and would crash any later encode), so it is an error."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    joined = text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid(line, col, "text contains an unpaired surrogate escape (\\uD800-\\uDFFF)") from None
    return joined


def _convert_map(node: CommentedMap, depth: int, limits: _Limits, active: set[int]) -> tuple[Any, Src]:
    base_line, base_col = node.lc.line or 0, node.lc.col or 0
    src = Src(base_line + 1, base_col + 1)
    out: dict[Any, Any] = {}
    lc = node.lc.data if isinstance(node.lc.data, dict) else {}
    for key, value in node.items():
        if isinstance(key, (CommentedMap, CommentedSeq)):
            raise _Invalid(base_line + 1, base_col + 1, "a mapping key must be a plain value")
        pos = lc.get(key)
        if pos is not None:  # [key line, key col, value line, value col]
            k_line, k_col, v_line, v_col = pos
        else:  # merged (<<) keys have no position of their own
            k_line, k_col, v_line, v_col = base_line, base_col, base_line, base_col
        plain_key = _scalar(key, k_line + 1, k_col + 1)
        child, child_src = _convert(value, v_line, v_col, depth + 1, limits, active)
        out[plain_key] = child
        src.keys[str(plain_key)] = (k_line + 1, k_col + 1)
        src.items[str(plain_key)] = child_src
    src.obj = out
    return out, src


def _convert_seq(node: CommentedSeq, depth: int, limits: _Limits, active: set[int]) -> tuple[Any, Src]:
    base_line, base_col = node.lc.line or 0, node.lc.col or 0
    src = Src(base_line + 1, base_col + 1)
    out: list[Any] = []
    lc = node.lc.data if isinstance(node.lc.data, dict) else {}
    for i, value in enumerate(node):
        i_line, i_col = lc.get(i, (base_line, base_col))
        child, child_src = _convert(value, i_line, i_col, depth + 1, limits, active)
        out.append(child)
        src.items[i] = child_src
    src.obj = out
    return out, src


def _yaml_error(file: str, exc: YAMLError, text: str) -> Diagnostic:
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        if mark is not None:
            return Diagnostic(file, mark.line + 1, mark.column + 1, "error", f"YAML: {problem}{context}")
        return Diagnostic(file, 0, 0, "error", f"YAML: {problem}")
    position = getattr(exc, "position", None)
    if isinstance(position, int):  # ReaderError: bad characters, position in the text
        line = text.count("\n", 0, position) + 1
        col = position - (text.rfind("\n", 0, position) + 1) + 1
        reason = getattr(exc, "reason", "") or "unreadable character"
        char = getattr(exc, "character", None)
        code = ord(char) if isinstance(char, str) and len(char) == 1 else char
        what = f" #x{code:04x}" if isinstance(code, int) else ""
        return Diagnostic(file, line, col, "error", f"YAML: unacceptable character{what}: {reason}")
    return Diagnostic(file, 0, 0, "error", f"YAML: {str(exc).splitlines()[0] if str(exc) else 'invalid'}")


def _bracket_depth_error(text: str) -> tuple[int, int] | None:
    """Position where ``[``/``{`` nesting passes MAX_DEPTH (quotes and comments skipped).

    ruamel's parser takes seconds to fail on thousands of open brackets; this pass takes
    milliseconds and lets us refuse such input up front."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None
    depth, quote, line, line_start, prev = 0, "", 1, 0, "\n"
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line, line_start = line + 1, i + 1
            if quote == "#":
                quote = ""
        elif quote:
            if quote == '"' and c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'" and prev in " \t\n[{,:":
            quote = c
        elif c == "#" and prev in " \t\n":
            quote = "#"
        elif c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line, i - line_start + 1
        elif c in "]}":
            depth = max(0, depth - 1)
        prev = c
        i += 1
    return None


def parse_yaml(text: str, file: str) -> tuple[Any, Src]:
    """Parse one YAML document into (plain data, Src); raises FlowLoadError on bad YAML."""
    too_deep = _bracket_depth_error(text)
    if too_deep is not None:
        raise FlowLoadError([Diagnostic(file, *too_deep, "error", f"nested deeper than {MAX_DEPTH} levels")])
    yaml = YAML(typ="rt")
    try:
        docs = list(yaml.load_all(text))
    except YAMLError as exc:
        raise FlowLoadError([_yaml_error(file, exc, text)]) from None
    except RecursionError:
        raise FlowLoadError([Diagnostic(file, 1, 1, "error", "YAML: nested too deeply")]) from None
    if len(docs) > 1:
        raise FlowLoadError([Diagnostic(file, 1, 1, "error", "a flow file holds one YAML document, found several")])
    root = docs[0] if docs else None
    if root is None:
        raise FlowLoadError([Diagnostic(file, 1, 1, "error", "the flow file is empty: expected a mapping with 'steps'")])
    if not isinstance(root, CommentedMap):
        kind = "a list" if isinstance(root, CommentedSeq) else f"a {type(root).__name__}"
        raise FlowLoadError([Diagnostic(file, 1, 1, "error", f"a flow file is a mapping with 'steps', not {kind}")])
    try:
        return _convert(root, 0, 0, 0, _Limits(), set())
    except _Invalid as exc:
        raise FlowLoadError([Diagnostic(file, exc.line, exc.col, "error", exc.message)]) from None


# --- pydantic errors -> diagnostics ---------------------------------------------------------

_TYPE_WORDS = {
    "string_type": "text", "int_type": "a whole number", "int_parsing": "a whole number",
    "int_from_float": "a whole number", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false", "dict_type": "a mapping",
    "list_type": "a list", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "none_required": "empty (no value)", "date_type": "a date", "date_from_datetime_parsing": "a date",
}


def _short(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _error_to_diagnostic(err: Mapping[str, Any], root: Src, models: Mapping[int, type[Node]], file: str) -> Diagnostic:
    loc = [c for c in err["loc"] if c not in UNION_TAGS]
    ctx = err.get("ctx") or {}
    kind = err["type"]
    cur, parent = root, None
    key_mode = False
    field_name: str | None = None
    for comp in loc:
        if comp == "[key]":
            key_mode = True
            continue
        nxt = cur.child(comp)
        if isinstance(comp, str):
            field_name = comp
        if nxt is None:
            continue
        parent, cur = cur, nxt
    line, col = cur.line, cur.col
    if key_mode and parent is not None and field_name is not None:
        line, col = parent.key_pos(field_name)
    at_key = ctx.get("at_key")
    if at_key is not None:
        line, col = cur.key_pos(at_key)
    subpath = ctx.get("subpath")
    if subpath:
        sub = cur.at(*subpath)
        line, col = sub.line, sub.col

    if kind == "extra_forbidden" and parent is not None:
        line, col = parent.key_pos(field_name)
        owner = models.get(id(parent.obj))
        where = f" in {owner.what}" if owner and owner.what else ""
        hint = suggest(field_name, owner.field_keys()) if owner and field_name else ""
        message = f"unknown field {field_name!r}{where}{hint}"
    elif kind == "missing":
        owner = models.get(id(cur.obj))
        where = f" in {owner.what}" if owner and owner.what else ""
        message = f"missing required field {field_name!r}{where}"
    elif kind in _TYPE_WORDS:
        label = f"{field_name!r}" if field_name is not None else "value"
        message = f"{label} should be {_TYPE_WORDS[kind]}, got {_short(err.get('input'))}"
    elif kind in ("too_short", "too_long"):
        label = f"{field_name!r}" if field_name is not None else "value"
        if kind == "too_short":
            n = ctx.get("min_length", 1)
            message = f"{label} needs at least {n} item{'s' if n != 1 else ''}"
        else:
            n = ctx.get("max_length", 0)
            message = f"{label} may have at most {n} item{'s' if n != 1 else ''}"
    elif kind.startswith(("literal_", "greater_", "less_", "string_too")):
        label = f"{field_name!r} " if field_name is not None else ""
        message = f"{label}{err['msg'][0].lower()}{err['msg'][1:]}, got {_short(err.get('input'))}"
        message = message.replace("input should", "should").replace("' should", "' should")
    else:
        message = err["msg"].removeprefix("Value error, ")
    return Diagnostic(file, line, col, "error", message)


def validation_diagnostics(exc: ValidationError, root: Src, models: Mapping[int, type[Node]], file: str) -> list[Diagnostic]:
    """Map every pydantic error to a positioned diagnostic (deduplicated)."""
    seen: dict[tuple[int, int, str], Diagnostic] = {}
    for err in exc.errors(include_url=False):
        diag = _error_to_diagnostic(err, root, models, file)
        seen.setdefault((diag.line, diag.col, diag.message), diag)
    return list(seen.values())


# --- entry points ---------------------------------------------------------------------------


def read_text(path: Path, file: str) -> str:
    """The file's text, or FlowLoadError saying why it cannot be read."""
    try:
        if path.is_dir():
            raise FlowLoadError([Diagnostic(file, 0, 0, "error", "is a directory, not a flow file")])
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise FlowLoadError([Diagnostic(file, 0, 0, "error",
                                            f"file too large ({size} bytes; a flow may be at most {MAX_BYTES})")])
        data = path.read_bytes()
    except FileNotFoundError:
        raise FlowLoadError([Diagnostic(file, 0, 0, "error", "file not found")]) from None
    except OSError as exc:
        raise FlowLoadError([Diagnostic(file, 0, 0, "error", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise FlowLoadError([Diagnostic(file, line, col, "error", "not UTF-8 text (binary file?)")]) from None


def load_flow_text(text: str, path: str | Path = "<flow>", *, check_files: bool = True) -> Flow:
    """Load a flow from YAML text; ``path`` names it in messages and anchors relative files."""
    from .checks import check_flow

    file = str(path)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:  # the same limit as for files: parsing would take many seconds
        raise FlowLoadError([Diagnostic(file, 0, 0, "error", f"flow too large ({size} bytes; a flow may be at most {MAX_BYTES})")])
    data, src = parse_yaml(text, file)
    models: dict[int, type[Node]] = {}
    try:
        flow = Flow.model_validate(data, context={"models": models})
    except ValidationError as exc:
        raise FlowLoadError(validation_diagnostics(exc, src, models, file)) from None
    except RecursionError:
        raise FlowLoadError([Diagnostic(file, 1, 1, "error", "steps nested too deeply")]) from None
    flow._path = Path(path) if file != "<flow>" else None
    if flow.name is None:
        flow.name = Path(path).stem if file != "<flow>" else "flow"
    flow._src = src
    flow._version = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    diagnostics = check_flow(flow, src, file, check_files=check_files)
    flow._diagnostics = diagnostics
    if any(d.is_error for d in diagnostics):
        raise FlowLoadError(diagnostics)
    return flow


def load_flow(path: str | Path, *, check_files: bool = True) -> Flow:
    """Load and validate a flow file; raises :class:`FlowLoadError` listing every problem.

    ``check_files=False`` skips the audio and subflow file existence checks (for tools
    that render flows whose audio lives elsewhere)."""
    p = Path(path)
    return load_flow_text(read_text(p, str(path)), p, check_files=check_files)
