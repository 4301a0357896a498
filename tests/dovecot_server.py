"""A real Dovecot for tests, started from the configuration muninet renders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mailhost.supervisor import Dovecot, dovecot_binary
from provisioning.settings import Settings

from conftest import missing


def require_root() -> None:
    """Dovecot serves mail as the mail user, which only root can switch to."""
    if os.geteuid() != 0:
        missing("root (Dovecot as a mail server switches to the mail user)")


def start_dovecot(settings: Settings) -> Dovecot:
    """Render and start Dovecot (no auth penalty: tests log in wrongly on purpose)."""
    if dovecot_binary() is None:
        missing("dovecot (dovecot-imapd, dovecot-lmtpd, dovecot-sqlite, dovecot-pgsql)")
    dovecot = Dovecot(settings, auth_penalty=False)
    dovecot.start()
    return dovecot


def world_traversable_tmp(prefix: str) -> Path:
    """A temp dir the mail user can traverse (pytest's own tmp dirs are 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o711)
    return path
