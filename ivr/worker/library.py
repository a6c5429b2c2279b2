"""The flows the worker serves, reloaded when their files change.

A changed file is loaded and validated off to the side; only a flow that loads cleanly
replaces the old version. Each call takes the version current when it starts and keeps it to
the end, so an edit never changes a call in progress. An invalid edit is logged (every
error with file:line:col) and ignored: new calls keep getting the last good version.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.flow import FlowLoadError, load_any

log = logging.getLogger("ivr.worker.reload")


@dataclass(frozen=True)
class LoadedFlow:
    path: Path
    runnable: Any  # what ivr.flow.load_any returned: has `async run(call, params=None)`
    version: str  # short content hash, written to each call record
    stamp: tuple[float, int]  # (mtime, size) when loaded


class FlowLibrary:
    def __init__(self, paths: list[Path], *, on_reload: Callable[[Path, str, bool], None] | None = None) -> None:
        self._flows: dict[Path, LoadedFlow] = {}
        self._paths = [Path(p).resolve() for p in paths]
        self._on_reload = on_reload
        self.reloads = 0
        self.failed_reloads = 0

    def load_all(self) -> None:
        """Load every flow at start-up; raise FlowLoadError listing all problems if any fails."""
        problems: list[str] = []
        for path in self._paths:
            try:
                self._flows[path] = self._load(path)
            except FlowLoadError as exc:
                problems.append(str(exc))
        if problems:
            raise FlowLoadError.from_text("\n".join(problems))

    def get(self, path: str | Path) -> LoadedFlow:
        return self._flows[Path(path).resolve()]

    def _load(self, path: Path) -> LoadedFlow:
        try:
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        except OSError as exc:
            raise FlowLoadError.from_text(f"{path}: error: cannot read the flow file: {exc.strerror}") from None
        runnable = load_any(path)
        return LoadedFlow(path, runnable, digest, (stat.st_mtime, stat.st_size))

    def check_once(self) -> list[Path]:
        """Reload the flows whose file changed; returns the paths that were replaced."""
        replaced = []
        for path in self._paths:
            current = self._flows.get(path)
            try:
                stat = path.stat()
            except OSError as exc:
                if current is not None:
                    log.error("flow %s cannot be read (%s); keeping the last good version", path, exc.strerror)
                continue
            if current is not None and current.stamp == (stat.st_mtime, stat.st_size):
                continue
            try:
                loaded = self._load(path)
            except FlowLoadError as exc:
                self.failed_reloads += 1
                # Remember the stamp so a broken file is reported once, not every poll.
                if current is not None:
                    self._flows[path] = LoadedFlow(path, current.runnable, current.version, (stat.st_mtime, stat.st_size))
                log.error("flow %s changed but is invalid; still serving version %s:\n%s",
                          path, current.version if current else "none", exc)
                if self._on_reload:
                    self._on_reload(path, str(exc), False)
                continue
            if current is not None and loaded.version == current.version:
                self._flows[path] = loaded
                continue
            self._flows[path] = loaded
            self.reloads += 1
            replaced.append(path)
            log.info("flow %s reloaded (version %s)", path, loaded.version)
            if self._on_reload:
                self._on_reload(path, loaded.version, True)
        return replaced

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the files until cancelled (cheap: one stat per flow per interval)."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.check_once()
            except Exception:  # never let the watcher die
                log.exception("flow reload check failed")
