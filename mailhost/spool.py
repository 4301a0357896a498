"""The durable mail spool: messages waiting for remote delivery or a local retry.

Layout under <state_dir>/spool:
  tmp/<id>           a message being written (never acknowledged; removed on start)
  queue/<id>.msg     one JSON header line, then the message bytes exactly as received
  queue/<id>.state   delivery progress (pending recipients, attempts, next try);
                     absent means "nothing tried yet"
  corrupt/           files that failed their integrity check at start-up

A message file is immutable once committed; its header records the data size, so a
file torn by a crash (it was never acknowledged) is recognised and set aside. The
state file is replaced atomically; losing an update can only cause a duplicate
delivery, never a loss.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mailhost.durability import GroupCommitter, Rename

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview
LOCAL_PREFIX = "local:"  # recipients that are hosted mailboxes (key follows)


def new_id() -> str:
    """Sortable by arrival: microseconds since the epoch in hex, plus randomness."""
    return f"{time.time_ns() // 1000:014x}{secrets.token_hex(4)}"


@dataclass
class MessageHeader:
    id: str
    mail_from: str  # "" is the null sender (bounces)
    recipients: list[str]  # remote addresses, or LOCAL_PREFIX + mailbox key
    received_at: float
    size: int
    smtputf8: bool = False
    auth_user: str | None = None

    def encode(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False).encode() + b"\n"


@dataclass
class DeliveryState:
    pending: list[str]
    attempts: int = 0
    next_attempt: float = 0.0
    last_errors: dict[str, str] = field(default_factory=dict)
    delivered: list[str] = field(default_factory=list)


@dataclass
class QueuedMessage:
    header: MessageHeader
    state: DeliveryState

    @property
    def id(self) -> str:
        return self.header.id


class Spool:
    def __init__(self, root: Path, committer: GroupCommitter) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.queue = root / "queue"
        self.corrupt = root / "corrupt"
        for directory in (self.tmp, self.queue, self.corrupt):
            directory.mkdir(parents=True, exist_ok=True)
        self.committer = committer

    # -- writing ----------------------------------------------------------------------------

    def prepare(self, header: MessageHeader, data: Buffer | Sequence[Buffer]) -> Rename:
        """Write a message to tmp/ (not yet durable); commit the returned rename to queue it.

        `data` may come in parts (e.g. our Received header and the client's bytes) so a
        large message is never copied just to prepend a line.
        """
        parts = [data] if isinstance(data, bytes | bytearray | memoryview) else list(data)
        header.size = sum(len(part) for part in parts)
        tmp = self.tmp / header.id
        with open(tmp, "wb") as handle:
            handle.write(header.encode())
            for part in parts:
                handle.write(part)
            if self.committer.writers_fsync:
                handle.flush()
                os.fsync(handle.fileno())
        return Rename(tmp, self.queue / f"{header.id}.msg")

    def enqueue(self, header: MessageHeader, data: Buffer | Sequence[Buffer]) -> str:
        """Write and durably queue a message (blocking; for threads and the CLI)."""
        self.committer.commit_sync([self.prepare(header, data)])
        return header.id

    # -- reading ----------------------------------------------------------------------------

    def ids(self) -> list[str]:
        return sorted(p.name[:-4] for p in self.queue.glob("*.msg"))

    def _paths(self, message_id: str) -> tuple[Path, Path]:
        if not message_id.isalnum():
            raise KeyError(message_id)
        return self.queue / f"{message_id}.msg", self.queue / f"{message_id}.state"

    def load(self, message_id: str) -> QueuedMessage:
        """The header and delivery state of a queued message (KeyError if absent)."""
        msg_path, state_path = self._paths(message_id)
        try:
            with open(msg_path, "rb") as handle:
                header = MessageHeader(**json.loads(handle.readline()))
        except FileNotFoundError:
            raise KeyError(message_id) from None
        try:
            state = DeliveryState(**json.loads(state_path.read_bytes()))
        except (FileNotFoundError, ValueError, TypeError):
            state = DeliveryState(pending=list(header.recipients))
        return QueuedMessage(header, state)

    def read_data(self, message_id: str) -> bytes:
        msg_path, _ = self._paths(message_id)
        with open(msg_path, "rb") as handle:
            handle.readline()
            return handle.read()

    def save_state(self, message_id: str, state: DeliveryState) -> None:
        _, state_path = self._paths(message_id)
        tmp = self.tmp / f"{message_id}.state"
        tmp.write_text(json.dumps(asdict(state), ensure_ascii=False))
        os.replace(tmp, state_path)

    def remove(self, message_id: str) -> None:
        for path in self._paths(message_id):
            path.unlink(missing_ok=True)

    # -- start-up ---------------------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """Drop never-acknowledged tmp files; set aside torn queue files. Returns counts."""
        removed = 0
        for path in self.tmp.iterdir():
            path.unlink(missing_ok=True)
            removed += 1
        corrupt = 0
        for msg_path in self.queue.glob("*.msg"):
            if not _intact(msg_path):
                log.error("spool file %s is torn; moved to %s", msg_path.name, self.corrupt)
                os.replace(msg_path, self.corrupt / msg_path.name)
                corrupt += 1
        return {"tmp_removed": removed, "corrupt": corrupt, "queued": len(self.ids())}


def _intact(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            first = handle.readline()
            header: dict[str, Any] = json.loads(first)
            return bool(os.fstat(handle.fileno()).st_size - len(first) == header["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
