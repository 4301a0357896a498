"""The durable mail spool: messages waiting for remote delivery or a local retry.

The on-disk format (layout, header and state files, locking) is defined once in
`provisioning.queue`, the small interface the admin and the CLI also use; this
module adds what only the engine does: group-committed writes (many sessions' files
made durable by one flush, `mailhost.durability`) and the start-up recovery.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from mailhost.durability import GroupCommitter, Rename
from provisioning.queue import (
    LOCAL_PREFIX,
    Buffer,
    DeliveryState,
    MessageBusy,
    MessageHeader,
    QueueDir,
    QueuedMessage,
    new_id,
)

__all__ = [
    "LOCAL_PREFIX",
    "Buffer",
    "DeliveryState",
    "MessageBusy",
    "MessageHeader",
    "QueuedMessage",
    "Spool",
    "new_id",
]

log = logging.getLogger(__name__)


class Spool(QueueDir):
    def __init__(self, root: Path, committer: GroupCommitter) -> None:
        super().__init__(root)
        self.committer = committer

    # -- writing ----------------------------------------------------------------------------

    def prepare(self, header: MessageHeader, data: Buffer | Sequence[Buffer]) -> Rename:
        """Write a message to tmp/ (not yet durable); commit the returned rename to queue it.

        Writers fsync their own file only when the committer's mode asks for it
        (otherwise one syncfs per batch covers every file).
        """
        tmp, target = self.write_tmp(header, data, fsync=self.committer.writers_fsync)
        return Rename(tmp, target)

    def enqueue(self, header: MessageHeader, data: Buffer | Sequence[Buffer]) -> str:
        """Write and durably queue a message (blocking; for threads and the CLI)."""
        self.committer.commit_sync([self.prepare(header, data)])
        return header.id

    # -- start-up ---------------------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """Drop never-acknowledged tmp files; set aside torn queue files. Returns counts."""
        removed = 0
        for path in self.tmp.iterdir():
            path.unlink(missing_ok=True)
            removed += 1
        corrupt = 0
        for msg_path in self.queue.glob("*.msg"):
            if not self.intact(msg_path):
                log.error("spool file %s is torn; moved to %s", msg_path.name, self.corrupt)
                os.replace(msg_path, self.corrupt / msg_path.name)
                corrupt += 1
        return {"tmp_removed": removed, "corrupt": corrupt, "queued": len(self.ids())}
