"""Crash safety: every message that got 250 survives `kill -9` of the server."""

from __future__ import annotations

import signal
import smtplib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.services import aliases, domains, mailboxes, members

from conftest import FAST_HASHING
from mailserver import OFFLINE_DNS, MailServer, provisioned

DOMAIN = "gmina-glusk.pl"
SENDERS = 8
PER_SENDER = 40
KILL_AFTER = 80


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MailServer]:
    env = {
        "MUNINET_PATHS__STATE_DIR": str(tmp_path),
        **OFFLINE_DNS,
        **FAST_HASHING,
    }
    with provisioned(env) as ctx:
        members.create(ctx, "glusk", "Gmina Głusk")
        domains.create(ctx, DOMAIN, member_slug="glusk")
        mailboxes.create(ctx, f"urzad@{DOMAIN}", "glusk", password="correct horse battery")
        aliases.create(ctx, f"wojt@{DOMAIN}", ["wojt.private@example.com"])
    mail = MailServer(env=env, state_dir=tmp_path)
    yield mail
    if mail.process is not None:
        mail.stop()


@pytest.mark.parametrize("durability", ["syncfs", "fsync"])
def test_every_acknowledged_message_survives_kill_9(server: MailServer, durability: str) -> None:
    server.env["MUNINET_SMTP__DURABILITY"] = durability
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


def test_one_failing_mailbox_does_not_lose_the_others(server: MailServer) -> None:
    """A mailbox that cannot be written is queued for retry; the others get their copy."""
    server.start("--no-queue")
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
        client.sendmail("s@example.com", [f"urzad@{DOMAIN}"], b"Subject: first\r\n\r\nx\r\n")
    # A new mailbox whose Maildir cannot be created: a file stands in its place.
    broken = server.state_dir / "mail" / DOMAIN / "sekretariat"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text("not a directory")
    with provisioned(server.env, migrate=False) as ctx:
        mailboxes.create(ctx, f"sekretariat@{DOMAIN}", "glusk", password="correct horse battery")
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
        refused = client.sendmail(
            "s@example.com",
            [f"urzad@{DOMAIN}", f"sekretariat@{DOMAIN}"],
            b"Subject: second\r\n\r\nx\r\n",
        )
    assert refused == {}
    assert len(server.maildir_files(f"urzad@{DOMAIN}")) == 2
    queued = [p.read_bytes() for p in (server.state_dir / "spool" / "queue").glob("*.msg")]
    assert len(queued) == 1
    assert f'"local:sekretariat@{DOMAIN}"'.encode() in queued[0]
    assert b"Subject: second" in queued[0]


def test_database_trouble_answers_4xx(server: MailServer) -> None:
    server.start("--no-queue")
    database = sqlite3.connect(server.state_dir / "muninet.db", isolation_level=None)
    database.execute("ALTER TABLE mailboxes RENAME TO mailboxes_away")  # breaks lookups
    try:
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
            client.ehlo()
            assert client.mail("s@example.com")[0] == 250
            code, text = client.rcpt(f"urzad@{DOMAIN}")
        assert (code, text[:5]) == (451, b"4.3.0"), (code, text)
    finally:
        database.execute("ALTER TABLE mailboxes_away RENAME TO mailboxes")
        database.close()
    assert "Traceback" in server.log()  # logged for the admin, not shown to the client


def test_silent_clients_are_timed_out(server: MailServer) -> None:
    server.env["MUNINET_SMTP__COMMAND_TIMEOUT"] = "1s"
    server.start("--no-queue")
    with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220")
        started = time.monotonic()
        assert reader.readline().startswith(b"421")  # said by the server, then it hangs up
        assert reader.readline() == b""
        assert 0.5 < time.monotonic() - started < 5
