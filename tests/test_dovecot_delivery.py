"""Mail accepted by muninet is read by a real Dovecot: via our Maildir writer and via LMTP."""

from __future__ import annotations

import imaplib
import pwd
import shutil
import smtplib
from collections.abc import Iterator

import pytest

from provisioning.services import domains, mailboxes, members
from provisioning.settings import load_settings

from conftest import FAST_HASHING
from dovecot_server import require_root, start_dovecot, world_traversable_tmp
from mailserver import OFFLINE_DNS, MailServer, free_port, provisioned

PW = "correct horse battery"
IDN = "община-трън.бг"


@pytest.fixture(params=["maildir", "lmtp"])
def stack(request: pytest.FixtureRequest) -> Iterator[tuple[MailServer, int]]:
    require_root()
    state = world_traversable_tmp("muninet-dovecot-")
    imap_port = free_port()
    env = {
        "MUNINET_PATHS__STATE_DIR": str(state),
        "MUNINET_DELIVERY__MAIL_USER": "vmail",
        "MUNINET_DELIVERY__METHOD": request.param,
        "MUNINET_DELIVERY__LMTP_SOCKET": str(state / "dovecot" / "run" / "lmtp"),
        "MUNINET_LISTEN__IMAP_PORT": str(imap_port),
        "MUNINET_LISTEN__IMAPS_PORT": str(free_port()),
        **OFFLINE_DNS,
        **FAST_HASHING,
    }
    with provisioned(env) as ctx:
        members.create(ctx, "glusk", "Gmina Głusk")
        members.create(ctx, "trun", "Община Трън")
        domains.create(ctx, "gmina-glusk.pl", member_slug="glusk")
        domains.create(ctx, IDN, member_slug="trun", utf8_local_parts=True)
        mailboxes.create(ctx, "urzad@gmina-glusk.pl", "glusk", password=PW)
        mailboxes.create(ctx, "sekretariat@gmina-glusk.pl", "glusk", password=PW)
    dovecot = start_dovecot(load_settings(env))
    mail = MailServer(env=env, state_dir=state)
    try:
        mail.start()
        yield mail, imap_port
    finally:
        if mail.process is not None:
            mail.stop()
        dovecot.stop()
        shutil.rmtree(state, ignore_errors=True)


def fetch_all(port: int, login: str) -> list[bytes]:
    client = imaplib.IMAP4("127.0.0.1", port)
    try:
        client.login(login, PW)
        client.select("INBOX")
        _, numbers = client.search(None, "ALL")
        messages = []
        for number in numbers[0].split():
            _, parts = client.fetch(number, "(BODY.PEEK[])")
            messages.append(parts[0][1])
        return messages
    finally:
        client.logout()


def test_accepted_mail_is_read_by_dovecot(stack: tuple[MailServer, int]) -> None:
    mail, imap_port = stack
    message = (
        "From: mieszkaniec@example.com\r\nTo: urzad@gmina-glusk.pl\r\n"
        "Subject: Wniosek o dowód\r\nMessage-ID: <wniosek-1@example.com>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nDzień dobry, zażółć gęślą jaźń.\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=20) as client:
        assert (
            client.sendmail(
                "mieszkaniec@example.com",
                ["urzad@gmina-glusk.pl", "sekretariat@gmina-glusk.pl"],
                message,
                mail_options=["BODY=8BITMIME"],
            )
            == {}
        )
    for login in ("urzad@gmina-glusk.pl", "Sekretariat@gmina-glusk.pl"):
        fetched = fetch_all(imap_port, login)
        assert len(fetched) == 1
        assert fetched[0].endswith(message)  # every byte as sent
        assert b"Received: from" in fetched[0]
        # Only Dovecot's own LMTP delivery adds Return-Path and Delivered-To.
        assert fetched[0].startswith(b"Return-Path:") == (
            mail.env["MUNINET_DELIVERY__METHOD"] == "lmtp"
        )
    maildir = mail.state_dir / "mail" / "gmina-glusk.pl" / "urzad" / "Maildir"
    owner = maildir.stat()
    vmail = pwd.getpwnam("vmail")
    assert (owner.st_uid, owner.st_gid) == (vmail.pw_uid, vmail.pw_gid)
    for path in list((maildir / "cur").iterdir()) + list((maildir / "new").iterdir()):
        assert path.stat().st_uid == vmail.pw_uid
    assert "Traceback" not in mail.log()
