"""``ivr validate`` for Python flows: the prompt files a flow names as string literals.

A Python flow's prompts are found by the same rule as a YAML flow's
(:func:`ivr.audio.prompts.prompt_search_path`), so a literal name that no file answers is
reported as ``file:line:col: error: ...``, the way a YAML ``play: missing.wav`` is. Only
literals are checked: a name computed at run time (an f-string, a variable) cannot be.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from ivr.audio.prompts import find_prompt, prompt_search_path

from .diagnostics import Diagnostic

__all__ = ["check_python_prompts"]

#: Call methods and the keyword arguments that take a prompt (a file name, ``{say: ...}``,
#: or a list of those). ``play`` also takes file names as positional arguments.
_PROMPT_KEYWORDS = {
    "play": (),
    "play_prompt": ("prompt",),
    "gather": ("prompt", "reprompt", "no_input_prompt", "no_match_prompt"),
    "menu": ("prompt", "reprompt", "no_input_prompt", "no_match_prompt"),
}


def _literal_names(node: ast.expr) -> Iterator[tuple[ast.Constant, str]]:
    """String literals in a prompt argument: itself, or inside lists and tuples (nested)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node, node.value
    elif isinstance(node, (ast.List, ast.Tuple)):
        for item in node.elts:
            yield from _literal_names(item)


def _prompt_arguments(call: ast.Call, method: str) -> Iterator[ast.expr]:
    if method in ("play", "play_prompt"):
        yield from (a for a in call.args if not isinstance(a, ast.Starred))
    for kw in call.keywords:
        if kw.arg in _PROMPT_KEYWORDS[method]:
            yield kw.value


def check_python_prompts(path: Path, source: str | None = None) -> list[Diagnostic]:
    """Errors for literal prompt names in ``path`` that no file answers (unparsable source:
    none here, the loader reports it)."""
    try:
        text = source if source is not None else path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return []
    dirs = prompt_search_path(path.resolve().parent)
    out: list[Diagnostic] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _PROMPT_KEYWORDS):
            continue
        for arg in _prompt_arguments(node, node.func.attr):
            for literal, name in _literal_names(arg):
                if find_prompt(name, dirs) is None:
                    out.append(Diagnostic(str(path), literal.lineno, literal.col_offset + 1, "error",
                                          f"audio file {name!r} not found "
                                          "(looked next to the flow and in audio/ folders)"))
    return out
