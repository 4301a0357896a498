"""A copy of refused messages for the admin: `<dir>/<time>-<token>.eml` plus a `.json`.

The files are mode 0600 in a 0700 directory: quarantined mail may hold live malware
and private correspondence. Writing happens in a thread, never on the event loop.
A failed write is logged and does not change the verdict.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from mailhost.filters.base import MessageInfo

log = logging.getLogger(__name__)


class Quarantine:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def store(self, message: MessageInfo, reason: str, detail: str) -> Path | None:
        """Keep the message; its path, or None if it could not be written."""
        try:
            return await asyncio.to_thread(self._store, message, reason, detail)
        except OSError as exc:
            log.error("could not quarantine a message (%s: %s): %s", reason, detail, exc)
            return None

    def _store(self, message: MessageInfo, reason: str, detail: str) -> Path:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        now = datetime.now(UTC)
        stem = f"{now:%Y%m%dT%H%M%S}Z-{secrets.token_hex(6)}"
        path = self.directory / f"{stem}.eml"
        _write_new(path, message.data)
        meta = {
            "time": now.isoformat(timespec="seconds"),
            "reason": reason,
            "detail": detail,
            "mail_from": message.mail_from,
            "recipients": message.recipients,
            "client_ip": message.client_ip,
            "helo": message.helo,
            "auth_user": message.auth_user,
            "size": len(message.data),
        }
        _write_new(
            self.directory / f"{stem}.json",
            json.dumps(meta, ensure_ascii=False, indent=1).encode(),
        )
        log.info("quarantined %s (%s: %s)", path, reason, detail)
        return path


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
