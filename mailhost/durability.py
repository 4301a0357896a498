"""Group commit: many sessions' files made durable together.

Sessions write their files and hand the committer a list of renames (tmp -> final).
The committer thread takes everything pending, renames it, flushes, and then wakes
every waiting session; a session answers `250` only after its batch is flushed.
Two ways to flush (setting smtp.durability):
- "syncfs": writers do not sync; one `syncfs(2)` per batch commits every file and
  every rename at once. Cheapest per message, but it also waits for any other
  dirty data on the filesystem (e.g. a large upload being written).
- "fsync": each writer fsyncs its own file, in parallel worker threads, so a large
  file never delays a small one; the committer fsyncs each touched directory once
  per batch.
Without syncfs (not Linux) "syncfs" falls back to "fsync".
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rename:
    source: Path
    target: Path


def _load_syncfs() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


_SYNCFS = _load_syncfs()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class GroupCommitter:
    """One background thread that batches renames and flushes them together."""

    def __init__(self, anchor: Path, *, mode: str = "syncfs") -> None:
        self.anchor = anchor
        self._device = os.stat(anchor).st_dev
        self._syncfs = _SYNCFS if mode == "syncfs" else None
        # True when writers must fsync their own files before submitting them.
        self.writers_fsync = self._syncfs is None
        self._pending: list[tuple[Sequence[Rename], Future[None]]] = []
        self._cond = threading.Condition()
        self._closed = False
        self.batches = 0
        self.committed = 0
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def commit_sync(self, renames: Sequence[Rename]) -> None:
        """Block until the renames are done and durable (for threads)."""
        self.submit(renames).result()

    async def commit(self, renames: Sequence[Rename]) -> None:
        """Wait, without blocking the event loop, until the renames are durable."""
        await asyncio.wrap_future(self.submit(renames))

    def submit(self, renames: Sequence[Rename]) -> Future[None]:
        future: Future[None] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("committer is closed")
            self._pending.append((renames, future))
            self._cond.notify()
        return future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending and self._closed:
                    return
                batch, self._pending = self._pending, []
            self._flush(batch)

    def _flush(self, batch: list[tuple[Sequence[Rename], Future[None]]]) -> None:
        done: list[Future[None]] = []
        touched: list[Rename] = []
        for renames, future in batch:
            try:
                for rename in renames:
                    os.rename(rename.source, rename.target)
                touched.extend(renames)
                done.append(future)
            except OSError as exc:
                future.set_exception(exc)
        try:
            self._sync(touched)
        except OSError as exc:
            log.error("flush failed: %s", exc)
            for future in done:
                future.set_exception(exc)
            return
        self.batches += 1
        self.committed += len(done)
        for future in done:
            future.set_result(None)

    def _sync(self, renames: list[Rename]) -> None:
        if not renames:
            return
        if self._syncfs is not None:
            fd = os.open(self.anchor, os.O_RDONLY)
            try:
                if self._syncfs(fd) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, os.strerror(errno))
            finally:
                os.close(fd)
            # syncfs covers one filesystem; anything elsewhere is synced one by one.
            others = [r for r in renames if os.stat(r.target).st_dev != self._device]
            for rename in others:
                fsync_path(rename.target)
            renames = others
        for directory in {r.target.parent for r in renames}:
            fsync_path(directory)
