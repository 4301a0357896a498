"""Daemons that `muninet run` starts beside the mail engine, from rendered configurations."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import time

from mailhost.children import ChildProcess
from provisioning.render import DovecotFiles, render_dovecot
from provisioning.settings import Settings

log = logging.getLogger(__name__)
SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"


def dovecot_binary() -> str | None:
    return shutil.which("dovecot", path=SBIN)


class Dovecot(ChildProcess):
    """Dovecot in the foreground (`dovecot -F`) as our child: it lives and dies with us."""

    what = "Dovecot"

    def __init__(self, settings: Settings, *, auth_penalty: bool = True) -> None:
        self.settings = settings
        self.auth_penalty = auth_penalty
        self.files: DovecotFiles | None = None

    def start(self, timeout: float = 15) -> DovecotFiles:
        binary = dovecot_binary()
        if binary is None:
            raise FileNotFoundError("dovecot")
        files = render_dovecot(self.settings, auth_penalty=self.auth_penalty)
        self.files = files
        files.lmtp_socket.unlink(missing_ok=True)
        self.process = subprocess.Popen([binary, "-F", "-c", str(files.config)])  # noqa: S603
        deadline = time.monotonic() + timeout
        while not files.lmtp_socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = files.log.read_text(errors="replace")[-2000:] if files.log.exists() else ""
                raise RuntimeError(f"Dovecot did not start; its log ends:\n{tail}")
            time.sleep(0.05)
        log.info(
            "Dovecot (pid %d) serving IMAP on %s:%d and %d, LMTP at %s",
            self.process.pid,
            self.settings.listen.address,
            self.settings.listen.imap_port,
            self.settings.listen.imaps_port,
            files.lmtp_socket,
        )
        return files


class WebServer(ChildProcess):
    """The web face (autoconfig, later the admin) under gunicorn, as in production."""

    what = "the web server"

    def __init__(self, settings: Settings, *, workers: int = 2) -> None:
        self.settings = settings
        self.workers = workers

    @property
    def bind(self) -> str:
        address = self.settings.listen.address
        host = f"[{address}]" if ":" in address else address
        return f"{host}:{self.settings.listen.admin_port}"

    def start(self, timeout: float = 20) -> None:
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            self.bind,
            "--workers",
            str(self.workers),
            "--log-level",
            "warning",
            "admin_ui.wsgi:app",
        ]
        self.process = subprocess.Popen(command)  # noqa: S603 - our own interpreter
        deadline = time.monotonic() + timeout
        address, port = self.settings.listen.address, self.settings.listen.admin_port
        while True:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"the web server did not start on {self.bind}")
            try:
                socket.create_connection((address, port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the web server did not answer on {self.bind}") from None
                time.sleep(0.1)
