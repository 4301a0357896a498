"""A real `muninet smtpd` process for tests, on free 127.0.0.1 ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.audit import Actor
from provisioning.db import Database
from provisioning.services.context import ServiceContext
from provisioning.settings import load_settings

from conftest import free_port

MUNINET = Path(sys.executable).parent / "muninet"
# The content filters need their daemons; tests that want them set these to true
# and point the filters at the daemons they started.
NO_FILTERS = {
    "MUNINET_ANTIVIRUS__ENABLED": "false",
    "MUNINET_SPAM__ENABLED": "false",
    "MUNINET_SENDER_AUTH__ENABLED": "false",
}

# Outbound lookups go to a loopback port where nothing answers: no traffic leaves.
OFFLINE_DNS = {
    "MUNINET_DNS__NAMESERVERS": "127.0.0.1",
    "MUNINET_DNS__PORT": "9",
    "MUNINET_DNS__TIMEOUT": "1s",
}


@contextmanager
def provisioned(env: dict[str, str], *, migrate: bool = True) -> Iterator[ServiceContext]:
    """One committed unit of work on the database `env` names (migrated first)."""
    settings = load_settings(env)
    database = Database.from_settings(settings)
    try:
        if migrate:
            database.upgrade()
        with database.transaction() as session:
            yield ServiceContext(session=session, actor=Actor("cli", "test"), settings=settings)
    finally:
        database.dispose()


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"smtpd exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"smtpd did not listen on {port}")


@dataclass
class MailServer:
    env: dict[str, str]
    state_dir: Path
    smtp_port: int = field(default_factory=free_port)
    submission_port: int = field(default_factory=free_port)
    smtps_port: int = field(default_factory=free_port)
    # The loopback port for Sieve replies; a test running Dovecot fixes it in env.
    local_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def __post_init__(self) -> None:
        if "MUNINET_LISTEN__LOCAL_PORT" in self.env:
            self.local_port = int(self.env["MUNINET_LISTEN__LOCAL_PORT"])

    @property
    def full_env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MUNINET_")}
        return {
            **base,
            **NO_FILTERS,
            **self.env,
            "MUNINET_LISTEN__SMTP_PORT": str(self.smtp_port),
            "MUNINET_LISTEN__SUBMISSION_PORT": str(self.submission_port),
            "MUNINET_LISTEN__SMTPS_PORT": str(self.smtps_port),
            "MUNINET_LISTEN__LOCAL_PORT": str(self.local_port),
            "MUNINET_ASSOCIATION__HOSTNAME": "mail.test.example",
        }

    def start(self, *args: str) -> None:
        """Start smtpd; if another process took a chosen port meanwhile, pick new ones."""
        for attempt in range(3):
            self.log_path = self.state_dir / f"smtpd-{time.time_ns()}.log"
            log = open(self.log_path, "wb")  # noqa: SIM115 - the process owns it
            self.process = subprocess.Popen(
                [str(MUNINET), "smtpd", *args], env=self.full_env, stdout=log, stderr=log
            )
            try:
                wait_for_port(self.smtps_port, self.process)
                return
            except RuntimeError:
                if attempt == 2 or "cannot listen on" not in self.log():
                    raise
                self.process = None
                self.smtp_port, self.submission_port = free_port(), free_port()
                self.smtps_port = free_port()
                if "MUNINET_LISTEN__LOCAL_PORT" not in self.env:
                    self.local_port = free_port()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.process = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def maildir_files(self, key: str, sub: str = "new") -> list[Path]:
        local, _, domain = key.rpartition("@")
        directory = self.state_dir / "mail" / domain / local / "Maildir" / sub
        return sorted(directory.iterdir()) if directory.exists() else []
