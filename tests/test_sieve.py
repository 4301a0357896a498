"""Sieve through real Dovecot: vacation replies, forwarding, spam into Junk, IDN logins.

Local mail goes to Dovecot's LMTP (as under `muninet run`), Pigeonhole runs the
script muninet stored in the database, and its replies and forwards come back
through muninet's loopback port. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import imaplib
import json
import os
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path

import pytest

from provisioning import sieve
from provisioning.services import domains, mail_rules, mailboxes, members
from provisioning.settings import load_settings

from conftest import FAST_HASHING, PostgresDatabases, missing
from dovecot_server import require_root, start_dovecot, world_traversable_tmp
from mailserver import MUNINET, OFFLINE_DNS, MailServer, free_port, provisioned

PW = "correct horse battery"
D = "gmina-glusk.pl"
IDN = "община-трън.бг"
LOCALS = ["urzad", "sekretariat", "rada", "skarbnik", "wojt", "kadry", "archiwum", "podejrzany"]


@dataclass
class Stack:
    mail: MailServer
    imap_port: int
    env: dict[str, str]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    require_root()
    state = world_traversable_tmp("muninet-sieve-")
    imap_port = free_port()
    env = {
        "MUNINET_PATHS__STATE_DIR": str(state),
        "MUNINET_DELIVERY__MAIL_USER": "vmail",
        "MUNINET_DELIVERY__METHOD": "lmtp",
        "MUNINET_LISTEN__IMAP_PORT": str(imap_port),
        "MUNINET_LISTEN__IMAPS_PORT": str(free_port()),
        "MUNINET_LISTEN__LOCAL_PORT": str(free_port()),
        **OFFLINE_DNS,
        **FAST_HASHING,
    }
    pg: PostgresDatabases | None = None
    pg_name = ""
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres")
        pg_name, env["MUNINET_DATABASE__URL"] = pg.create()
    with provisioned(env) as ctx:
        members.create(ctx, "glusk", "Gmina Głusk")
        members.create(ctx, "trun", "Община Трън")
        domains.create(ctx, D, member_slug="glusk")
        domains.create(ctx, IDN, member_slug="trun", utf8_local_parts=True)
        for local in LOCALS:
            mailboxes.create(ctx, f"{local}@{D}", "glusk", password=PW)
        mailboxes.create(ctx, f"кмет@{IDN}", "trun", password=PW)
        mail_rules.set_vacation(
            ctx,
            f"urzad@{D}",
            enabled=True,
            subject="Urlop / Отпуск",
            body='Jestem na urlopie do 2 stycznia.\n"Pilne": sekretariat@gmina-glusk.pl',
            days=7,
        )
        mail_rules.set_forwarding(ctx, f"wojt@{D}", [f"archiwum@{D}"], keep_copy=True)
        mail_rules.set_forwarding(ctx, f"kadry@{D}", [f"Archiwum@{D}"], keep_copy=False)
    dovecot = start_dovecot(load_settings(env))
    mail = MailServer(env=env, state_dir=state)
    try:
        mail.start()
        yield Stack(mail, imap_port, env)
    finally:
        if mail.process is not None:
            mail.stop()
        dovecot.stop()
        if not os.environ.get("MUNINET_KEEP_TEST_STATE"):
            shutil.rmtree(state, ignore_errors=True)
        if pg is not None:
            pg.drop(pg_name)


def send(stack: Stack, mail_from: str, to: str, headers: str = "", subject: str = "Test") -> None:
    message = (
        f"From: {mail_from or 'MAILER-DAEMON@example.net'}\r\nTo: {to}\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{time.time_ns()}@test>\r\n{headers}"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nDzień dobry.\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", stack.mail.smtp_port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.sendmail(mail_from, [to], message) == {}


def folder(stack: Stack, login: str, name: str = "INBOX") -> list[bytes]:
    client = imaplib.IMAP4("127.0.0.1", stack.imap_port)
    try:
        client.login(login, PW)
        typ, _ = client.select(name, readonly=True)
        assert typ == "OK", name
        _, numbers = client.search(None, "ALL")
        found = []
        for number in numbers[0].split():
            _, parts = client.fetch(number, "(BODY.PEEK[])")
            found.append(parts[0][1])
        return found
    finally:
        client.logout()


def eventually(read: callable, count: int, timeout: float = 10) -> list[bytes]:  # type: ignore[valid-type]
    """Replies travel through the local port and the queue: wait a little for them."""
    deadline = time.monotonic() + timeout
    while True:
        found: list[bytes] = read()
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_vacation_once_per_sender_and_never_to_lists_or_bounces(stack: Stack) -> None:
    send(stack, f"sekretariat@{D}", f"urzad@{D}", subject="Pierwszy")
    send(stack, f"sekretariat@{D}", f"urzad@{D}", subject="Drugi")
    send(stack, f"rada@{D}", f"urzad@{D}", headers=f"List-Id: <rada.{D}>\r\n")
    send(stack, f"skarbnik@{D}", f"urzad@{D}", headers="Precedence: bulk\r\n")
    # A bounce: null envelope sender, though its From names a mailbox here.
    send(stack, "", f"urzad@{D}", headers=f"Reply-To: skarbnik@{D}\r\n")
    assert len(folder(stack, f"urzad@{D}")) == 5  # the vacation keeps every message

    replies = eventually(lambda: folder(stack, f"sekretariat@{D}"), 1)
    time.sleep(1)  # a second, wrong reply would have arrived by now
    replies = folder(stack, f"sekretariat@{D}")
    assert len(replies) == 1
    reply = message_from_bytes(replies[0])
    assert reply["Auto-Submitted"].startswith("auto-replied")
    assert "Urlop" in str(reply["Subject"]) or "=?" in str(reply["Subject"])
    assert reply["From"].endswith(f"urzad@{D}>") or reply["From"] == f"urzad@{D}"
    assert reply["Return-Path"] == "<>"
    body = reply.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert '"Pilne": sekretariat' in body.decode(reply.get_content_charset() or "utf-8")
    assert folder(stack, f"rada@{D}") == []
    assert folder(stack, f"skarbnik@{D}") == []


def test_forwarding_with_and_without_a_copy(stack: Stack) -> None:
    send(stack, f"sekretariat@{D}", f"wojt@{D}", subject="Do wójta")
    send(stack, f"sekretariat@{D}", f"kadry@{D}", subject="Do kadr")
    archived = eventually(lambda: folder(stack, f"archiwum@{D}"), 2)
    subjects = sorted(str(message_from_bytes(m)["Subject"]) for m in archived)
    assert subjects == ["Do kadr", "Do wójta"] or len(archived) == 2
    # Forwarded mail leaves with the forwarding mailbox as envelope sender (SPF-safe).
    senders = sorted(str(message_from_bytes(m)["Return-Path"]) for m in archived)
    assert senders == [f"<kadry@{D}>", f"<wojt@{D}>"]
    assert len(folder(stack, f"wojt@{D}")) == 1  # kept a copy
    assert folder(stack, f"kadry@{D}") == []  # did not


def test_spam_is_filed_into_junk_without_a_vacation_reply(stack: Stack) -> None:
    send(stack, f"podejrzany@{D}", f"urzad@{D}", headers="X-Spam-Flag: YES\r\n", subject="Spam")
    junk = folder(stack, f"urzad@{D}", "Junk")
    assert [str(message_from_bytes(m)["Subject"]) for m in junk] == ["Spam"]
    assert all(b"X-Spam-Flag: YES" in m for m in junk)
    assert not any(b"Subject: Spam" in m for m in folder(stack, f"urzad@{D}"))
    time.sleep(1)
    assert folder(stack, f"podejrzany@{D}") == []


def test_usage_read_from_disk_matches_dovecots_quota(stack: Stack) -> None:
    """muninet reads usage from the Maildirs (all folders) and agrees with Dovecot's count."""
    settings = load_settings(stack.env)
    client = imaplib.IMAP4("127.0.0.1", stack.imap_port)
    try:
        client.login(f"urzad@{D}", PW)
        typ, data = client.getquotaroot("INBOX")
    finally:
        client.logout()
    assert typ == "OK"
    quota_line = next(bytes(d).decode() for d in data[1] if b"STORAGE" in bytes(d))
    storage_kib = int(quota_line.split("STORAGE", 1)[1].split()[0])
    with provisioned(stack.env, migrate=False) as ctx:
        used = mailboxes.usage(settings, mailboxes.get(ctx.session, f"urzad@{D}"))
    assert used.messages >= 6, used  # five in INBOX (vacation test), one in Junk
    assert -(-used.bytes // 1024) == storage_kib  # Dovecot rounds up to whole KiB


def test_rules_change_at_the_next_delivery(stack: Stack) -> None:
    with provisioned(stack.env, migrate=False) as ctx:
        mail_rules.set_forwarding(ctx, f"wojt@{D}", [], keep_copy=True)
    before = len(folder(stack, f"archiwum@{D}"))
    send(stack, f"sekretariat@{D}", f"wojt@{D}", subject="Już bez przekierowania")
    time.sleep(1)
    assert len(folder(stack, f"archiwum@{D}")) == before
    assert any(b"bez przekierowania" in m for m in folder(stack, f"wojt@{D}"))


def test_login_with_the_unicode_domain(stack: Stack) -> None:
    for login in (f"кмет@{IDN}", "кмет@xn----7sbc2azacbvr9dr.xn--90ae"):
        client = imaplib.IMAP4("127.0.0.1", stack.imap_port)
        try:
            blob = b"\0" + login.encode() + b"\0" + PW.encode()
            typ, _ = client.authenticate("PLAIN", lambda _, blob=blob: blob)
            assert typ == "OK"
        finally:
            client.logout()


def test_local_port_accepts_only_hosted_senders(stack: Stack) -> None:
    with smtplib.SMTP("127.0.0.1", stack.mail.local_port, timeout=10) as client:
        client.ehlo("localhost")
        assert not client.has_extn("auth")
        code, _ = client.mail("kto@example.com")
        assert code == 553
        client.rset()
        assert client.mail(f"urzad@{D}")[0] == 250
        # The local port may relay: Sieve forwards and replies go anywhere.
        assert client.rcpt("ktos@example.com")[0] == 250
        client.rset()
        # A bounce (null sender) is queued with an empty sender, never "<>", so no
        # delivery report is ever sent about it.
        bounce = b"From: MAILER-DAEMON@mail.test.example\r\nSubject: zwrot\r\n\r\nx\r\n"
        assert client.sendmail("<>", ["ktos@example.com"], bounce) == {}
    listed = subprocess.run(
        [str(MUNINET), "queue", "list", "--json"],
        env=stack.mail.full_env,
        capture_output=True,
        text=True,
        check=True,
    )
    queued = [m["header"] for m in json.loads(listed.stdout)]
    assert [(m["mail_from"], m["recipients"]) for m in queued] == [("", ["ktos@example.com"])]


def test_generated_scripts_compile(tmp_path: Path) -> None:
    sievec = shutil.which("sievec")
    if sievec is None:
        missing("sievec (dovecot-sieve)")
        return
    from datetime import date

    cases = [
        sieve.Rules(vacation=sieve.Vacation('Urlop "zimowy" \\ 2026', "Treść\nlinia 2", 3)),
        sieve.Rules(
            vacation=sieve.Vacation("Отпуск", "До 2 януари.", 7, date(2026, 12, 20), None),
            forward_to=["biuro@община-трън.бг", "a@example.com"],
            keep_copy=False,
        ),
        sieve.Rules(forward_to=["a@example.com"], keep_copy=True),
    ]
    for number, rules in enumerate(cases):
        path = tmp_path / f"case{number}.sieve"
        path.write_text(sieve.script(rules))
        result = subprocess.run([sievec, str(path)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, (path.read_text(), result.stderr)
    assert sieve.script(sieve.Rules()) == ""
