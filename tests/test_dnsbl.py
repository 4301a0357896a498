"""DNSBL checks of MX clients, against a real DNS server on 127.0.0.1 with test zones.

The lookup itself is tested with public addresses (the test server answers for
them; nothing leaves the machine); the SMTP refusal end to end through a real
`muninet smtpd`, whose clients connect from 127.0.0.1: there `dnsbl.check_loopback`
(a setting for tests) makes the loopback client subject to the check, and a second
server with the default shows the loopback exemption.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailhost.dnsbl import DnsblChecker, Listing, query_name
from provisioning.services import aliases, domains, mailboxes, members
from provisioning.settings import DnsSettings

from conftest import FAST_HASHING
from dns_server import DnsServer
from mailserver import MailServer, provisioned

LISTED, CLEAN, LISTED_V6 = "81.2.69.142", "81.2.69.143", "2a02:2f0c:1::25"
LISTED_NAME = "142.69.2.81"
V6_NAME = ".".join(reversed("2a022f0c000100000000000000000025"))
ZONES = {
    f"{LISTED_NAME}.bl.test": [("A", "127.0.0.2"), ("TXT", '"spam source"')],
    f"{LISTED_NAME}.second.test": [("A", "127.0.0.4")],
    f"{V6_NAME}.bl.test": [("A", "127.0.0.3")],
    # Spamhaus's "query refused" answer and a resolver that invents addresses.
    f"{LISTED_NAME}.refusing.test": [("A", "127.255.255.254")],
    f"{CLEAN}.refusing.test": [("A", "127.255.255.254")],
    f"{LISTED_NAME}.bogus.test": [("A", "198.51.100.7")],
    # The loopback client of the SMTP tests.
    "1.0.0.127.bl.test": [("A", "127.0.0.2")],
}
DROPPED = [f"{LISTED_NAME}.down.test", "1.0.0.127.down.test"]
SERVFAIL = [f"{LISTED_NAME}.broken.test"]


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    server = DnsServer(ZONES, drop=DROPPED, servfail=SERVFAIL).start()
    yield server
    server.stop()


def checker(dns: DnsServer, *zones: str, **options: object) -> DnsblChecker:
    settings = DnsSettings(nameservers=["127.0.0.1"], port=dns.port, timeout=5)
    options.setdefault("timeout", 1.0)
    return DnsblChecker(settings, zones, **options)  # type: ignore[arg-type]


def asked(dns: DnsServer, suffix: str) -> int:
    return sum(1 for name, _ in dns.queries if name.endswith(suffix))


def test_query_names() -> None:
    assert query_name("192.0.2.99", "bl.example") == "99.2.0.192.bl.example."
    assert query_name("2001:db8::1", "bl.example.") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example."
    )


def test_listed_clean_and_ipv6(dns: DnsServer) -> None:
    bl = checker(dns, "bl.test")
    listing = asyncio.run(bl.check(LISTED))
    assert listing == Listing(LISTED, "bl.test", ("127.0.0.2",))
    assert listing.reply == (
        f"554 5.7.1 Service unavailable; client [{LISTED}] blocked using bl.test"
    )
    assert asyncio.run(bl.check(CLEAN)) is None
    assert asyncio.run(bl.check(LISTED_V6)) == Listing(LISTED_V6, "bl.test", ("127.0.0.3",))
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d: looked up as IPv4.
    mapped = asyncio.run(bl.check(f"::ffff:{LISTED}"))
    assert mapped is not None and mapped.zone == "bl.test"


def test_first_listing_zone_in_configured_order(dns: DnsServer) -> None:
    listing = asyncio.run(checker(dns, "clean.test", "second.test", "bl.test").check(LISTED))
    assert listing == Listing(LISTED, "second.test", ("127.0.0.4",))


def test_refused_queries_bogus_answers_and_dns_failures_never_list(dns: DnsServer) -> None:
    for zone in ("refusing.test", "bogus.test", "broken.test", "down.test", "nxdomain.test"):
        bl = checker(dns, zone, timeout=0.5)
        assert asyncio.run(bl.check(LISTED)) is None, zone
    # A zone that does not answer does not hide another zone's listing, and the
    # zones are asked at once: the whole check takes one timeout, not the sum.
    bl = checker(dns, "down.test", "broken.test", "bl.test", timeout=0.5)
    started = time.monotonic()
    listing = asyncio.run(bl.check(LISTED))
    elapsed = time.monotonic() - started
    assert listing is not None and listing.zone == "bl.test"
    assert 0.4 < elapsed < 1.5, elapsed


def test_lookups_do_not_block_the_event_loop(dns: DnsServer) -> None:
    bl = checker(dns, "down.test", timeout=0.6)

    async def scenario() -> tuple[Listing | None, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        result = await bl.check(LISTED)
        task.cancel()
        return result, ticks

    result, ticks = asyncio.run(scenario())
    assert result is None
    assert ticks > 30  # the loop kept running all through the 0.6 s wait


def test_cache_and_shared_lookups(dns: DnsServer) -> None:
    bl = checker(dns, "bl.test", cache_ttl=300)
    before = asked(dns, ".bl.test")

    async def twice_at_once() -> list[Listing | None]:
        bl.start(LISTED)  # as at connection time
        return list(await asyncio.gather(bl.check(LISTED), bl.check(LISTED)))

    first = asyncio.run(twice_at_once())
    assert first[0] == first[1] and first[0] is not None
    assert asked(dns, ".bl.test") == before + 1  # one query for three callers
    assert asyncio.run(bl.check(LISTED)) == first[0]
    assert asyncio.run(bl.check(CLEAN)) is None
    assert asyncio.run(bl.check(CLEAN)) is None
    assert asked(dns, ".bl.test") == before + 2  # answers, clean ones too, come from the cache
    assert bl.counts["lookups"] == 2 and bl.counts["listed"] == 1

    uncached = checker(dns, "bl.test", cache_ttl=0)
    asyncio.run(uncached.check(LISTED))
    asyncio.run(uncached.check(LISTED))
    assert asked(dns, ".bl.test") == before + 4


def test_exempt_clients_are_never_looked_up(dns: DnsServer) -> None:
    bl = checker(dns, "bl.test")
    before = len(dns.queries)
    for ip in (
        "127.0.0.1",
        "127.3.4.5",
        "::1",
        "10.1.2.3",
        "192.168.1.20",
        "172.16.0.9",
        "fe80::1",
        "fd00::5",
        "100.64.0.1",
        "not an address",
    ):
        assert not bl.applies_to(ip), ip
        assert asyncio.run(bl.check(ip)) is None
    assert len(dns.queries) == before
    assert bl.applies_to(LISTED) and bl.applies_to(LISTED_V6)
    assert not checker(dns).applies_to(LISTED)  # no zones: no check at all
    loopback = checker(dns, "bl.test", check_loopback=True)
    assert loopback.applies_to("127.0.0.1") and not loopback.applies_to("10.1.2.3")
    assert asyncio.run(loopback.check("127.0.0.1")) == Listing(
        "127.0.0.1", "bl.test", ("127.0.0.2",)
    )


# -- end to end: the MX refuses at RCPT, postmaster stays reachable -----------------------

DOMAIN = "info.association.pl"
PW = "correct horse battery"
TLS = ssl._create_unverified_context()


def _server(state: Path, dns: DnsServer, **dnsbl: str) -> MailServer:
    env = {
        "MUNINET_PATHS__STATE_DIR": str(state),
        "MUNINET_DNS__NAMESERVERS": "127.0.0.1",
        "MUNINET_DNS__PORT": str(dns.port),
        "MUNINET_DNS__TIMEOUT": "1s",
        **{f"MUNINET_DNSBL__{key.upper()}": value for key, value in dnsbl.items()},
        **FAST_HASHING,
    }
    with provisioned(env) as ctx:
        members.create(ctx, "biuro", "Biuro Związku", kind="association")
        domains.create(ctx, DOMAIN)
        mailboxes.create(ctx, f"sekretariat@{DOMAIN}", "biuro", password=PW)
        aliases.create(ctx, f"postmaster@{DOMAIN}", [f"sekretariat@{DOMAIN}"], member_slug="biuro")
    server = MailServer(env=env, state_dir=state)
    server.start("--no-queue")
    return server


@pytest.fixture(scope="module")
def listed_server(dns: DnsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    server = _server(
        tmp_path_factory.mktemp("dnsbl"), dns, client_zones="bl.test", check_loopback="true"
    )
    yield server
    server.stop()


def _message(subject: str) -> bytes:
    return f"From: a@example.org\r\nSubject: {subject}\r\n\r\nHello\r\n".encode()


def test_listed_client_is_refused_at_rcpt_but_reaches_postmaster(
    listed_server: MailServer,
) -> None:
    with smtplib.SMTP("127.0.0.1", listed_server.smtp_port, timeout=20) as client:
        client.ehlo("spammer.example")
        assert client.mail("a@example.org")[0] == 250
        code, text = client.rcpt(f"sekretariat@{DOMAIN}")
        assert (code, text.decode()) == (
            554,
            "5.7.1 Service unavailable; client [127.0.0.1] blocked using bl.test",
        )
        assert client.rcpt(f"PostMaster@{DOMAIN}")[0] == 250
        assert client.data(_message("wrongly listed"))[0] == 250
    assert len(listed_server.maildir_files(f"sekretariat@{DOMAIN}")) == 1
    assert "listed in bl.test (127.0.0.2)" in listed_server.log()


def test_submission_and_loopback_ports_are_not_checked(listed_server: MailServer) -> None:
    with smtplib.SMTP("127.0.0.1", listed_server.submission_port, timeout=20) as client:
        client.starttls(context=TLS)
        client.login(f"sekretariat@{DOMAIN}", PW)
        client.sendmail(f"sekretariat@{DOMAIN}", [f"sekretariat@{DOMAIN}"], _message("sub"))
    with smtplib.SMTP("127.0.0.1", listed_server.local_port, timeout=20) as client:
        client.sendmail(f"sekretariat@{DOMAIN}", [f"sekretariat@{DOMAIN}"], _message("local"))


def test_dns_failure_never_refuses(dns: DnsServer, tmp_path: Path) -> None:
    server = _server(
        tmp_path, dns, client_zones="down.test", check_loopback="true", client_timeout="0.5s"
    )
    try:
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=20) as client:
            client.ehlo("client.example")
            client.mail("a@example.org")
            assert client.rcpt(f"sekretariat@{DOMAIN}")[0] == 250
        assert "DNSBL lookup of [127.0.0.1] in down.test failed: timeout" in server.log()
    finally:
        server.stop()


def test_loopback_clients_are_exempt_by_default(dns: DnsServer, tmp_path: Path) -> None:
    before = asked(dns, "1.0.0.127.bl.test")
    server = _server(tmp_path, dns, client_zones="bl.test")
    try:
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=20) as client:
            client.ehlo("client.example")
            client.mail("a@example.org")
            assert client.rcpt(f"sekretariat@{DOMAIN}")[0] == 250
    finally:
        server.stop()
    assert asked(dns, "1.0.0.127.bl.test") == before
