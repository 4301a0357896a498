"""DKIM keys: generation and rotation, TXT records for zone files, signing and verifying
through a real DNS server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime

import dns.rdatatype
import dns.zone
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import select

from mailhost.dkim_sign import headers_to_sign, sign
from mailhost.filters.auth import SenderAuthFilter
from provisioning.errors import Conflict, NotFound
from provisioning.models import AuditEvent, DkimAlgorithm, DkimKeyStatus
from provisioning.services import dkim as dkim_service
from provisioning.services import domains
from provisioning.services.context import ServiceContext
from provisioning.settings import DnsSettings

from dns_server import DnsServer

Unit = Callable[[], AbstractContextManager[ServiceContext]]
YEAR = datetime.now(UTC).year
IDN = "община-трън.бг"
IDN_ASCII = "xn----7sbc2azacbvr9dr.xn--90ae"

MESSAGE = (
    b"From: Kmet <kmet@example.pl>\r\n"
    b"To: Ivan <ivan@example.org>\r\n"
    b"Subject: Budget 2026\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n"
    b"Message-ID: <1@example.pl>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Received: from somewhere\r\n"
    b"\r\n"
    b"The budget is attached.\r\n"
    b"  Second line with  spaces.\r\n"
)


# -- TXT records: 255-byte character-strings ----------------------------------------------------


def test_split_txt_cuts_at_255_bytes() -> None:
    assert dkim_service.split_txt("") == [""]
    assert dkim_service.split_txt("a" * 255) == ["a" * 255]
    assert dkim_service.split_txt("a" * 256) == ["a" * 255, "a"]
    assert dkim_service.split_txt("b" * 600) == ["b" * 255, "b" * 255, "b" * 90]
    # A two-byte character is never cut in half: 254 + "ż" would be 256 bytes.
    chunks = dkim_service.split_txt("a" * 254 + "żż")
    assert chunks == ["a" * 254, "żż"]
    assert all(len(c.encode()) <= 255 for c in chunks)


def test_zone_line_of_a_long_record_parses_back_to_the_value() -> None:
    value = "v=DKIM1; k=rsa; p=" + "A" * 392 + '"\\;'  # quotes and backslashes escaped
    line = dkim_service.txt_zone_line("m2026a._domainkey.example.pl", value)
    assert line.startswith('m2026a._domainkey.example.pl. IN TXT ( "v=DKIM1; k=rsa; p=AAA')
    zone = dns.zone.from_text(
        "@ 3600 IN SOA ns. host. 1 2 3 4 5\n@ IN NS ns.\n" + line + "\n",
        origin="example.pl.",
        relativize=False,
    )
    rdataset = zone.find_rdataset("m2026a._domainkey.example.pl.", dns.rdatatype.TXT)
    (record,) = list(rdataset)
    assert [len(s) for s in record.strings] == [255, len(value) - 255]
    assert b"".join(record.strings).decode() == value


# -- keys in the database -----------------------------------------------------------------------


def test_generate_rotate_and_activate(unit: Unit) -> None:
    with unit() as ctx:
        domains.create(ctx, "example.pl")
        first = dkim_service.generate(ctx, "example.pl", DkimAlgorithm.RSA)
        ed = dkim_service.generate(ctx, "EXAMPLE.pl", DkimAlgorithm.ED25519)
        second = dkim_service.generate(ctx, "example.pl", DkimAlgorithm.RSA)
        names = (first.selector, ed.selector, second.selector)
        statuses = (first.status, ed.status, second.status)
    assert names == (f"m{YEAR}a", f"e{YEAR}a", f"m{YEAR}b")
    assert statuses == (DkimKeyStatus.ACTIVE, DkimKeyStatus.ACTIVE, DkimKeyStatus.PENDING)

    with unit() as ctx:
        signing = dkim_service.signing_keys(ctx.session, "example.pl")
        assert [(k.selector, k.algorithm) for k in signing] == [
            (f"m{YEAR}a", DkimAlgorithm.RSA),
            (f"e{YEAR}a", DkimAlgorithm.ED25519),
        ]
        keys = {k.selector: k for k in dkim_service.list_keys(ctx.session, "example.pl")}
        # RSA: p= is a 2048-bit SubjectPublicKeyInfo; Ed25519: the raw 32-byte key.
        rsa_public = serialization.load_der_public_key(
            base64.b64decode(keys[f"m{YEAR}a"].public_key)
        )
        assert isinstance(rsa_public, rsa.RSAPublicKey)
        assert rsa_public.key_size == 2048
        assert len(base64.b64decode(keys[f"e{YEAR}a"].public_key)) == 32
        private = serialization.load_pem_private_key(
            keys[f"e{YEAR}a"].private_key.encode(), password=None
        )
        assert isinstance(private, ed25519.Ed25519PrivateKey)
        assert dkim_service.txt_value(keys[f"e{YEAR}a"]).startswith("v=DKIM1; k=ed25519; p=")

    with unit() as ctx:
        with pytest.raises(Conflict):
            dkim_service.activate(ctx, "example.pl", f"m{YEAR}a")  # already active
        with pytest.raises(NotFound):
            dkim_service.activate(ctx, "example.pl", "nope")
        dkim_service.activate(ctx, "example.pl", f"m{YEAR}b")

    with unit() as ctx:
        keys = {
            k.selector: k
            for k in dkim_service.list_keys(ctx.session, "example.pl", include_retired=True)
        }
        old = keys[f"m{YEAR}a"]
        assert old.status is DkimKeyStatus.RETIRED
        assert old.private_key == ""  # a retired key cannot sign any more
        assert old.retired_at is not None
        assert [k.selector for k in dkim_service.signing_keys(ctx.session, "example.pl")] == [
            f"e{YEAR}a",
            f"m{YEAR}b",
        ]
        # A selector is never reused, even after retirement.
        assert dkim_service.generate(ctx, "example.pl", DkimAlgorithm.RSA).selector == (f"m{YEAR}c")
        actions = list(ctx.session.scalars(select(AuditEvent.action)))
        assert actions.count("dkim.generate") == 4
        assert "dkim.activate" in actions


def test_keys_of_unknown_domains(unit: Unit) -> None:
    with unit() as ctx:
        with pytest.raises(NotFound):
            dkim_service.generate(ctx, "not-hosted.pl", DkimAlgorithm.RSA)
        assert dkim_service.signing_keys(ctx.session, "not-hosted.pl") == []
        assert dkim_service.signing_keys(ctx.session, "not a domain") == []


# -- sign, publish, verify through real DNS --------------------------------------------------


@pytest.fixture
def dns_zone() -> Iterator[DnsServer]:
    """An empty zone; tests add records to `records` before querying."""
    server = DnsServer({}).start()
    yield server
    server.stop()


def _publish(server: DnsServer, name: str, value: str) -> None:
    server.records[name.lower().rstrip(".") + "."] = [("TXT", dkim_service.txt_rdata(value))]


def _verify(server: DnsServer, message: bytes) -> list[tuple[str, str, str]]:
    flt = SenderAuthFilter(
        DnsSettings(nameservers=["127.0.0.1"], port=server.port, timeout=2), "mx.test"
    )
    results = asyncio.run(asyncio.to_thread(flt.verify_dkim, message))
    return [(r.result, r.domain, r.selector) for r in results]


@pytest.mark.parametrize("domain_name", ["example.pl", IDN])
def test_sign_then_verify_rsa_and_ed25519_through_dns(
    unit: Unit, dns_zone: DnsServer, domain_name: str
) -> None:
    with unit() as ctx:
        domains.create(ctx, domain_name)
        rsa_key = dkim_service.generate(ctx, domain_name, DkimAlgorithm.RSA)
        ed_key = dkim_service.generate(ctx, domain_name, DkimAlgorithm.ED25519)
        ascii_name = rsa_key.domain.ascii_name
        for key in (rsa_key, ed_key):
            name = dkim_service.record_name(ascii_name, key.selector)
            _publish(dns_zone, name, dkim_service.txt_value(key))
        keys = dkim_service.signing_keys(ctx.session, domain_name)
    if domain_name == IDN:
        assert ascii_name == IDN_ASCII
    message = MESSAGE.replace(b"example.pl", ascii_name.encode())

    signed = sign(message, domain_name, keys)

    assert signed.endswith(message)
    header_block = signed[: -len(message)]
    assert header_block.count(b"DKIM-Signature:") == 2
    assert b"a=rsa-sha256" in header_block
    assert b"a=ed25519-sha256" in header_block
    assert f"d={ascii_name};".encode() in header_block
    # The RSA record is longer than 255 bytes: it was served as several strings.
    rsa_record = dns_zone.records[f"m{YEAR}a._domainkey.{ascii_name}."][0][1]
    assert rsa_record.count('"') == 4
    assert sorted(_verify(dns_zone, signed)) == sorted(
        [("pass", ascii_name, f"e{YEAR}a"), ("pass", ascii_name, f"m{YEAR}a")]
    )
    assert (f"m{YEAR}a._domainkey.{ascii_name}", "TXT") in dns_zone.queries

    # A changed body, and a From header added after signing (oversigned), both fail.
    tampered = signed.replace(b"The budget", b"The BUDGET")
    assert {r for r, _, _ in _verify(dns_zone, tampered)} == {"fail"}
    extra_from = b"From: Boss <boss@evil.example>\r\n" + signed
    assert {r for r, _, _ in _verify(dns_zone, extra_from)} == {"fail"}


def test_signed_headers_follow_rfc6376() -> None:
    names = headers_to_sign(MESSAGE)
    assert names.count(b"from") == 2  # oversigned
    assert names.count(b"subject") == 2
    assert b"received" not in names
    assert b"content-type" in names
    assert b"list-id" not in names  # not in the message: not signed


def test_unpublished_key_and_no_keys(dns_zone: DnsServer) -> None:
    pair = dkim_service.new_key_pair(DkimAlgorithm.ED25519)
    key = dkim_service.SigningKey.from_pem(
        "example.pl", "e2026z", DkimAlgorithm.ED25519, pair.private_pem
    )
    assert sign(MESSAGE, "example.pl", []) == MESSAGE
    assert sign(MESSAGE, "other.pl", [key]) == MESSAGE  # a key of another domain is not used
    signed = sign(MESSAGE, "example.pl", [key])
    assert _verify(dns_zone, signed) == [("permerror", "example.pl", "e2026z")]
    assert _verify(dns_zone, MESSAGE) == []


# -- the CLI --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_cli_generate_and_show(
    unit: Unit, cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    with unit() as ctx:
        domains.create(ctx, IDN)
    generated = cli("dkim", "generate", IDN, "--algorithm", "rsa")
    assert generated.returncode == 0, generated.stderr
    assert f"m{YEAR}a (rsa)" in generated.stdout
    shown = cli("dkim", "show", IDN)
    assert shown.returncode == 0, shown.stderr
    with unit() as ctx:
        (key,) = dkim_service.list_keys(ctx.session, IDN)
        value = dkim_service.txt_value(key)
    lines = shown.stdout.splitlines()
    assert f"; name:  m{YEAR}a._domainkey.{IDN_ASCII}" in lines
    assert f"; value: {value}" in lines
    zone_line = next(line for line in lines if " IN TXT " in line)
    zone = dns.zone.from_text(
        f"@ 3600 IN SOA ns. host. 1 2 3 4 5\n@ IN NS ns.\n{zone_line}\n",
        origin=f"{IDN_ASCII}.",
        relativize=False,
    )
    (record,) = list(zone.find_rdataset(f"m{YEAR}a._domainkey.{IDN_ASCII}.", dns.rdatatype.TXT))
    assert all(len(s) <= 255 for s in record.strings)
    assert b"".join(record.strings).decode() == value
