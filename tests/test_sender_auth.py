"""Inbound SPF, DKIM and DMARC (mailhost/filters/auth.py) against a real DNS server on
127.0.0.1: results in Authentication-Results, DMARC p=reject refused with 550."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from mailhost.dkim_sign import sign
from mailhost.filters.auth import SenderAuthFilter, aligned
from mailhost.filters.base import Action, MessageInfo, Pipeline, Verdict
from provisioning.dnscheck import organizational_domain
from provisioning.models import DkimAlgorithm
from provisioning.services import dkim as dkim_service
from provisioning.settings import DnsSettings

from dns_server import DnsServer

HOST = "mx.muninet.test"
GOOD_IP = "192.0.2.1"  # allowed by every SPF record below
BAD_IP = "203.0.113.66"
IDN = "община-трън.бг"
IDN_ASCII = "xn----7sbc2azacbvr9dr.xn--90ae"


def _spf(text: str) -> list[tuple[str, str]]:
    return [("TXT", f'"{text}"')]


ZONE: dict[str, list[tuple[str, str]]] = {
    # SPF outcomes
    "pass.test": _spf(f"v=spf1 ip4:{GOOD_IP} -all"),
    "soft.test": _spf(f"v=spf1 ip4:{GOOD_IP} ~all"),
    "incl.test": _spf("v=spf1 include:spf.provider.test -all"),
    "spf.provider.test": _spf("v=spf1 a:out.provider.test ?all"),
    "out.provider.test": [("A", "198.51.100.25")],
    # DMARC policies (each domain's mail is allowed only from GOOD_IP)
    "reject.test": _spf(f"v=spf1 ip4:{GOOD_IP} -all"),
    "_dmarc.reject.test": _spf("v=DMARC1; p=reject; rua=mailto:d@reject.test"),
    "quarantine.test": _spf(f"v=spf1 ip4:{GOOD_IP} -all"),
    "_dmarc.quarantine.test": _spf("v=DMARC1; p=quarantine"),
    "none.test": _spf(f"v=spf1 ip4:{GOOD_IP} -all"),
    "_dmarc.none.test": _spf("v=DMARC1; p=none"),
    "strict.test": _spf(f"v=spf1 ip4:{GOOD_IP} -all"),
    "_dmarc.strict.test": _spf("v=DMARC1; p=reject; aspf=s; adkim=s"),
    "sub.strict.test": _spf(f"v=spf1 ip4:{GOOD_IP} -all"),
    "bounces.reject.test": _spf(f"v=spf1 ip4:{GOOD_IP} -all"),
    "zwiazek.pl": _spf(f"v=spf1 ip4:{GOOD_IP} -all"),
    "_dmarc.zwiazek.pl": _spf("v=DMARC1; p=reject; sp=quarantine"),
    "timeout.test": _spf(f"v=spf1 ip4:{GOOD_IP} -all"),
    IDN_ASCII: _spf(f"v=spf1 ip4:{GOOD_IP} -all"),
    f"_dmarc.{IDN_ASCII}": _spf("v=DMARC1; p=reject"),
}


@pytest.fixture(scope="module")
def dns_zone() -> Iterator[DnsServer]:
    server = DnsServer(ZONE, drop=["_dmarc.timeout.test"]).start()
    yield server
    server.stop()


@pytest.fixture
def auth(dns_zone: DnsServer) -> SenderAuthFilter:
    return SenderAuthFilter(
        DnsSettings(nameservers=["127.0.0.1"], port=dns_zone.port, timeout=1), HOST
    )


def _message(
    from_domain: str,
    *,
    mail_from: str | None = None,
    ip: str = GOOD_IP,
    data: bytes | None = None,
    auth_user: str | None = None,
) -> MessageInfo:
    if data is None:
        data = (
            f"From: Office <office@{from_domain}>\r\nTo: kmet@gmina.pl\r\n"
            f"Subject: hello\r\nMessage-ID: <x@{from_domain}>\r\n\r\nHello\r\n"
        ).encode()
    return MessageInfo(
        data=data,
        mail_from=f"office@{from_domain}" if mail_from is None else mail_from,
        recipients=["kmet@gmina.pl"],
        recipient_domains=["gmina.pl"],
        client_ip=ip,
        helo="client.example",
        auth_user=auth_user,
    )


def _check(flt: SenderAuthFilter, message: MessageInfo) -> Verdict:
    return asyncio.run(flt.check(message))


def _results(verdict: Verdict) -> str:
    (value,) = [v for n, v in verdict.headers if n == "Authentication-Results"]
    assert value.startswith(f"{HOST}; ")
    return value


# -- SPF --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "ip", "expected"),
    [
        ("pass.test", GOOD_IP, "pass"),
        ("pass.test", BAD_IP, "fail"),
        ("soft.test", BAD_IP, "softfail"),
        ("incl.test", "198.51.100.25", "pass"),  # through include: and a:
        ("incl.test", BAD_IP, "fail"),  # the include's ?all does not match: -all does
        ("nothing.test", GOOD_IP, "none"),  # NXDOMAIN
    ],
)
def test_spf_results(auth: SenderAuthFilter, domain: str, ip: str, expected: str) -> None:
    verdict = _check(auth, _message(domain, ip=ip))
    assert verdict.action is Action.ACCEPT
    assert f"spf={expected} smtp.mailfrom=office@{domain};" in _results(verdict)


def test_null_sender_checks_the_helo_name(auth: SenderAuthFilter, dns_zone: DnsServer) -> None:
    message = MessageInfo(
        data=b"From: MAILER-DAEMON@pass.test\r\n\r\nbounce\r\n",
        mail_from="",
        recipients=["kmet@gmina.pl"],
        recipient_domains=["gmina.pl"],
        client_ip=GOOD_IP,
        helo="pass.test",
    )
    value = _results(_check(auth, message))
    assert "spf=pass smtp.helo=pass.test;" in value


# -- DMARC ------------------------------------------------------------------------------------


def test_dmarc_reject_is_refused_with_550(auth: SenderAuthFilter) -> None:
    verdict = _check(auth, _message("reject.test", ip=BAD_IP))
    assert verdict.action is Action.REJECT
    assert verdict.reply.startswith("550 5.7.1 ")
    assert "reject.test" in verdict.reply
    assert "dmarc_reject" in verdict.labels
    # Through the pipeline, the client gets exactly that reply.
    pipeline = Pipeline([auth], strip_headers=auth.OWNED_HEADERS)
    result = asyncio.run(pipeline.run(_message("reject.test", ip=BAD_IP)))
    assert not result.accepted
    assert result.reply is not None and result.reply.startswith("550 5.7.1")
    assert pipeline.stats()["sender-auth"]["rejected"] == 1


def test_dmarc_pass_through_aligned_spf(auth: SenderAuthFilter) -> None:
    verdict = _check(auth, _message("reject.test"))
    assert verdict.action is Action.ACCEPT
    value = _results(verdict)
    assert "spf=pass" in value and "dkim=none" in value
    assert "dmarc=pass (p=reject dis=none) header.from=reject.test" in value
    # Relaxed alignment: the envelope of a subdomain counts for the parent.
    relaxed = _check(auth, _message("reject.test", mail_from="b@bounces.reject.test"))
    assert relaxed.action is Action.ACCEPT
    assert "dmarc=pass" in _results(relaxed)


def test_dmarc_strict_alignment(auth: SenderAuthFilter) -> None:
    # aspf=s: SPF passes for sub.strict.test, which is not strict.test itself.
    verdict = _check(auth, _message("strict.test", mail_from="x@sub.strict.test"))
    assert verdict.action is Action.REJECT
    assert verdict.code == 550


def test_dmarc_quarantine_and_none_are_tagged(auth: SenderAuthFilter) -> None:
    quarantined = _check(auth, _message("quarantine.test", ip=BAD_IP))
    assert quarantined.action is Action.ACCEPT
    assert "dmarc=fail (p=quarantine dis=quarantine) header.from=quarantine.test" in (
        _results(quarantined)
    )
    assert ("X-Spam-Flag", "YES") in quarantined.headers  # the Sieve rule files it into Junk
    assert "dmarc_quarantine" in quarantined.labels

    monitored = _check(auth, _message("none.test", ip=BAD_IP))
    assert monitored.action is Action.ACCEPT
    assert "dmarc=fail (p=none dis=none) header.from=none.test" in _results(monitored)
    assert ("X-Spam-Flag", "YES") not in monitored.headers


def test_dmarc_of_a_subdomain_uses_the_organizational_domain(auth: SenderAuthFilter) -> None:
    # info.zwiazek.pl has no record: _dmarc.zwiazek.pl applies, with its sp=quarantine.
    verdict = _check(auth, _message("info.zwiazek.pl", ip=BAD_IP))
    assert verdict.action is Action.ACCEPT
    assert "dmarc=fail (p=quarantine dis=quarantine) header.from=info.zwiazek.pl" in (
        _results(verdict)
    )
    assert aligned("info.zwiazek.pl", "zwiazek.pl", "r")
    assert not aligned("info.zwiazek.pl", "zwiazek.pl", "s")
    assert not aligned("zwiazek.pl", "powiat.pl", "r")
    # gmina.pl is itself a public suffix: urzad.gmina.pl and inny.gmina.pl are strangers.
    assert organizational_domain("urzad.gmina.pl") == "urzad.gmina.pl"
    assert not aligned("urzad.gmina.pl", "inny.gmina.pl", "r")
    assert organizational_domain(IDN) == IDN_ASCII


def test_a_second_from_header_cannot_dodge_reject(auth: SenderAuthFilter) -> None:
    data = b"From: a@none.test\r\nFrom: Bank <office@reject.test>\r\nSubject: x\r\n\r\nbody\r\n"
    verdict = _check(auth, _message("none.test", ip=BAD_IP, data=data))
    assert verdict.action is Action.REJECT


def test_dns_timeout_is_temperror_and_accepted(auth: SenderAuthFilter, dns_zone: DnsServer) -> None:
    verdict = _check(auth, _message("timeout.test", ip=BAD_IP))
    assert verdict.action is Action.ACCEPT
    assert "dmarc=temperror header.from=timeout.test" in _results(verdict)


def test_dkim_aligned_signature_passes_dmarc_despite_spf_fail(
    auth: SenderAuthFilter, dns_zone: DnsServer
) -> None:
    for domain in ("reject.test", IDN_ASCII):
        pair = dkim_service.new_key_pair(DkimAlgorithm.ED25519)
        dns_zone.records[f"e2026a._domainkey.{domain}."] = [
            ("TXT", dkim_service.txt_rdata(f"v=DKIM1; k=ed25519; p={pair.public_value}"))
        ]
        key = dkim_service.SigningKey.from_pem(
            domain, "e2026a", DkimAlgorithm.ED25519, pair.private_pem
        )
        shown = IDN if domain == IDN_ASCII else domain  # From in Unicode (SMTPUTF8)
        data = (
            f"From: Office <office@{shown}>\r\nTo: kmet@gmina.pl\r\n"
            f"Subject: signed\r\n\r\nSigned body\r\n"
        ).encode()
        signed = sign(data, shown, [key])
        # Forwarded: it arrives from an address SPF does not allow.
        verdict = _check(auth, _message(shown, ip=BAD_IP, data=signed))
        assert verdict.action is Action.ACCEPT, verdict.reply
        value = _results(verdict)
        assert f"spf=fail smtp.mailfrom=office@{domain};" in value
        assert f"dkim=pass header.d={domain} header.s=e2026a;" in value
        assert f"dmarc=pass (p=reject dis=none) header.from={domain}" in value
        assert (f"_dmarc.{domain}", "TXT") in dns_zone.queries
        # The same message with its body changed: DKIM fails, and DMARC rejects.
        broken = _check(auth, _message(shown, ip=BAD_IP, data=signed + b"PS\r\n"))
        assert broken.action is Action.REJECT


def test_authenticated_submission_is_not_checked(
    auth: SenderAuthFilter, dns_zone: DnsServer
) -> None:
    before = len(dns_zone.queries)
    verdict = _check(auth, _message("reject.test", ip=BAD_IP, auth_user="office@reject.test"))
    assert verdict == Verdict.accept()
    assert len(dns_zone.queries) == before


def test_forged_results_are_replaced_by_the_pipeline(auth: SenderAuthFilter) -> None:
    data = (
        f"Authentication-Results: {HOST}; dmarc=pass\r\n"
        "From: office@none.test\r\nSubject: x\r\n\r\nbody\r\n"
    ).encode()
    pipeline = Pipeline([auth], strip_headers=auth.OWNED_HEADERS)
    result = asyncio.run(pipeline.run(_message("none.test", ip=BAD_IP, data=data)))
    stored = result.apply(data)
    assert stored.count(b"Authentication-Results:") == 1
    assert b"dmarc=fail" in stored


def test_dns_waits_do_not_block_the_event_loop(auth: SenderAuthFilter) -> None:
    """While the DMARC lookup times out (1 s), other coroutines keep running."""
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.02)

    async def scenario() -> tuple[Verdict, float]:
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        started = time.monotonic()
        verdict = await auth.check(_message("timeout.test", ip=BAD_IP))
        elapsed = time.monotonic() - started
        stop.set()
        await task
        return verdict, elapsed

    verdict, elapsed = asyncio.run(scenario())
    assert verdict.action is Action.ACCEPT
    assert elapsed >= 0.9  # the lookup really waited for the timeout
    assert ticks >= elapsed / 0.02 * 0.5  # and the loop kept ticking meanwhile
