"""A real Dovecot for tests, started from the configuration muninet renders."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from provisioning.render import DovecotFiles, render_dovecot
from provisioning.settings import Settings

from conftest import missing


def start_dovecot(settings: Settings) -> DovecotFiles:
    """Render and start Dovecot; returns its files (stop it with stop_dovecot)."""
    if shutil.which("dovecot", path="/usr/sbin:/usr/bin") is None:
        missing("dovecot (dovecot-imapd, dovecot-lmtpd, dovecot-sqlite, dovecot-pgsql)")
    files = render_dovecot(settings, auth_penalty=False)
    check = subprocess.run(
        ["doveconf", "-n", "-c", str(files.config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    subprocess.run(["dovecot", "-c", str(files.config)], check=True)
    deadline = time.monotonic() + 10
    while not files.lmtp_socket.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(files.log.read_text() if files.log.exists() else "no log")
        time.sleep(0.05)
    return files


def stop_dovecot(files: DovecotFiles) -> None:
    pid_file = files.base_dir / "master.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def world_traversable_tmp(prefix: str) -> Path:
    """A temp dir the mail user can traverse (pytest's own tmp dirs are 0700 root)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o711)
    return path
