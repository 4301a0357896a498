"""Local delivery into Maildirs laid out the way Dovecot reads them.

<maildir_root>/<ascii domain>/<local part>/Maildir/{tmp,new,cur}. A message is
written to tmp/ and renamed into new/ by the group committer, so it is visible to
Dovecot only once complete, and `250` is answered only after the flush. Files are
owned by the mail user (Dovecot refuses mail access as root).
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailhost.durability import Rename
from mailhost.errors import PermanentFailure, TemporaryFailure
from mailhost.spool import Buffer
from provisioning.maildirs import maildir_path
from provisioning.maildirs import usage as maildir_usage

_SUBDIRS = ("tmp", "new", "cur")
USAGE_TTL = 60.0  # seconds a cached quota usage is trusted before a rescan


@dataclass
class _Usage:
    size: int
    counted_at: float


class MaildirStore:
    def __init__(
        self, root: Path, owner: tuple[int, int] | None = None, *, fsync: bool = False
    ) -> None:
        """`owner` (uid, gid) of every file and directory; None: whoever runs us.

        `fsync`: sync each file as it is written (the committer's "fsync" mode).
        """
        self.root = root
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self.owner = owner if owner != (os.geteuid(), os.getegid()) else None
        if self.owner:
            os.chown(self.root, *self.owner)
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self._counter = itertools.count()
        self._usage: dict[str, _Usage] = {}

    def maildir(self, key: str) -> Path:
        """The Maildir of a mailbox key (`local@ascii.domain`)."""
        path = maildir_path(self.root, key)
        if path is None:
            raise PermanentFailure(550, f"no such mailbox {key}", enhanced="5.1.1")
        return path

    def _ensure(self, maildir: Path) -> None:
        if (maildir / "new").is_dir():
            return
        for directory in (maildir.parent.parent, maildir.parent, maildir):
            if not directory.exists():
                directory.mkdir(mode=0o700, exist_ok=True)
                if self.owner:
                    os.chown(directory, *self.owner)
        for sub in _SUBDIRS:
            path = maildir / sub
            path.mkdir(mode=0o700, exist_ok=True)
            if self.owner:
                os.chown(path, *self.owner)

    def usage(self, key: str) -> int:
        """Bytes in a mailbox, all folders, from the ,S= sizes in file names (cached briefly)."""
        now = time.monotonic()
        cached = self._usage.get(key)
        if cached is not None and now - cached.counted_at < USAGE_TTL:
            return cached.size
        total = maildir_usage(self.maildir(key)).bytes
        self._usage[key] = _Usage(total, now)
        return total

    def cached_usage(self, key: str) -> int | None:
        """The usage if it is known and fresh, without touching the disk."""
        cached = self._usage.get(key)
        if cached is None or time.monotonic() - cached.counted_at >= USAGE_TTL:
            return None
        return cached.size

    def check_quota(self, key: str, quota: int, size: int, usage: int | None = None) -> None:
        if (self.usage(key) if usage is None else usage) + size > quota:
            raise TemporaryFailure(452, f"mailbox {key} is full", enhanced="4.2.2")

    def prepare(self, key: str, parts: Sequence[Buffer]) -> Rename:
        """Write one copy (the parts in order) into tmp/; commit the rename to deliver it."""
        maildir = self.maildir(key)
        size = sum(len(part) for part in parts)
        try:
            self._ensure(maildir)
            name = (
                f"{time.time_ns() // 1000}.M{next(self._counter)}P{os.getpid()}"
                f".{self._host},S={size}"
            )
            tmp = maildir / "tmp" / name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                for part in parts:
                    _write_all(fd, part)
                if self.fsync:
                    os.fsync(fd)
                if self.owner:
                    os.fchown(fd, *self.owner)
            finally:
                os.close(fd)
        except OSError as exc:
            raise TemporaryFailure(
                451, f"cannot store mail: {exc.strerror}", enhanced="4.3.0"
            ) from exc
        cached = self._usage.get(key)
        if cached is not None:
            cached.size += size
        return Rename(tmp, maildir / "new" / name)


def _write_all(fd: int, data: Buffer) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
