"""File paths built from templates stay inside their root.

A ``record`` or ``voicemail`` file like ``msg/{{ caller.number }}.wav`` is caller-controlled:
a number ``../../../../tmp/x`` must not write outside ``recordings_dir``. A prompt file
rendered from a template must not read outside the audio folders (another caller's
voicemail, any WAV on the machine). The check is lexical (``..`` and absolute paths are
resolved as text, symlinks are not followed): callers cannot create symlinks, and one the
operator placed inside a root is the operator's choice.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["UnsafePathError", "inside", "within_root"]


class UnsafePathError(ValueError):
    """A rendered path that leaves its root (or is empty or has a NUL); one line."""


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def inside(path: str, root: str | Path) -> str | None:
    """``path`` (relative to ``root``, or absolute) as a normalised path relative to ``root``,
    or None when it leaves ``root`` or names ``root`` itself."""
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.join(base, path))
    if full == base or not full.startswith(base.rstrip(os.sep) + os.sep):
        return None
    return os.path.relpath(full, base)


def within_root(rendered: str, root: str | Path, what: str) -> str:
    """The rendered path relative to ``root``; :class:`UnsafePathError` when it is empty,
    holds a NUL or leaves ``root`` (``what`` names the field in the message)."""
    if not rendered.strip() or "\x00" in rendered:
        raise UnsafePathError(f"{what} {_shown(rendered)} is not a usable file name")
    relative = inside(rendered, root)
    if relative is None:
        raise UnsafePathError(f"{what} {_shown(rendered)} is outside {root}")
    return relative


def within_any(rendered: str, roots: Iterable[str | Path], what: str) -> str:
    """``rendered`` unchanged when it stays inside one of ``roots`` (a relative name is looked
    up under each of them); :class:`UnsafePathError` otherwise."""
    if not rendered.strip() or "\x00" in rendered:
        raise UnsafePathError(f"{what} {_shown(rendered)} is not a usable file name")
    if not os.path.isabs(rendered):
        if os.path.normpath(rendered).split(os.sep)[0] == os.pardir:
            raise UnsafePathError(f"{what} {_shown(rendered)} leaves the audio folders")
        return rendered
    if any(inside(rendered, root) is not None for root in roots):
        return rendered
    raise UnsafePathError(f"{what} {_shown(rendered)} is outside the audio folders and recordings")
