"""Crash safety: every message that got 250 survives `kill -9` of the server."""

from __future__ import annotations

import signal
import smtplib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.audit import Actor
from provisioning.db import Database
from provisioning.services import aliases, domains, mailboxes, members
from provisioning.services.context import ServiceContext
from provisioning.settings import load_settings

from conftest import FAST_HASHING
from mailserver import MailServer

DOMAIN = "gmina-glusk.pl"
SENDERS = 8
PER_SENDER = 40
KILL_AFTER = 80


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MailServer]:
    env = {
        "MUNINET_PATHS__STATE_DIR": str(tmp_path),
        "MUNINET_DNS__NAMESERVERS": "127.0.0.1",
        "MUNINET_DNS__PORT": "9",
        "MUNINET_DNS__TIMEOUT": "1s",
        **FAST_HASHING,
    }
    settings = load_settings(env)
    db = Database.from_settings(settings)
    db.upgrade()
    with db.transaction() as session:
        ctx = ServiceContext(session=session, actor=Actor("cli", "test"), settings=settings)
        members.create(ctx, "glusk", "Gmina Głusk")
        domains.create(ctx, DOMAIN, member_slug="glusk")
        mailboxes.create(ctx, f"urzad@{DOMAIN}", "glusk", password="correct horse battery")
        aliases.create(ctx, f"wojt@{DOMAIN}", ["wojt.private@example.com"])
    db.dispose()
    mail = MailServer(env=env, state_dir=tmp_path)
    yield mail
    if mail.process is not None:
        mail.stop()


def test_every_acknowledged_message_survives_kill_9(server: MailServer) -> None:
    server.start("--no-queue")
    acked: list[str] = []
    lock = threading.Lock()
    killed = threading.Event()
    errors: list[str] = []

    def send(sender: int) -> None:
        for n in range(PER_SENDER):
            if killed.is_set():
                return
            message_id = f"crash-{sender}-{n}"
            message = (
                f"From: s{sender}@example.com\r\nSubject: {message_id}\r\n"
                f"Message-ID: <{message_id}@example.com>\r\n\r\n" + ("x" * 78 + "\r\n") * 50
            ).encode()
            try:
                with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
                    refused = client.sendmail(
                        f"s{sender}@example.com", [f"urzad@{DOMAIN}", f"wojt@{DOMAIN}"], message
                    )
                assert refused == {}
            except (OSError, smtplib.SMTPException) as exc:
                if not killed.is_set():
                    errors.append(repr(exc))
                return  # the server died under us: this message was never acknowledged
            with lock:
                acked.append(message_id)
                if len(acked) == KILL_AFTER and not killed.is_set():
                    killed.set()
                    assert server.process is not None
                    server.process.send_signal(signal.SIGKILL)

    threads = [threading.Thread(target=send, args=(s,)) for s in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]
    assert killed.is_set(), "the server was not killed mid-run"
    assert server.process is not None
    server.process.wait(timeout=10)
    server.process = None

    server.start("--no-queue")  # recovery runs at start
    stored = {
        line.split(b": ", 1)[1].strip().decode()
        for path in server.maildir_files(f"urzad@{DOMAIN}")
        for line in path.read_bytes().split(b"\r\n")
        if line.startswith(b"Subject: ")
    }
    queued = {
        line.split(b": ", 1)[1].strip().decode()
        for path in (server.state_dir / "spool" / "queue").glob("*.msg")
        for line in path.read_bytes().split(b"\r\n")
        if line.startswith(b"Subject: ")
    }
    assert len(acked) >= KILL_AFTER
    missing_local = set(acked) - stored
    missing_remote = set(acked) - queued
    assert not missing_local, f"acknowledged but not in the Maildir: {sorted(missing_local)}"
    assert not missing_remote, f"acknowledged but not in the spool: {sorted(missing_remote)}"
    assert list((server.state_dir / "spool" / "tmp").iterdir()) == []
    assert "Traceback" not in server.log()


def test_worker_processes_share_the_port(server: MailServer) -> None:
    server.start("--workers", "2", "--no-queue")
    for n in range(40):
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
            client.sendmail(
                "s@example.com", [f"urzad@{DOMAIN}"], f"Subject: w{n}\r\n\r\nx\r\n".encode()
            )
    assert len(server.maildir_files(f"urzad@{DOMAIN}")) == 40
    assert server.stop() == 0
    pids = {
        line.split("(pid ")[1].split(")")[0]
        for line in server.log().splitlines()
        if "listening on" in line
    }
    assert len(pids) == 2
