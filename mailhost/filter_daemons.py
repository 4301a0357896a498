"""clamd and rspamd as children of `muninet run`, from the configurations muninet renders.

Like `Dovecot` in mailhost/supervisor.py: `start()` renders, starts the daemon in
the foreground and waits until it answers (clamd: PING -> PONG on its socket;
rspamd: GET /ping -> pong on its normal worker); `stop()` ends it. They are
started only when the settings leave `antivirus.address` / `spam.address` empty;
otherwise muninet uses the daemon named there and starts none.

A missing binary raises FileNotFoundError (the package is not installed); a clamd
without signatures raises ConfigError (clamd would exit at once); a daemon that
exits or stays silent raises RuntimeError with the end of its log.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path

from mailhost.children import ChildProcess
from provisioning.errors import ConfigError
from provisioning.render_filters import ClamdFiles, RspamdFiles, render_clamd, render_rspamd
from provisioning.settings import Settings

log = logging.getLogger(__name__)
SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"
# What a ClamAV database directory holds (freshclam's .cvd/.cld, or custom signatures).
SIGNATURE_SUFFIXES = {
    ".cvd", ".cld", ".cud", ".ndb", ".ndu", ".hdb", ".hdu", ".hsb", ".hsu", ".mdb", ".mdu",
    ".msb", ".msu", ".ldb", ".ldu", ".cdb", ".idb", ".ign2", ".yar", ".yara", ".pdb", ".wdb",
}  # fmt: skip


def clamd_binary() -> str | None:
    return shutil.which("clamd", path=SBIN)


def rspamd_binary() -> str | None:
    return shutil.which("rspamd", path=SBIN)


def _tail(*paths: Path, size: int = 2000) -> str:
    parts = []
    for path in paths:
        if path.exists():
            text = path.read_text(errors="replace")[-size:].strip()
            if text:
                parts.append(f"{path}:\n{text}")
    return "\n".join(parts) or "(no log)"


class _Child(ChildProcess):
    """A filter daemon we started."""

    def _spawn(self, args: list[str], errors: Path) -> subprocess.Popen[bytes]:
        with errors.open("wb") as err:
            return subprocess.Popen(  # noqa: S603 - our own rendered command line
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )


def clamd_ping(path: Path, timeout: float = 1) -> bool:
    """True if a clamd answers PING on the unix socket `path`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b"zPING\0")
            return sock.recv(64).rstrip(b"\0") == b"PONG"
    except OSError:
        return False


class Clamd(_Child):
    """clamd in the foreground (`Foreground yes`) as our child."""

    what = "clamd"

    def __init__(self, settings: Settings, *, tcp_port: int | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.tcp_port = tcp_port
        self.files: ClamdFiles | None = None

    def start(self, timeout: float = 120) -> ClamdFiles:
        """Start clamd and wait for PONG (the official database takes a while to load)."""
        if self.settings.antivirus.address:
            raise ConfigError(
                "antivirus.address is set: muninet scans with that clamd and starts none"
            )
        binary = clamd_binary()
        if binary is None:
            raise FileNotFoundError("clamd")
        files = render_clamd(self.settings, tcp_port=self.tcp_port)
        self.files = files
        if not any(
            p.suffix in SIGNATURE_SUFFIXES for p in files.database_dir.glob("*") if p.is_file()
        ):
            raise ConfigError(
                f"ClamAV has no signatures in {files.database_dir}: run freshclam "
                "(package clamav-freshclam) or set antivirus.database_dir"
            )
        files.socket.unlink(missing_ok=True)
        errors = files.config.with_name("clamd.err")
        self.process = self._spawn([binary, "-c", str(files.config)], errors)
        deadline = time.monotonic() + timeout
        while not clamd_ping(files.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"clamd did not start; {_tail(errors, files.log)}")
            time.sleep(0.05)
        log.info("clamd (pid %d) scanning at %s", self.process.pid, files.socket)
        return files


def rspamd_ping(path: Path, timeout: float = 1) -> bool:
    """True if rspamd's worker on the unix socket `path` answers GET /ping with pong."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
    except OSError:
        return False
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.startswith(b"HTTP/1.") and b" 200 " in head[:16] and body.strip() == b"pong"


class Rspamd(_Child):
    """rspamd in the foreground (`rspamd -f`) with Debian's rules and our local configuration.

    The first start compiles the rules into <state_dir>/rspamd/db (~10 s); later
    starts with that directory kept take under a second.
    """

    what = "rspamd"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.files: RspamdFiles | None = None

    def start(self, timeout: float = 90) -> RspamdFiles:
        if self.settings.spam.address:
            raise ConfigError("spam.address is set: muninet uses that rspamd and starts none")
        binary = rspamd_binary()
        if binary is None:
            raise FileNotFoundError("rspamd")
        files = render_rspamd(self.settings)
        self.files = files
        files.socket.unlink(missing_ok=True)
        files.controller_socket.unlink(missing_ok=True)
        errors = files.log_dir / "rspamd.err"
        self.process = self._spawn(files.command(binary), errors)
        deadline = time.monotonic() + timeout
        while not rspamd_ping(files.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rspamd did not start; {_tail(errors, files.log)}")
            time.sleep(0.1)
        log.info("rspamd (pid %d) checking mail at %s", self.process.pid, files.socket)
        return files
