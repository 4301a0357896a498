"""Where each mailbox's Maildir lives and how much it holds.

The layout is Dovecot's (mail_home = <maildir_root>/<domain>/<local part>,
mail_location = maildir:~/Maildir, folders as `.Name` subdirectories). The mail
engine writes into it and the admin reads usage from it, without asking Dovecot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MaildirUsage:
    bytes: int
    messages: int


def maildir_path(root: Path, key: str) -> Path | None:
    """The Maildir of a lookup key (`local@ascii.domain`), or None for a key that could escape."""
    local, _, domain = key.rpartition("@")
    if not local or not domain or "/" in key or local.startswith(".") or domain.startswith("."):
        return None
    return root / domain / local / "Maildir"


def message_size(name: str, directory: Path) -> int:
    """A message's size as Dovecot's quota counts it (quota_vsizes: CRLF line ends).

    From the file name: `,W=` (the CRLF size Dovecot records when it stores with LF),
    else `,S=` (our writer stores CRLF, so the two agree), else the file's size.
    """
    for tag in (",W=", ",S="):
        marker = name.find(tag)
        if marker != -1:
            digits = name[marker + 3 :].split(",", 1)[0].split(":", 1)[0]
            if digits.isdigit():
                return int(digits)
    try:
        return (directory / name).stat().st_size
    except OSError:
        return 0


def _folders(maildir: Path) -> list[Path]:
    """INBOX (the Maildir itself) and every `.Folder` in it, as Dovecot's quota counts."""
    folders = [maildir]
    try:
        with os.scandir(maildir) as entries:
            folders += [Path(e.path) for e in entries if e.name.startswith(".") and e.is_dir()]
    except OSError:
        pass
    return folders


def usage(maildir: Path) -> MaildirUsage:
    """Bytes and messages in all folders of a Maildir (0 if it does not exist yet)."""
    total = count = 0
    for folder in _folders(maildir):
        for sub in ("new", "cur"):
            try:
                names = os.listdir(folder / sub)
            except OSError:  # missing or unreadable
                continue
            count += len(names)
            total += sum(message_size(name, folder / sub) for name in names)
    return MaildirUsage(total, count)
