"""A running `muninet smtpd` relays submitted mail out, retries, and bounces to a local sender."""

from __future__ import annotations

import email
import smtplib
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provisioning.services import domains, mailboxes, members

from conftest import FAST_HASHING
from mailserver import OFFLINE_DNS, MailServer, provisioned
from remote_mx import RemoteMx, remote_server

PW = "correct horse battery"
SENDER = "urzad@gmina-glusk.pl"


@pytest.fixture
def remote() -> Iterator[RemoteMx]:
    with remote_server() as handler:
        handler.reject["nobody@example.com"] = "550 5.1.1 no such user"
        handler.defer["later@example.com"] = 1
        yield handler


@pytest.fixture
def mail(tmp_path: Path, remote: RemoteMx) -> Iterator[MailServer]:
    env = {
        "MUNINET_PATHS__STATE_DIR": str(tmp_path),
        "MUNINET_RELAY__SMARTHOST": f"127.0.0.1:{remote.port}",
        "MUNINET_RELAY__REQUIRE_TLS": "false",
        "MUNINET_QUEUE__RETRY_SCHEDULE": "1s",
        "MUNINET_QUEUE__SCAN_INTERVAL": "0.2s",
        **OFFLINE_DNS,
        **FAST_HASHING,
    }
    with provisioned(env) as ctx:
        members.create(ctx, "glusk", "Gmina Głusk")
        domains.create(ctx, "gmina-glusk.pl", member_slug="glusk")
        mailboxes.create(ctx, SENDER, "glusk", password=PW)
    server = MailServer(env=env, state_dir=tmp_path)
    server.start()
    yield server
    if server.process is not None:
        server.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_relay_retry_and_bounce(mail: MailServer, remote: RemoteMx) -> None:
    with smtplib.SMTP("127.0.0.1", mail.submission_port, timeout=20) as client:
        client.starttls(context=ssl._create_unverified_context())
        client.login(SENDER, PW)
        for rcpt in ("partner@example.com", "later@example.com", "nobody@example.com"):
            client.sendmail(SENDER, [rcpt], f"Subject: to {rcpt}\r\n\r\nhello\r\n".encode())

    wait_for(lambda: sorted(remote.recipients()) == ["later@example.com", "partner@example.com"])
    bounce_files: list[Path] = []

    def bounced() -> bool:
        bounce_files[:] = mail.maildir_files(SENDER)
        return len(bounce_files) == 1

    wait_for(bounced)
    wait_for(lambda: list((mail.state_dir / "spool" / "queue").iterdir()) == [])
    dsn = email.message_from_bytes(bounce_files[0].read_bytes())
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert "nobody@example.com" in bounce_files[0].read_text()
    assert "Status: 5.1.1" in bounce_files[0].read_text()
    assert all(r.mail_from == SENDER for r in remote.received)
    assert "Traceback" not in mail.log()
