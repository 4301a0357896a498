"""The MX and submission servers of a real `muninet smtpd`, over real sockets."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import pytest

from provisioning.models import DkimAlgorithm, MemberStatus
from provisioning.services import aliases, domains, mailboxes, members
from provisioning.services import dkim as dkim_keys

from conftest import FAST_HASHING
from mailserver import OFFLINE_DNS, MailServer, provisioned

SHARED = "info.association.pl"
IDN = "община-трън.бг"
IDN_ASCII = "xn----7sbc2azacbvr9dr.xn--90ae"
PW = "correct horse battery"
TLS = ssl._create_unverified_context()  # the dev certificate is self-signed


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    state = tmp_path_factory.mktemp("smtp")
    env = {
        "MUNINET_PATHS__STATE_DIR": str(state),
        "MUNINET_SMTP__MAX_RECIPIENTS": "5",
        "MUNINET_SMTP__MAX_MESSAGE_SIZE": "200K",
        "MUNINET_SMTP__MAX_CONNECTIONS_PER_IP": "12",
        "MUNINET_SUBMISSION__AUTH_FAILURES_PER_ACCOUNT": "3",
        "MUNINET_SUBMISSION__MESSAGES_PER_HOUR": "3",
        # Outbound delivery asks only a resolver on loopback where nothing answers.
        **OFFLINE_DNS,
        **FAST_HASHING,
    }
    with provisioned(env) as ctx:
        members.create(ctx, "glusk", "Gmina Głusk")
        members.create(ctx, "trun", "Община Трън")
        members.create(ctx, "gone", "Suspended member")
        domains.create(ctx, SHARED)
        domains.create(ctx, IDN, member_slug="trun", utf8_local_parts=True)
        for address, owner in [
            (f"glusk@{SHARED}", "glusk"),
            (f"glusk.sekretariat@{SHARED}", "glusk"),
            (f"glusk.off@{SHARED}", "glusk"),
            (f"glusk.tiny@{SHARED}", "glusk"),
            (f"glusk.limited@{SHARED}", "glusk"),
            (f"gone@{SHARED}", "gone"),
            (f"кмет@{IDN}", "trun"),
            (f"деловодство@{IDN}", "trun"),
        ]:
            mailboxes.create(
                ctx, address, owner, password=PW, quota=1024 if "tiny" in address else None
            )
        aliases.create(
            ctx,
            f"glusk.urzad@{SHARED}",
            [f"glusk@{SHARED}", f"glusk.sekretariat@{SHARED}"],
            member_slug="glusk",
        )
        aliases.create(ctx, f"@{IDN}", [f"деловодство@{IDN}"])
        for algorithm in (DkimAlgorithm.RSA, DkimAlgorithm.ED25519):
            dkim_keys.generate(ctx, SHARED, algorithm)
        mailboxes.set_enabled(ctx, f"glusk.off@{SHARED}", False)
        members.set_status(ctx, "gone", MemberStatus.SUSPENDED, "test")
    server = MailServer(env=env, state_dir=state)
    server.start("--no-queue")
    yield server
    if server.process is not None:
        server.stop()


def mx(mail: MailServer) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=20)
    client.ehlo("client.example.com")
    return client


def submission(mail: MailServer, login: str = f"glusk@{SHARED}") -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", mail.submission_port, timeout=20)
    client.starttls(context=TLS)
    client.login(login, PW)
    return client


def _plain(login: str, password: str) -> str:
    return base64.b64encode(f"\0{login}\0{password}".encode()).decode()


def body(subject: str, text: str = "Dzień dobry") -> bytes:
    return (
        f"From: sender@example.com\r\nTo: office\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"\r\n{text}\r\n"
    ).encode()


def delivered(mail: MailServer, key: str, subject: str) -> list[bytes]:
    marker = f"Subject: {subject}\r\n".encode()
    return [p.read_bytes() for p in mail.maildir_files(key) if marker in p.read_bytes()]


def test_delivery_to_mailbox_alias_and_catch_all(mail: MailServer) -> None:
    message = body("fanout")
    with mx(mail) as client:
        refused = client.sendmail(
            "sender@example.com",
            [f"Glusk@{SHARED}", f"glusk.urzad@{SHARED}", f"anyone@{IDN_ASCII}"],
            message,
        )
    assert refused == {}
    glusk = delivered(mail, f"glusk@{SHARED}", "fanout")
    assert len(glusk) == 1  # one copy, though named directly and through the alias
    assert glusk[0].endswith(message)  # the exact bytes, after our Received header
    assert glusk[0].startswith(b"Received: from client.example.com ([127.0.0.1])")
    assert b"by mail.test.example (muninet) with ESMTP" in glusk[0]
    assert len(delivered(mail, f"glusk.sekretariat@{SHARED}", "fanout")) == 1
    assert len(delivered(mail, f"деловодство@{IDN_ASCII}", "fanout")) == 1
    assert delivered(mail, f"кмет@{IDN_ASCII}", "fanout") == []
    for path in mail.maildir_files(f"glusk@{SHARED}"):
        assert path.stat().st_mode & 0o777 == 0o600
    assert list(mail.maildir_files(f"glusk@{SHARED}", "tmp")) == []


def test_unknown_disabled_and_suspended_recipients(mail: MailServer) -> None:
    with mx(mail) as client:
        client.mail("sender@example.com")
        assert client.rcpt(f"nobody@{SHARED}")[0] == 550
        code, text = client.rcpt(f"nobody@{SHARED}")
        assert (code, text[:5]) == (550, b"5.1.1")
        assert client.rcpt(f"glusk.off@{SHARED}") == (
            550,
            b"5.2.1 mailbox disabled: glusk.off@" + SHARED.encode(),
        )
        assert client.rcpt(f"gone@{SHARED}")[0] == 550
        assert client.rcpt(f"glusk+newsletter@{SHARED}")[0] == 250  # sub-address


def test_too_many_recipients(mail: MailServer) -> None:
    with mx(mail) as client:
        client.mail("sender@example.com")
        for _ in range(5):
            assert client.rcpt(f"glusk@{SHARED}")[0] == 250
        assert client.rcpt(f"glusk@{SHARED}")[:1] == (452,)


def test_size_limit(mail: MailServer) -> None:
    with mx(mail) as client:
        assert "size" in client.esmtp_features
        assert client.mail("sender@example.com", ["SIZE=300000"])[0] == 552
        client.rset()
        client.mail("sender@example.com")
        client.rcpt(f"glusk@{SHARED}")
        code, _ = client.data(body("big", "x" * 998 + "\r\n") * 250)
        assert code == 552
    assert delivered(mail, f"glusk@{SHARED}", "big") == []


def test_smtputf8_recipient_and_8bit_body(mail: MailServer) -> None:
    message = "Subject: utf8\r\nFrom: Иван <иван@example.bg>\r\n\r\nЗдравейте, zażółć\r\n"
    with mx(mail) as client:
        assert "smtputf8" in client.esmtp_features
        client.sendmail(
            "иван@example.bg",
            [f"кмет@{IDN}"],
            message.encode(),
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
    copies = delivered(mail, f"кмет@{IDN_ASCII}", "utf8")
    assert len(copies) == 1
    assert copies[0].endswith(message.encode())
    assert b"with UTF8SMTP" in copies[0]


def test_quota_is_checked_at_rcpt(mail: MailServer) -> None:
    with mx(mail) as client:
        code, text = client.mail("sender@example.com", ["SIZE=2000"])
        assert client.rcpt(f"glusk.tiny@{SHARED}")[0] == 452  # the declared size does not fit
        client.rset()
        client.sendmail("sender@example.com", [f"glusk.tiny@{SHARED}"], body("fill", "y" * 500))
        client.mail("sender@example.com", ["SIZE=600"])
        code, text = client.rcpt(f"glusk.tiny@{SHARED}")
    assert (code, text[:5]) == (452, b"4.2.2")
    assert len(delivered(mail, f"glusk.tiny@{SHARED}", "fill")) == 1


RELAY_TRICKS = [
    "victim@example.com",
    "victim@EXAMPLE.com",
    f"victim%example.com@{SHARED}",
    f'"victim@example.com"@{SHARED}',
    f"victim@example.com@{SHARED}",
    f"@{SHARED}:victim@example.com",
    f"<@{SHARED}:victim@example.com>",
    f"victim@example.com.{SHARED}.evil.com",
    f"victim!example.com@{SHARED}",
    "victim@[127.0.0.1]",
    "victim@localhost",
    "victim@example.com.",
    f"victim@{SHARED}.example.com",
    "victim",
    f"victim@example.com#@{SHARED}",
    f"victim@example.com\\@{SHARED}",
]


@pytest.mark.parametrize("address", RELAY_TRICKS)
def test_no_open_relay(mail: MailServer, address: str) -> None:
    with mx(mail) as client:
        assert client.mail("spammer@example.net")[0] == 250
        code, text = client.docmd("RCPT", f"TO:<{address.strip('<>')}>")
        assert 500 <= code < 600, (address, code, text)
        client.rset()
    spool = mail.state_dir / "spool" / "queue"
    assert not any(b"spammer@example.net" in p.read_bytes() for p in spool.glob("*.msg"))


def test_unauthenticated_submission_cannot_send(mail: MailServer) -> None:
    with smtplib.SMTP("127.0.0.1", mail.submission_port, timeout=20) as client:
        client.ehlo()
        assert "auth" not in client.esmtp_features  # never before TLS
        assert client.mail(f"glusk@{SHARED}")[0] == 530
        client.starttls(context=TLS)
        client.ehlo()
        assert "auth" in client.esmtp_features
        assert client.mail(f"glusk@{SHARED}")[0] == 530


def send_raw(port: int, chunks: list[bytes]) -> list[bytes]:
    """Speak SMTP byte for byte; returns the server's replies."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        reader = sock.makefile("rb")
        replies.append(reader.readline())
        for chunk in chunks:
            sock.sendall(chunk)
            line = reader.readline()
            while line[3:4] == b"-":
                line = reader.readline()
            replies.append(line)
    return replies


