"""Outbound delivery over real sockets: MX lookup, remote SMTP, retries, DSNs, the queue CLI.

DNS answers come from a dnspython server on 127.0.0.1 (tests/dns_server.py), so
the real resolver path runs; the remote side is an aiosmtpd server on 127.0.0.1
playing MX or smarthost. Nothing here mocks SMTP or DNS, and nothing leaves the
loopback interface. Time-dependent behaviour (backoff, max_age) is driven by the
`now` argument of `run_once`, never by sleeping.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import idna
import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from mailhost.dsn import RecipientStatus, build_report
from mailhost.durability import GroupCommitter
from mailhost.errors import DeliveryError, PermanentFailure, TemporaryFailure
from mailhost.mx import MxResolver, Target, parse_hostport, smarthost_target
from mailhost.queue_runner import QueueRunner
from mailhost.spool import LOCAL_PREFIX, DeliveryState, MessageHeader, Spool, new_id
from provisioning.settings import DnsSettings, Settings, load_settings
from provisioning.tls import ensure_self_signed

from dns_server import DnsServer
from remote_mx import RemoteMx, remote_server

T = TypeVar("T")
HOSTNAME = "mail.outbound-test.example"
SENDER = "sender@origin.test"
IDN_DOMAIN = "пример.test"
IDN_ASCII = idna.encode(IDN_DOMAIN, uts46=True).decode()
ZONE: dict[str, list[tuple[str, str]]] = {
    "example.test": [("MX", "10 mx1.example.test."), ("MX", "20 mx2.example.test.")],
    "mx1.example.test": [("A", "127.0.0.1")],
    "mx2.example.test": [("A", "127.0.0.1")],
    "equal.test": [("MX", "10 a.equal.test."), ("MX", "10 b.equal.test."), ("MX", "5 c.test.")],
    "a.equal.test": [("A", "127.0.0.1")],
    "b.equal.test": [("A", "127.0.0.1")],
    "c.test": [("A", "127.0.0.1"), ("AAAA", "::1")],
    "fallback.test": [("A", "127.0.0.1")],
    "origin.test": [("MX", "10 mx1.example.test.")],  # where DSNs to SENDER go
    "nullmx.test": [("MX", "0 .")],
    "nothing.test": [("TXT", '"v=spf1 -all"')],
    # The preferred MX refuses connections: nothing listens on 127.0.0.2.
    "backup.test": [("MX", "10 dead.backup.test."), ("MX", "20 live.backup.test.")],
    "dead.backup.test": [("A", "127.0.0.2")],
    "live.backup.test": [("A", "127.0.0.1")],
    IDN_ASCII: [("MX", "10 mx1.example.test.")],
}
MUNINET = Path(sys.executable).parent / "muninet"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def remote() -> Iterator[RemoteMx]:
    with remote_server() as handler:
        yield handler


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for the fake remote side's STARTTLS."""
    return ensure_self_signed(tmp_path_factory.mktemp("tls"), "mx1.example.test")


