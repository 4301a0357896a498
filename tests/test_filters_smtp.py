"""The content filters in the SMTP conversation, end to end with real daemons.

muninet's smtpd with real clamd and rspamd, delivering through real Dovecot with
its Sieve rule: a virus and GTUBE are refused before `250`, a borderline message is
tagged and filed into Junk, clean mail lands in the INBOX, and clamd down is `451`.
"""

from __future__ import annotations

import imaplib
import shutil
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from mailhost.filter_daemons import Clamd
from provisioning.services import domains, mailboxes, members
from provisioning.settings import load_settings

from conftest import FAST_HASHING
from dovecot_server import require_root, start_dovecot, world_traversable_tmp
from filter_daemons import (
    EICAR,
    EICAR_SIGNATURE,
    GTUBE,
    FilterEnv,
    RunningClamd,
    attachment_message,
    plain_message,
    start_clamd,
    zipped,
)
from mailserver import MailServer, free_port, provisioned

pytest_plugins = ["filter_daemons"]
PW = "correct horse battery"
TO = "sekretariat@info.association.pl"
# No From, To, Date or Message-ID: rspamd's MISSING_* rules put it between the
# default add-header (6) and reject (15) scores; test_filters_spam.py checks that.
BORDERLINE = b"Subject: zaproszenie\r\n\r\nZapraszamy na spotkanie w sprawie funduszy.\r\n"
CLEAN = plain_message("Dzień dobry,\n\nprzesyłam porządek obrad sesji rady gminy.\n")


@dataclass
class Stack:
    mail: MailServer
    imap_port: int
    env: dict[str, str]


def stack_env(filter_env: FilterEnv, clamd_socket: str, rspamd_socket: str) -> dict[str, str]:
    state = world_traversable_tmp("muninet-filtered-")
    return {
        **filter_env.env,
        "MUNINET_PATHS__STATE_DIR": str(state),
        "MUNINET_DELIVERY__MAIL_USER": "vmail",
        "MUNINET_DELIVERY__METHOD": "lmtp",
        "MUNINET_LISTEN__IMAP_PORT": str(free_port()),
        "MUNINET_LISTEN__IMAPS_PORT": str(free_port()),
        "MUNINET_LISTEN__LOCAL_PORT": str(free_port()),
        "MUNINET_ANTIVIRUS__ENABLED": "true",
        "MUNINET_ANTIVIRUS__ADDRESS": clamd_socket,
        "MUNINET_SPAM__ENABLED": "true",
        "MUNINET_SPAM__ADDRESS": rspamd_socket,
        **FAST_HASHING,
    }


@pytest.fixture(scope="module")
def stack(filter_env: FilterEnv, clamd: RunningClamd, rspamd: object) -> Iterator[Stack]:
    require_root()
    env = stack_env(filter_env, clamd.socket, str(rspamd.socket))  # type: ignore[attr-defined]
    with provisioned(env) as ctx:
        members.create(ctx, "biuro", "Biuro Związku", kind="association")
        domains.create(ctx, "info.association.pl")
        mailboxes.create(ctx, TO, "biuro", password=PW)
    dovecot = start_dovecot(load_settings(env))
    mail = MailServer(env=env, state_dir=load_settings(env).state_dir)
    try:
        mail.start()
        yield Stack(mail, int(env["MUNINET_LISTEN__IMAP_PORT"]), env)
    finally:
        if mail.process is not None:
            mail.stop()
        dovecot.stop()
        shutil.rmtree(load_settings(env).state_dir, ignore_errors=True)


def send(port: int, message: bytes) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("mail.gmina-przyklad.pl")
        client.mail("anna.nowak@gmina-przyklad.pl")
        assert client.rcpt(TO)[0] == 250
        code, text = client.data(message)
        return code, text.decode()


def subjects(stack: Stack, folder: str) -> list[str]:
    client = imaplib.IMAP4("127.0.0.1", stack.imap_port)
    try:
        client.login(TO, PW)
        client.select(folder, readonly=True)
        _, numbers = client.search(None, "ALL")
        found = []
        for number in numbers[0].split():
            _, parts = client.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT X-SPAM-FLAG)])")
            found.append(bytes(parts[0][1]).decode().strip())
        return found
    finally:
        client.logout()


def headers(stack: Stack, folder: str) -> list[bytes]:
    client = imaplib.IMAP4("127.0.0.1", stack.imap_port)
    client.login(TO, PW)
    client.select(folder, readonly=True)
    _, numbers = client.search(None, "ALL")
    out = [bytes(client.fetch(n, "(BODY.PEEK[HEADER])")[1][0][1]) for n in numbers[0].split()]
    client.logout()
    return out


def test_viruses_are_refused_in_the_conversation(stack: Stack) -> None:
    for message in (
        plain_message(EICAR.decode(), subject="plain"),
        attachment_message("faktura.pdf.exe", EICAR),
        attachment_message("faktura.zip", zipped("faktura.exe", EICAR), "application/zip"),
    ):
        code, text = send(stack.mail.smtp_port, message)
        assert (code, text) == (554, f"5.7.1 Virus found: {EICAR_SIGNATURE}")


def test_spam_refused_tagged_into_junk_clean_into_inbox(stack: Stack) -> None:
    code, text = send(stack.mail.smtp_port, plain_message(GTUBE.decode() + "\n", subject="gtube"))
    assert (code, text) == (550, "5.7.1 Message refused as spam")
    # A sender's own spam headers are removed: only the filter's reach the mailbox.
    forged = CLEAN.replace(
        b"Subject: Meeting", b"X-Spam-Score: -50\r\nX-Spam-Status: No\r\nSubject: Meeting", 1
    )
    assert send(stack.mail.smtp_port, forged)[0] == 250
    assert send(stack.mail.smtp_port, BORDERLINE)[0] == 250
    junk = subjects(stack, "Junk")
    assert len(junk) == 1 and "zaproszenie" in junk[0] and "X-Spam-Flag: YES" in junk[0]
    inbox = subjects(stack, "INBOX")
    assert len(inbox) == 1 and "Meeting on Tuesday" in inbox[0]
    assert "X-Spam-Flag" not in inbox[0]
    (header,) = headers(stack, "INBOX")
    assert header.count(b"X-Spam-Score:") == 1 and b"X-Spam-Score: -50" not in header
    assert header.count(b"X-Spam-Status: No, score=") == 1


def test_clamd_down_is_a_temporary_failure(filter_env: FilterEnv, rspamd: object) -> None:
    """A scanner that is not running: 451, the sender retries; nothing is stored."""
    require_root()
    port = free_port()
    settings = filter_env.settings(paths__state_dir=str(filter_env.root / "clamd-down"))
    daemon: Clamd = start_clamd(settings, tcp_port=port)
    daemon.stop()  # its socket is gone: clamd is down
    env = stack_env(filter_env, f"127.0.0.1:{port}", str(rspamd.socket))  # type: ignore[attr-defined]
    with provisioned(env) as ctx:
        members.create(ctx, "biuro", "Biuro Związku", kind="association")
        domains.create(ctx, "info.association.pl")
        mailboxes.create(ctx, TO, "biuro", password=PW)
    mail = MailServer(
        env={**env, "MUNINET_DELIVERY__METHOD": "maildir"}, state_dir=load_settings(env).state_dir
    )
    try:
        mail.start()
        code, text = send(mail.smtp_port, CLEAN)
        assert code == 451 and text.startswith("4.7.1"), text
    finally:
        mail.stop()
        shutil.rmtree(load_settings(env).state_dir, ignore_errors=True)