@pytest.mark.parametrize(
    "ending",
    [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n"],
    ids=["LF.LF", "CR.CR", "LF.CRLF", "CRLF.LF", "CRLF.CR", "CR.CRLF"],
)
def test_smuggled_message_is_not_split(mail: MailServer, ending: bytes) -> None:
    tag = ending.hex()
    smuggled = (
        b"Subject: outer-"
        + tag.encode()
        + b"\r\n\r\nhello"
        + ending
        + b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<glusk.sekretariat@"
        + SHARED.encode()
        + b">\r\nDATA\r\nSubject: smuggled-"
        + tag.encode()
        + b"\r\n\r\nboo\r\n.\r\n"
    )
    replies = send_raw(
        mail.smtp_port,
        [
            b"EHLO client.example.com\r\n",
            b"MAIL FROM:<sender@example.com>\r\n",
            f"RCPT TO:<glusk@{SHARED}>\r\n".encode(),
            b"DATA\r\n",
            smuggled,
            b"QUIT\r\n",
        ],
    )
    assert replies[4].startswith(b"354")
    assert replies[5].startswith(b"550 5.6.11"), replies[5]
    assert delivered(mail, f"glusk@{SHARED}", f"outer-{tag}") == []
    assert delivered(mail, f"glusk.sekretariat@{SHARED}", f"smuggled-{tag}") == []


def test_mail_loop_is_refused(mail: MailServer) -> None:
    hops = b"".join(
        b"Received: from hop%d.example by hop%d.example; now\r\n" % (i, i + 1) for i in range(30)
    )
    with mx(mail) as client:
        client.mail("sender@example.com")
        client.rcpt(f"glusk@{SHARED}")
        code, text = client.data(hops + body("loop"))
    assert (code, text[:5]) == (554, b"5.4.6")
    assert delivered(mail, f"glusk@{SHARED}", "loop") == []


def test_submission_auth_and_sender_rules(mail: MailServer) -> None:
    with smtplib.SMTP("127.0.0.1", mail.submission_port, timeout=20) as client:
        client.starttls(context=TLS)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(f"glusk@{SHARED}", "wrong password")
    with submission(mail, f"glusk.sekretariat@{SHARED}") as client:
        assert client.mail(f"glusk@{SHARED}")[0] == 553  # someone else's address
        client.rset()
        assert client.mail(f"glusk.urzad@{SHARED}")[0] == 250  # an alias that reaches them
        client.rset()
        assert client.mail("ceo@example.com")[0] == 553
        client.rset()
        client.sendmail(
            f"glusk.sekretariat@{SHARED}",
            ["partner@example.com", f"glusk@{SHARED}"],
            body("outbound"),
        )
    copies = delivered(mail, f"glusk@{SHARED}", "outbound")
    assert len(copies) == 1 and b"with ESMTPSA" in copies[0]
    queued = [
        p.read_bytes()
        for p in (mail.state_dir / "spool" / "queue").glob("*.msg")
        if b"Subject: outbound" in p.read_bytes()
    ]
    assert len(queued) == 1
    assert b'"recipients": ["partner@example.com"]' in queued[0]


def test_smtps_implicit_tls(mail: MailServer) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", mail.smtps_port, context=TLS, timeout=20) as client:
        client.ehlo()
        assert "auth" in client.esmtp_features
        # smtplib cannot encode a UTF-8 login itself; AUTH PLAIN carries UTF-8 (RFC 4616).
        assert client.docmd("AUTH", "PLAIN " + _plain(f"кмет@{IDN}", PW))[0] == 235
        client.sendmail(
            f"кмет@{IDN}", [f"деловодство@{IDN}"], body("smtps"), mail_options=["SMTPUTF8"]
        )
    assert len(delivered(mail, f"деловодство@{IDN_ASCII}", "smtps")) == 1


def test_disabled_or_suspended_account_cannot_log_in(mail: MailServer) -> None:
    for login in (f"glusk.off@{SHARED}", f"gone@{SHARED}"):
        with smtplib.SMTP("127.0.0.1", mail.submission_port, timeout=20) as client:
            client.starttls(context=TLS)
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login(login, PW)


def test_failed_logins_are_rate_limited_per_account(mail: MailServer) -> None:
    login = f"деловодство@{IDN}"
    with smtplib.SMTP("127.0.0.1", mail.submission_port, timeout=20) as client:
        client.starttls(context=TLS)
        client.ehlo()
        for _ in range(3):
            assert client.docmd("AUTH", "PLAIN " + _plain(login, "not the password"))[0] == 535
        code, text = client.docmd("AUTH", "PLAIN " + _plain(login, PW))
        assert (code, text[:5]) == (454, b"4.7.0")  # even the right password waits now


def test_outbound_message_rate_limit(mail: MailServer) -> None:
    with submission(mail, f"glusk.limited@{SHARED}") as client:
        for n in range(3):
            client.sendmail(f"glusk.limited@{SHARED}", [f"glusk@{SHARED}"], body(f"rate{n}"))
        code, text = client.mail(f"glusk.limited@{SHARED}")
    assert (code, text[:5]) == (450, b"4.7.1")


def test_connections_per_ip_are_limited(mail: MailServer) -> None:
    sockets = [socket.create_connection(("127.0.0.1", mail.smtp_port)) for _ in range(12)]
    try:
        for sock in sockets:
            assert sock.makefile("rb").readline().startswith(b"220")
        with socket.create_connection(("127.0.0.1", mail.smtp_port), timeout=10) as extra:
            assert extra.makefile("rb").readline().startswith(b"421 4.7.0")
    finally:
        for sock in sockets:
            sock.close()


def test_dovecot_layout(mail: MailServer) -> None:
    maildir = mail.state_dir / "mail" / SHARED / "glusk" / "Maildir"
    assert {p.name for p in maildir.iterdir()} >= {"tmp", "new", "cur"}
    names = [p.name for p in (maildir / "new").iterdir()]
    assert names and all(",S=" in n for n in names)
    assert all(int(n.split(",S=")[1]) == (maildir / "new" / n).stat().st_size for n in names)


def test_server_log_is_clean(mail: MailServer) -> None:
    assert "Traceback" not in mail.log()
    assert Path(mail.state_dir / "tls" / "selfsigned.crt").exists()


def test_dot_stuffing_and_pipelined_commands_after_data(mail: MailServer) -> None:
    with socket.create_connection(("127.0.0.1", mail.smtp_port), timeout=20) as sock:
        reader = sock.makefile("rb")

        def replies(count: int) -> list[bytes]:
            lines = []
            while len(lines) < count:
                line = reader.readline()
                if line[3:4] != b"-":
                    lines.append(line)
            return lines

        replies(1)
        sock.sendall(b"EHLO client.example.com\r\n")
        replies(1)
        sock.sendall(f"MAIL FROM:<a@example.com>\r\nRCPT TO:<glusk@{SHARED}>\r\nDATA\r\n".encode())
        assert [r[:3] for r in replies(3)] == [b"250", b"250", b"354"]
        # The message, its end marker and the next transaction arrive in one packet.
        sock.sendall(
            b"Subject: dots\r\n\r\n..leading dot\r\n...two\r\nplain\r\n.\r\n"
            + f"MAIL FROM:<b@example.com>\r\nRCPT TO:<glusk@{SHARED}>\r\nDATA\r\n".encode()
        )
        assert [r[:3] for r in replies(4)] == [b"250", b"250", b"250", b"354"]
        sock.sendall(b".\r\n")  # an empty message
        assert replies(1)[0].startswith(b"250")
        sock.sendall(b"QUIT\r\n")
    copies = delivered(mail, f"glusk@{SHARED}", "dots")
    assert len(copies) == 1
    assert copies[0].endswith(b"\r\n\r\n.leading dot\r\n..two\r\nplain\r\n")


def test_submitted_mail_is_dkim_signed_mx_mail_is_not(mail: MailServer) -> None:
    """Both keys of the author's domain sign it; the signatures verify against our records."""
    sender = f"glusk.sekretariat@{SHARED}"
    message = body("podpisany").replace(b"From: sender@example.com", f"From: {sender}".encode())
    with submission(mail, sender) as client:
        client.sendmail(sender, [f"glusk@{SHARED}"], message)
    with mx(mail) as client:
        client.sendmail("a@example.com", [f"glusk@{SHARED}"], body("z zewnatrz"))
    (signed,) = delivered(mail, f"glusk@{SHARED}", "podpisany")
    assert signed.count(b"DKIM-Signature:") == 2
    with provisioned(mail.env, migrate=False) as ctx:
        records = {
            dkim_keys.record_name(SHARED, key.selector).encode(): dkim_keys.txt_value(key).encode()
            for key in dkim_keys.list_keys(ctx.session, SHARED)
        }

    def dns_txt(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name.rstrip(b"."))

    # Our Received header sits above the signatures; verifiers ignore it.
    for index in range(2):
        assert dkim.DKIM(signed).verify(idx=index, dnsfunc=dns_txt), index
    (unsigned,) = delivered(mail, f"glusk@{SHARED}", "z zewnatrz")
    assert b"DKIM-Signature:" not in unsigned
