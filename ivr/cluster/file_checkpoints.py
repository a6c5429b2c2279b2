"""Checkpoints in files, for standbys on the same machine (a local lease, no Redis).

One small JSON file per call in a folder beside the lease file (``ivr3cx-<name>.calls/``, mode
0700; files 0600), written whole to a temporary file and renamed over the old one, so a reader
(the next owner, after a ``kill -9``) sees the previous checkpoint or the new one, never half of
one. The page cache keeps what a killed process wrote; nothing is synced to disk, because the
point is surviving the process, not the machine.

Like :class:`~ivr.cluster.checkpoints.RedisCheckpoints`, ``save`` and ``forget`` only mark the
call dirty and return; one writer task serialises what is dirty, newest value per call, and
writes it in one hop to a worker thread, so a burst of steps costs one batch of writes and the
event loop never waits on the disk.

File names are a hash of the call id: the PBX's call id is outside data and never becomes a
path.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from pathlib import Path

from .checkpoints import CHECKPOINT_TTL_S, Checkpoint, encode
from .lease import LeaseStoreError, _one_line

log = logging.getLogger("ivr.cluster")

MAX_CHECKPOINT_BYTES = 16 * 1024 * 1024  # larger is not a checkpoint (a Python flow's journal stays far below)


def file_name(call_id: str) -> str:
    """The file of a call's checkpoint: a hash, whatever the call id holds."""
    return hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:32] + ".json"


class FileCheckpoints:
    """Checkpoints of the calls of the owner on this machine, one file per call in ``folder``."""

    def __init__(self, folder: str | Path, *, ttl: float = CHECKPOINT_TTL_S) -> None:
        self.folder = Path(folder)
        self.ttl = ttl
        self._dirty: dict[str, Checkpoint | None] = {}  # None: delete
        self._kick = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._failing = False
        self._ready = False  # the folder exists with our mode
        self.writes = 0  # checkpoints written (a benchmark counts them)
        self.round_trips = 0  # batches written

    def _start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="checkpoint-writer")
        self._kick.set()

    def save(self, checkpoint: Checkpoint) -> None:
        self._dirty[checkpoint.call_id] = checkpoint
        self._start()

    def forget(self, call_id: str) -> None:
        self._dirty[call_id] = None
        self._start()

    async def _write_loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                await self.flush()
            except LeaseStoreError as exc:
                if not self._failing:
                    log.warning("checkpoints: %s; calls go on, checkpoints are retried", exc)
                    self._failing = True
                await asyncio.sleep(1.0)
                self._kick.set()
            else:
                if self._failing:
                    log.info("checkpoints: %s writable again", self.folder)
                    self._failing = False

    async def flush(self) -> None:
        """Write every pending checkpoint (and deletion) now."""
        if not self._dirty:
            return
        batch, self._dirty = self._dirty, {}
        # Serialised here, on the loop (a flow changes its variables while the thread writes).
        data = {call_id: None if c is None else (encode(c) or b"") for call_id, c in batch.items()}
        try:
            await asyncio.to_thread(self._write_batch, data)
        except OSError as exc:
            for call_id, checkpoint in batch.items():  # keep them, unless newer ones came meanwhile
                self._dirty.setdefault(call_id, checkpoint)
            raise LeaseStoreError(f"checkpoint folder {self.folder}: {_one_line(exc)}") from None
        self.round_trips += 1
        self.writes += sum(1 for c in batch.values() if c is not None)

    def _prepare(self) -> None:
        """The folder, private to this user (it holds callers' numbers and flow variables)."""
        if self._ready:
            return
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = self.folder.lstat()
        if not self.folder.is_dir() or self.folder.is_symlink():
            raise NotADirectoryError(f"{self.folder} is not a folder")
        if info.st_uid != os.geteuid():
            raise PermissionError(f"{self.folder} belongs to another user (uid {info.st_uid})")
        if info.st_mode & 0o077:
            os.chmod(self.folder, 0o700)
        self._ready = True

    def _write_batch(self, batch: dict[str, bytes | None]) -> None:
        """Write (bytes), delete (None) or leave alone (empty: could not be encoded)."""
        self._prepare()
        for call_id, data in batch.items():
            path = self.folder / file_name(call_id)
            if data is None:
                path.unlink(missing_ok=True)
                continue
            if not data:
                continue  # could not be encoded: the previous checkpoint stays
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, path)

    async def load_all(self) -> dict[str, Checkpoint]:
        try:
            return await asyncio.to_thread(self._read_all)
        except OSError as exc:
            raise LeaseStoreError(f"checkpoint folder {self.folder}: reading failed: {_one_line(exc)}") from None

    def _read_all(self) -> dict[str, Checkpoint]:
        found: dict[str, Checkpoint] = {}
        if not self.folder.is_dir():
            return found
        self._prepare()
        now = time.time()
        for path in self.folder.iterdir():
            try:
                info = path.lstat()
                if path.suffix == ".tmp" or now - info.st_mtime > self.ttl:
                    path.unlink(missing_ok=True)  # a write cut short, or a call long gone
                    continue
                if path.suffix != ".json" or info.st_size > MAX_CHECKPOINT_BYTES or path.is_symlink():
                    continue
                checkpoint = Checkpoint.model_validate_json(path.read_bytes())
            except ValueError:
                log.warning("checkpoints: %s is not a checkpoint of this version; ignored", path)
                continue
            except OSError:
                continue  # gone meanwhile
            if path.name != file_name(checkpoint.call_id):
                continue  # not written by this store under this call id
            found[checkpoint.call_id] = checkpoint
        return found

    async def aclose(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            try:
                await writer
            except asyncio.CancelledError:
                pass
        try:
            await asyncio.wait_for(self.flush(), 2.0)
        except (TimeoutError, LeaseStoreError):
            pass