@pytest.fixture(scope="module")
def server_tls(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    return context


@pytest.fixture(scope="module")
def broken_tls(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    """A server context whose handshake always fails for us (it demands a client cert)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(tls_files[0])
    return context


# -- DNS, settings, spool -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer(ZONE, servfail=["broken.test"], drop=["slow.test"]).start()
    yield server
    server.stop()


def dns_settings(server: DnsServer, timeout: float = 2.0) -> DnsSettings:
    return DnsSettings(nameservers=["127.0.0.1"], port=server.port, timeout=timeout)


@pytest.fixture
def env(tmp_path: Path, dns_server: DnsServer) -> dict[str, str]:
    return {
        "MUNINET_PATHS__STATE_DIR": str(tmp_path / "state"),
        "MUNINET_ASSOCIATION__HOSTNAME": HOSTNAME,
        "MUNINET_DNS__NAMESERVERS": "127.0.0.1",
        "MUNINET_DNS__PORT": str(dns_server.port),
        "MUNINET_DNS__TIMEOUT": "2s",
        "MUNINET_QUEUE__RETRY_SCHEDULE": "1m, 10m",
        "MUNINET_QUEUE__TIMEOUT": "5s",
    }


@pytest.fixture
def make_settings(env: dict[str, str]) -> Callable[..., Settings]:
    """Settings from the test environment plus overrides such as relay__smarthost="..."."""

    def make(**overrides: str) -> Settings:
        extra = {f"MUNINET_{key.upper()}": value for key, value in overrides.items()}
        return load_settings({**env, **extra})

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    root = tmp_path / "state" / "spool"
    root.mkdir(parents=True)
    committer = GroupCommitter(root)
    yield Spool(root, committer)
    committer.close()


def message_bytes(sender: str, recipients: list[str], body: str = "Hello from muninet.") -> bytes:
    return (
        f"From: <{sender}>\r\n"
        f"To: {', '.join(recipients)}\r\n"
        "Subject: outbound test\r\n"
        f"Message-ID: <{new_id()}@origin.test>\r\n"
        "\r\n"
        f"{body}\r\n"
    ).encode()


def enqueue(
    spool: Spool,
    recipients: list[str],
    *,
    sender: str = SENDER,
    received_at: float | None = None,
    smtputf8: bool = False,
    body: str = "Hello from muninet.",
) -> str:
    data = message_bytes(sender, [r.removeprefix(LOCAL_PREFIX) for r in recipients], body)
    header = MessageHeader(
        id=new_id(),
        mail_from=sender,
        recipients=recipients,
        received_at=time.time() if received_at is None else received_at,
        size=len(data),
        smtputf8=smtputf8,
    )
    return spool.enqueue(header, data)


async def no_local(key: str, data: bytes) -> None:
    raise AssertionError(f"unexpected local delivery to {key}")


def runner(spool: Spool, settings: Settings, remote: RemoteMx, **options: Any) -> QueueRunner:
    options.setdefault("deliver_local", no_local)
    return QueueRunner(spool, settings, mx_port=remote.port, **options)


def subparts(message: email.message.Message) -> list[email.message.Message]:
    payload = message.get_payload()
    assert isinstance(payload, list)
    return [part for part in payload if isinstance(part, email.message.Message)]


def parse_dsn(data: bytes) -> tuple[email.message.Message, list[email.message.Message]]:
    """Check the RFC 3464 structure; return the message and its delivery-status blocks."""
    message = email.message_from_bytes(data)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    parts = subparts(message)
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    return message, subparts(parts[1])


def only_dsn(spool: Spool) -> tuple[MessageHeader, bytes]:
    ids = spool.ids()
    assert len(ids) == 1, ids
    return spool.load(ids[0]).header, spool.read_data(ids[0])


# -- MX lookup ----------------------------------------------------------------------------------


def test_mx_targets_follow_preference_and_carry_addresses(dns_server: DnsServer) -> None:
    resolver = MxResolver(dns_settings(dns_server), port=2525)
    targets = run(resolver.targets("Example.TEST."))
    assert targets == [
        Target("mx1.example.test", 2525, "127.0.0.1"),
        Target("mx2.example.test", 2525, "127.0.0.1"),
    ]


def test_equal_preferences_are_tried_in_random_order(dns_server: DnsServer) -> None:
    resolver = MxResolver(dns_settings(dns_server))

    async def orders() -> set[tuple[str, ...]]:
        seen = set()
        for _ in range(24):
            targets = await resolver.targets("equal.test")
            seen.add(tuple(f"{t.host}/{t.address}" for t in targets))
        return seen

    seen = run(orders())
    # c.test (preference 5) first, IPv4 before IPv6; then a and b in either order.
    assert seen == {
        ("c.test/127.0.0.1", "c.test/::1", "a.equal.test/127.0.0.1", "b.equal.test/127.0.0.1"),
        ("c.test/127.0.0.1", "c.test/::1", "b.equal.test/127.0.0.1", "a.equal.test/127.0.0.1"),
    }


def test_domain_without_mx_uses_its_address(dns_server: DnsServer) -> None:
    resolver = MxResolver(dns_settings(dns_server))
    assert run(resolver.targets("fallback.test")) == [Target("fallback.test", 25, "127.0.0.1")]


@pytest.mark.parametrize(
    ("domain", "code", "enhanced"),
    [
        ("nullmx.test", 556, "5.1.10"),  # RFC 7505
        ("missing.test", 550, "5.1.2"),  # NXDOMAIN
        ("nothing.test", 550, "5.1.2"),  # exists, but no MX, A or AAAA
    ],
)
def test_undeliverable_domains_fail_permanently(
    dns_server: DnsServer, domain: str, code: int, enhanced: str
) -> None:
    resolver = MxResolver(dns_settings(dns_server))
    with pytest.raises(PermanentFailure) as caught:
        run(resolver.targets(domain))
    assert (caught.value.code, caught.value.enhanced) == (code, enhanced)


def test_dns_trouble_is_temporary(dns_server: DnsServer) -> None:
    with pytest.raises(TemporaryFailure, match="SERVFAIL"):
        run(MxResolver(dns_settings(dns_server)).targets("broken.test"))
    with pytest.raises(TemporaryFailure, match="timed out"):
        run(MxResolver(dns_settings(dns_server, timeout=0.3)).targets("slow.test"))


def test_idn_domain_is_looked_up_as_punycode(dns_server: DnsServer) -> None:
    targets = run(MxResolver(dns_settings(dns_server)).targets(IDN_DOMAIN))
    assert [t.host for t in targets] == ["mx1.example.test"]
    assert (IDN_ASCII, "MX") in dns_server.queries


def test_smarthost_choice(make_settings: Callable[..., Settings]) -> None:
    relay = make_settings(
        relay__smarthost="relay.isp.test:587",
        relay__sender_domain_smarthosts="gmina.test smtp.gmina-isp.test:465",
    ).relay
    assert smarthost_target(relay, "wojt@GMINA.test") == Target(
        "smtp.gmina-isp.test", 465, smarthost=True
    )
    assert smarthost_target(relay, "a@other.test") == Target("relay.isp.test", 587, smarthost=True)
    assert smarthost_target(relay, "") == Target("relay.isp.test", 587, smarthost=True)
    assert smarthost_target(make_settings().relay, "a@other.test") is None
    assert parse_hostport("[::1]:2525") == ("::1", 2525)
    assert parse_hostport("relay.test") == ("relay.test", 25)


# -- delivery through the queue -----------------------------------------------------------------


def test_delivered_message_leaves_the_queue(
    spool: Spool, settings: Settings, remote: RemoteMx
) -> None:
    enqueue(spool, ["a@example.test", "b@example.test"])
    report = run(runner(spool, settings, remote).run_once())
    assert (report.delivered, report.finished, report.deferred, report.bounced) == (2, 1, 0, 0)
    assert spool.ids() == []
    [got] = remote.received
    assert got.mail_from == SENDER
    assert got.rcpt_tos == ["a@example.test", "b@example.test"]
    assert b"Subject: outbound test" in got.content
    assert remote.helo_names == [HOSTNAME]


def test_next_mx_is_tried_when_the_first_refuses_connections(
    spool: Spool, settings: Settings, remote: RemoteMx
) -> None:
    enqueue(spool, ["x@backup.test"])
    report = run(runner(spool, settings, remote).run_once())
    assert report.delivered == 1
    assert remote.recipients() == ["x@backup.test"]


def test_temporary_failure_is_retried_after_the_backoff(
    spool: Spool, settings: Settings, remote: RemoteMx
) -> None:
    remote.defer["later@example.test"] = 1
    message_id = enqueue(spool, ["later@example.test"])
    t0 = time.time()
    queue = runner(spool, settings, remote)

    async def scenario() -> None:
        first = await queue.run_once(now=t0)
        assert (first.deferred, first.delivered) == (1, 0)
        state = spool.load(message_id).state
        assert state.pending == ["later@example.test"]
        assert state.attempts == 1
        assert state.next_attempt == pytest.approx(t0 + 60)
        assert state.last_errors["later@example.test"].startswith("451 4.3.0")
        early = await queue.run_once(now=t0 + 30)  # retry_schedule[0] is 1m
        assert early.messages == 0
        due = await queue.run_once(now=t0 + 61)
        assert due.delivered == 1

    run(scenario())
    assert spool.ids() == []
    assert remote.recipients() == ["later@example.test"]


def test_permanent_failure_bounces_with_a_dsn(
    spool: Spool, settings: Settings, remote: RemoteMx
) -> None:
    remote.reject["nobody@example.test"] = "550 5.1.1 <nobody@example.test>: no such user"
    original = enqueue(spool, ["ok@example.test", "nobody@example.test"])
    queue = runner(spool, settings, remote)
    report = run(queue.run_once())
    assert (report.delivered, report.bounced, report.dsns, report.finished) == (1, 1, 1, 1)
    assert remote.recipients() == ["ok@example.test"]

    header, data = only_dsn(spool)
    assert header.mail_from == ""
    assert header.recipients == [SENDER]
    message, blocks = parse_dsn(data)
    assert message["From"] == f"Mail Delivery System <MAILER-DAEMON@{HOSTNAME}>"
    assert message["To"] == f"<{SENDER}>"
    assert blocks[0]["Reporting-MTA"] == f"dns; {HOSTNAME}"
    assert blocks[0]["X-Muninet-Queue-ID"] == original
    assert blocks[0]["Arrival-Date"]
    [rcpt] = blocks[1:]
    assert rcpt["Final-Recipient"] == "rfc822; nobody@example.test"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Remote-MTA"] == "dns; mx1.example.test"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 <nobody@example.test>: no such user"
    parts = subparts(message)
    assert "Subject: outbound test" in str(parts[2].get_payload())
    text = parts[0].get_payload(decode=True)
    assert isinstance(text, bytes)
    assert b"<nobody@example.test>: 550 5.1.1" in text

    # The DSN itself goes out from the null sender on the next pass.
    assert run(queue.run_once()).delivered == 1
    assert remote.received[-1].mail_from == "<>"
    assert remote.received[-1].rcpt_tos == [SENDER]
    assert spool.ids() == []


def test_null_sender_never_gets_a_dsn(spool: Spool, settings: Settings, remote: RemoteMx) -> None:
    remote.reject["nobody@example.test"] = "550 5.1.1 no such user"
    enqueue(spool, ["nobody@example.test"], sender="")
    report = run(runner(spool, settings, remote).run_once())
    assert (report.bounced, report.dsns) == (1, 0)
    assert spool.ids() == []


def test_message_older_than_max_age_is_bounced(
    spool: Spool, settings: Settings, remote: RemoteMx
) -> None:
    remote.defer["stuck@example.test"] = 1000
    received = time.time()
    enqueue(spool, ["stuck@example.test"], received_at=received)
    report = run(runner(spool, settings, remote).run_once(now=received + 5 * 86400 + 1))
    assert (report.bounced, report.dsns) == (1, 1)
    _, data = only_dsn(spool)
    message, blocks = parse_dsn(data)
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Status"] == "4.3.0"  # the actual problem, as RFC 3463 X.4.7 advises
    assert b"too old" in subparts(message)[0].get_payload(decode=True)
    assert blocks[1]["Diagnostic-Code"] == "smtp; 451 4.3.0 try again later"


def test_unroutable_domains_bounce_without_remote_mta(
    spool: Spool, settings: Settings, remote: RemoteMx
) -> None:
    enqueue(spool, ["a@nullmx.test", "b@missing.test"])
    report = run(runner(spool, settings, remote).run_once())
    assert (report.bounced, report.dsns) == (2, 1)
    _, data = only_dsn(spool)
    _, blocks = parse_dsn(data)
    statuses = {b["Final-Recipient"]: b["Status"] for b in blocks[1:]}
    assert statuses == {"rfc822; a@nullmx.test": "5.1.10", "rfc822; b@missing.test": "5.1.2"}
    assert all(b["Remote-MTA"] is None for b in blocks[1:])


def test_smtputf8_and_8bitmime_when_the_message_needs_them(
    spool: Spool, settings: Settings, remote: RemoteMx
) -> None:
    enqueue(spool, ["иван@example.test", f"petar@{IDN_DOMAIN}"], smtputf8=True, body="Здравей!")
    report = run(runner(spool, settings, remote).run_once())
    assert report.delivered == 2
    by_rcpt = {r.rcpt_tos[0]: r for r in remote.received}
    utf8 = by_rcpt["иван@example.test"]
    assert "SMTPUTF8" in utf8.mail_options
    assert "BODY=8BITMIME" in utf8.mail_options
    assert "Здравей!".encode() in utf8.content
    assert f"petar@{IDN_ASCII}" in by_rcpt  # an IDN domain goes as its A-label


def test_starttls_is_used_when_offered(
    spool: Spool, settings: Settings, server_tls: ssl.SSLContext
) -> None:
    with remote_server(tls_context=server_tls, require_starttls=True) as tls_remote:
        enqueue(spool, ["secure@example.test"])
        report = run(runner(spool, settings, tls_remote).run_once())
    assert report.delivered == 1
    assert [r.tls for r in tls_remote.received] == [True]
    assert tls_remote.helo_names == [HOSTNAME, HOSTNAME]  # EHLO again after STARTTLS


def test_failed_starttls_falls_back_to_plain_text(
    spool: Spool, settings: Settings, broken_tls: ssl.SSLContext
) -> None:
    with remote_server(tls_context=broken_tls) as remote:
        enqueue(spool, ["plain@example.test"])
        report = run(runner(spool, settings, remote).run_once())
    assert report.delivered == 1
    assert [r.tls for r in remote.received] == [False]


def test_one_connection_serves_several_messages_in_a_run(
    make_settings: Callable[..., Settings], spool: Spool, remote: RemoteMx
) -> None:
    settings = make_settings(queue__max_parallel="1")
    for n in range(3):
        enqueue(spool, [f"user{n}@example.test"])
    report = run(runner(spool, settings, remote).run_once())
    assert report.delivered == 3
    assert len({r.session for r in remote.received}) == 1
    assert remote.helo_names == [HOSTNAME]


def _authenticator(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data == (b"gmina", b"s3cret-relay")
    return AuthResult(success=ok, handled=False)  # handled=True would send no reply


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smarthost_with_auth(
    make_settings: Callable[..., Settings], spool: Spool, dns_server: DnsServer
) -> None:
    with remote_server(
        auth_required=True, auth_require_tls=False, authenticator=_authenticator
    ) as relay:
        relay_env = {
            "relay__smarthost": f"127.0.0.1:{relay.port}",
            "relay__require_tls": "false",
            "relay__username": "gmina",
        }
        good = make_settings(**relay_env, relay__password="s3cret-relay")
        bad = make_settings(**relay_env, relay__password="wrong")
        enqueue(spool, ["someone@far-away.test"])
        t0 = time.time()
        wrong = run(QueueRunner(spool, bad, no_local).run_once(now=t0))
        assert (wrong.deferred, wrong.bounced) == (1, 0)  # an admin's mistake never bounces
        right = run(QueueRunner(spool, good, no_local).run_once(now=t0 + 61))
        assert right.delivered == 1
    assert relay.recipients() == ["someone@far-away.test"]
    assert not any(name == "far-away.test" for name, _ in dns_server.queries)


def test_smarthost_requiring_tls_refuses_plain_text(
    make_settings: Callable[..., Settings], spool: Spool, remote: RemoteMx
) -> None:
    settings = make_settings(relay__smarthost=f"127.0.0.1:{remote.port}")  # require_tls default
    enqueue(spool, ["someone@far-away.test"])
    report = run(QueueRunner(spool, settings, no_local).run_once())
    assert report.deferred == 1
    assert remote.received == []
    [message_id] = spool.ids()
    [error] = spool.load(message_id).state.last_errors.values()
    assert "STARTTLS" in error


def test_smarthost_with_starttls_and_auth(
    make_settings: Callable[..., Settings], spool: Spool, server_tls: ssl.SSLContext
) -> None:
    with remote_server(
        tls_context=server_tls, auth_required=True, authenticator=_authenticator
    ) as relay:
        settings = make_settings(
            relay__smarthost=f"127.0.0.1:{relay.port}",
            relay__username="gmina",
            relay__password="s3cret-relay",
        )
        enqueue(spool, ["someone@far-away.test"])
        report = run(QueueRunner(spool, settings, no_local).run_once())
    assert report.delivered == 1
    assert [r.tls for r in relay.received] == [True]


def test_local_recipients_go_through_deliver_local(
    spool: Spool, settings: Settings, remote: RemoteMx
) -> None:
    stored: list[tuple[str, bytes]] = []

    async def deliver_local(key: str, data: bytes) -> None:
        if key == "full@hosted.test":
            raise TemporaryFailure(452, "mailbox full", enhanced="4.2.2")
        if key == "gone@hosted.test":
            raise PermanentFailure(550, "mailbox disabled", enhanced="5.2.1")
        stored.append((key, data))

    local = [f"{LOCAL_PREFIX}ok@hosted.test", f"{LOCAL_PREFIX}full@hosted.test"]
    message_id = enqueue(spool, [*local, f"{LOCAL_PREFIX}gone@hosted.test", "r@example.test"])
    queue = runner(spool, settings, remote, deliver_local=deliver_local)
    report = run(queue.run_once())
    assert (report.delivered, report.deferred, report.bounced) == (2, 1, 1)
    assert [key for key, _ in stored] == ["ok@hosted.test"]
    assert run(queue.run_once()).delivered == 1  # the DSN; the message itself is not due
    assert remote.recipients() == ["r@example.test", SENDER]
    state = spool.load(message_id).state
    assert state.pending == [f"{LOCAL_PREFIX}full@hosted.test"]
    assert sorted(state.delivered) == sorted([local[0], "r@example.test"])
    dsn = remote.received[-1]
    _, blocks = parse_dsn(dsn.content)
    assert blocks[1]["Final-Recipient"] == "rfc822; gone@hosted.test"
    assert blocks[1]["Diagnostic-Code"] == "X-Muninet; 550 5.2.1 mailbox disabled"


def test_wake_starts_a_pass_at_once(
    make_settings: Callable[..., Settings], spool: Spool, remote: RemoteMx
) -> None:
    settings = make_settings(queue__scan_interval="1h")
    queue = runner(spool, settings, remote)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(queue.run_forever(stop))
        await asyncio.sleep(0.05)  # the first pass finds nothing
        await asyncio.to_thread(enqueue, spool, ["woken@example.test"])
        queue.wake()
        for _ in range(100):
            if remote.received:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 5)

    run(scenario())
    assert remote.recipients() == ["woken@example.test"]


def test_dsn_for_delay_and_utf8_addresses() -> None:
    header = MessageHeader(new_id(), "ivan@origin.test", ["ана@пример.test"], time.time(), 0)
    error: DeliveryError = TemporaryFailure(451, "greylisted", enhanced="4.7.1")
    data = build_report(
        header,
        "Subject: здравей\r\nFrom: ivan@origin.test\r\n\r\nbody\r\n".encode(),
        [RecipientStatus.from_error("ана@пример.test", error, action="delayed", remote_mta="mx")],
        hostname=HOSTNAME,
        now=time.time(),
    )
    message = email.message_from_bytes(data)
    assert message["Subject"] == "Delayed Mail (still being retried)"
    assert [p.get_content_type() for p in subparts(message)] == [
        "text/plain",
        "message/global-delivery-status",  # RFC 6533: UTF-8 addresses
        "message/global-headers",
    ]
    assert "Final-Recipient: utf-8; ана@пример.test" in data.decode()
    assert "Action: delayed\r\nStatus: 4.7.1" in data.decode()
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")


# -- the queue CLI ------------------------------------------------------------------------------


def test_queue_commands(
    env: dict[str, str], spool: Spool, remote: RemoteMx, make_settings: Callable[..., Settings]
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MUNINET_")}
    cli_env = {**base, **env}

    def start(*args: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(MUNINET), "queue", *args],
            env={**cli_env, **extra},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(process: subprocess.Popen[str], code: int = 0) -> str:
        out, err = process.communicate(timeout=60)
        assert process.returncode == code, (process.args, out, err)
        assert "Traceback" not in err
        return out if code == 0 else err

    first = enqueue(spool, ["x@example.test"])
    second = enqueue(spool, ["y@example.test"])
    doomed = enqueue(spool, ["z@example.test"])
    spool.save_state(
        second,
        DeliveryState(
            pending=["y@example.test"],
            attempts=2,
            next_attempt=time.time() + 3600,
            last_errors={"y@example.test": "451 4.3.0 try again later"},
        ),
    )

    # Side by side to save start-up time; none of the checks depends on the order.
    listing, table, shown, shown_text, unknown, retried, deleted = (
        start("list", "--json"),
        start("list"),
        start("show", second, "--json"),
        start("show", second),
        start("show", "00000000000000dead"),
        start("retry", second),
        start("delete", doomed),
    )
    rows = json.loads(finish(listing))
    assert [r["id"] for r in rows][:2] == [first, second]  # `doomed` may be gone already
    assert rows[1]["state"]["attempts"] == 2
    assert rows[1]["state"]["last_errors"] == {"y@example.test": "451 4.3.0 try again later"}
    assert second in finish(table)
    detail = json.loads(finish(shown))
    assert detail["header"]["recipients"] == ["y@example.test"]
    assert "Subject: outbound test" in detail["headers"]
    text = finish(shown_text)
    assert "pending:      y@example.test  (451 4.3.0 try again later)" in text
    error = finish(unknown, code=1)
    assert error.strip() == "muninet: no queued message 00000000000000dead"
    assert finish(retried).strip() == "1 message(s) due now"
    assert finish(deleted).strip() == f"message {doomed} deleted"
    assert spool.ids() == [first, second]
    assert spool.load(second).state.next_attempt == 0.0

    # `flush` delivers in the foreground (and so needs the database, for local
    # recipients and bounces); the fake remote plays the smarthost here.
    migrate = subprocess.run(
        [str(MUNINET), "db", "upgrade"], env=cli_env, capture_output=True, text=True, check=False
    )
    assert migrate.returncode == 0, migrate.stderr
    flushed = start(
        "flush",
        MUNINET_RELAY__SMARTHOST=f"127.0.0.1:{remote.port}",
        MUNINET_RELAY__REQUIRE_TLS="false",
    )
    out = finish(flushed)
    assert "2 recipient(s) delivered" in out
    assert "0 message(s) left in the queue" in out
    assert sorted(remote.recipients()) == ["x@example.test", "y@example.test"]
    assert spool.ids() == []
