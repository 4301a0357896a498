"""The mail queue on disk: the small interface between the admin and the mail engine.

The web admin and the CLI look into the queue and steer it (list, retry now, delete)
through this module; the engine (`mailhost.spool.Spool`) builds its writing and
recovery on the same class, so the on-disk format is defined in this one place and
neither face imports the other.

Layout under <state_dir>/spool:
  tmp/<id>           a message being written (never acknowledged; removed on start)
  queue/<id>.msg     one JSON header line, then the message bytes exactly as received
  queue/<id>.state   delivery progress (pending recipients, attempts, next try);
                     absent means "nothing tried yet"
  corrupt/           files that failed their integrity check at start-up

A message file is immutable once committed (written to tmp/, fsynced, renamed into
queue/, directory synced); its header records the data size, so a file torn by a
crash (it was never acknowledged) is recognised and set aside. The state file is
replaced atomically (tmp/ then rename); losing an update can only cause a duplicate
delivery or a late retry, never a loss.

Processes coordinate through an exclusive `flock` on queue/<id>.msg, held while a
message is delivered or its state changed: a retry or delete from the admin never
races the engine's delivery of the same message.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from provisioning.errors import Conflict, MuninetError, NotFound
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings

Buffer = bytes | bytearray | memoryview
LOCAL_PREFIX = "local:"  # recipients that are hosted mailboxes (key follows)
SPOOL_DIR = "spool"


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

    @property
    def last_error(self) -> str:
        """The error of the first recipient still pending that has one ("" if none)."""
        errors = self.state.last_errors
        return next((errors[r] for r in self.state.pending if r in errors), "")


class MessageBusy(Exception):
    """Another process holds the message (it is being delivered right now)."""


def fsync_path(path: Path) -> None:
    """Flush a file or a directory (a rename is durable once its directory is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class QueueDir:
    """Reads and changes the files of one spool directory (see the module docstring)."""

    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.queue = root / "queue"
        self.corrupt = root / "corrupt"
        if create:
            for directory in (self.tmp, self.queue, self.corrupt):
                directory.mkdir(parents=True, exist_ok=True)

    # -- writing ----------------------------------------------------------------------------

    def write_tmp(
        self, header: MessageHeader, data: Buffer | Sequence[Buffer], *, fsync: bool
    ) -> tuple[Path, Path]:
        """Write a message to tmp/ (sets header.size); returns (tmp path, its queue path).

        The message is queued only once tmp is renamed to the queue path and that
        rename is durable; `data` may come in parts so a large message is never copied.
        """
        parts = [data] if isinstance(data, bytes | bytearray | memoryview) else list(data)
        header.size = sum(len(part) for part in parts)
        tmp = self.tmp / header.id
        with open(tmp, "wb") as handle:
            handle.write(header.encode())
            for part in parts:
                handle.write(part)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        return tmp, self.queue / f"{header.id}.msg"

    def enqueue(self, header: MessageHeader, data: Buffer | Sequence[Buffer]) -> str:
        """Write and durably queue one message by itself (fsync, rename, directory fsync).

        The engine batches many messages per flush instead (`mailhost.spool.Spool`).
        """
        tmp, target = self.write_tmp(header, data, fsync=True)
        os.rename(tmp, target)
        fsync_path(self.queue)
        return header.id

    def save_state(self, message_id: str, state: DeliveryState) -> None:
        """Replace the delivery state atomically (written in tmp/, renamed over the old)."""
        _, state_path = self._paths(message_id)
        tmp = self.tmp / f"{message_id}.state"
        tmp.write_text(json.dumps(asdict(state), ensure_ascii=False))
        os.replace(tmp, state_path)

    def remove(self, message_id: str) -> None:
        for path in self._paths(message_id):
            path.unlink(missing_ok=True)

    # -- reading ----------------------------------------------------------------------------

    def ids(self) -> list[str]:
        """Queued message ids, oldest first (ids sort by arrival)."""
        return sorted(p.name[:-4] for p in self.queue.glob("*.msg"))

    def _paths(self, message_id: str) -> tuple[Path, Path]:
        if not message_id.isalnum() or not message_id.isascii():
            raise KeyError(message_id)
        return self.queue / f"{message_id}.msg", self.queue / f"{message_id}.state"

    def load(self, message_id: str) -> QueuedMessage:
        """The header and delivery state (KeyError if absent; ValueError/TypeError if torn)."""
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

    def messages(self) -> list[QueuedMessage]:
        """Every readable queued message, oldest first."""
        found = []
        for mid in self.ids():
            try:
                found.append(self.load(mid))
            except (KeyError, ValueError, TypeError):
                continue  # delivered while we looked, or torn (set aside at the next start)
        return found

    @staticmethod
    def intact(path: Path) -> bool:
        """True if a message file holds as many data bytes as its header says."""
        try:
            with open(path, "rb") as handle:
                first = handle.readline()
                header: dict[str, Any] = json.loads(first)
                return bool(os.fstat(handle.fileno()).st_size - len(first) == header["size"])
        except (OSError, ValueError, KeyError, TypeError):
            return False

    # -- locking ----------------------------------------------------------------------------

    def acquire(self, message_id: str) -> int:
        """An open descriptor holding the message's lock, for a holder that outlives one
        block (the queue runner across a delivery); KeyError if gone, MessageBusy if held."""
        msg_path, _ = self._paths(message_id)
        try:
            fd = os.open(msg_path, os.O_RDONLY)
        except FileNotFoundError:
            raise KeyError(message_id) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise MessageBusy(message_id) from None
            # The holder may have finished the message and removed (or replaced) the file.
            try:
                current = os.stat(msg_path).st_ino
            except FileNotFoundError:
                current = -1
            if current != os.fstat(fd).st_ino:
                raise KeyError(message_id)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextmanager
    def lock(self, message_id: str) -> Iterator[None]:
        """Hold a message exclusively (KeyError if it is gone, MessageBusy if taken)."""
        fd = self.acquire(message_id)
        try:
            yield
        finally:
            os.close(fd)


# -- the faces' interface: settings in, MuninetError out -----------------------------------


def spool_root(settings: Settings) -> Path:
    return settings.state_dir / SPOOL_DIR


def open_queue(settings: Settings) -> QueueDir:
    """The spool for reading and steering; creates nothing (an absent spool is empty)."""
    return QueueDir(spool_root(settings), create=False)


def page(queue: QueueDir, offset: int, limit: int) -> tuple[list[QueuedMessage], int]:
    """(readable messages among ids[offset:offset+limit], count of ids), oldest first.

    Only the page's files are read, so a long queue costs one directory listing.
    """
    ids = queue.ids()
    found = []
    for mid in ids[offset : offset + limit]:
        try:
            found.append(queue.load(mid))
        except (KeyError, ValueError, TypeError):
            continue
    return found, len(ids)


def get(queue: QueueDir, message_id: str) -> QueuedMessage:
    try:
        return queue.load(message_id)
    except KeyError:
        raise NotFound("no queued message %(message_id)s", message_id=message_id) from None
    except (ValueError, TypeError) as exc:
        raise MuninetError(f"queued message {message_id} is unreadable: {exc}") from None


def make_due(queue: QueueDir, message_id: str | None = None) -> int:
    """Make one message (NotFound if unknown) or all of them due now; returns how many.

    A message being delivered right now counts as done: it is being tried, as asked.
    """
    ids = [message_id] if message_id is not None else queue.ids()
    count = 0
    for mid in ids:
        try:
            with queue.lock(mid):
                message = queue.load(mid)
                message.state.next_attempt = 0.0
                queue.save_state(mid, message.state)
                count += 1
        except MessageBusy:
            count += 1
        except KeyError:
            if message_id is not None:
                raise NotFound("no queued message %(message_id)s", message_id=message_id) from None
    return count


def delete(queue: QueueDir, message_id: str) -> QueuedMessage:
    """Remove a message without notifying anyone; returns what was removed."""
    try:
        with queue.lock(message_id):
            message = get(queue, message_id)
            queue.remove(message_id)
    except KeyError:
        raise NotFound("no queued message %(message_id)s", message_id=message_id) from None
    except MessageBusy:
        raise Conflict(
            "message %(message_id)s is being delivered right now", message_id=message_id
        ) from None
    return message


def _summary(message: QueuedMessage) -> dict[str, Any]:
    return {"sender": message.header.mail_from, "pending": list(message.state.pending)}


def retry_audited(ctx: ServiceContext, message_id: str) -> None:
    """The admin's "retry now": the message is due at the engine's next scan."""
    queue = open_queue(ctx.settings)
    message = get(queue, message_id)
    ctx.audit("queue.retry", message_id, **_summary(message))
    ctx.session.flush()  # the audit row is written before the file changes
    make_due(queue, message_id)


def delete_audited(ctx: ServiceContext, message_id: str) -> None:
    """The admin's "delete": the message is gone, its sender is not told."""
    queue = open_queue(ctx.settings)
    ctx.audit("queue.delete", message_id, **_summary(get(queue, message_id)))
    ctx.session.flush()
    delete(queue, message_id)
