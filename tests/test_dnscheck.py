"""DNS health checks (provisioning/dnscheck.py, `muninet domain check`) against test zones
served by a real DNS server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import dns.rdatatype
import dns.zone
import pytest

from provisioning import dnscheck
from provisioning.dnscheck import CheckResult, ExpectedDkim, Status
from provisioning.models import DkimAlgorithm
from provisioning.services import dkim as dkim_service
from provisioning.services import domains
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings, load_settings

from dns_server import DnsServer

Unit = Callable[[], AbstractContextManager[ServiceContext]]
HOST = "mail.association.test"
IP = "192.0.2.10"
REV = "10.2.0.192.in-addr.arpa"
IDN = "община-трън.бг"
IDN_ASCII = "xn----7sbc2azacbvr9dr.xn--90ae"
PAIR = dkim_service.new_key_pair(DkimAlgorithm.RSA)
KEY = ExpectedDkim("m2026a", f"v=DKIM1; k=rsa; p={PAIR.public_value}", "active")
OTHER = dkim_service.new_key_pair(DkimAlgorithm.RSA)


def _txt(text: str) -> tuple[str, str]:
    return ("TXT", dkim_service.txt_rdata(text))


def _good_zone(
    domain: str, dkim_value: str, selector: str = "m2026a"
) -> dict[str, list[tuple[str, str]]]:
    return {
        domain: [("MX", f"10 {HOST}."), _txt(f"v=spf1 a:{HOST} -all"), _txt("other=text")],
        f"{selector}._domainkey.{domain}": [_txt(dkim_value)],
        f"_dmarc.{domain}": [_txt(f"v=DMARC1; p=reject; rua=mailto:d@{domain}")],
        f"_mta-sts.{domain}": [_txt("v=STSv1; id=20261123")],
        f"_smtp._tls.{domain}": [_txt(f"v=TLSRPTv1; rua=mailto:tls@{domain}")],
    }


ZONE: dict[str, list[tuple[str, str]]] = {
    HOST: [("A", IP)],
    REV: [("PTR", f"{HOST}.")],
    # another server address: wrong PTR, listed on the test blocklist
    "99.2.0.192.in-addr.arpa": [("PTR", "dsl-99.isp.test.")],
    "99.2.0.192.bl.test": [("A", "127.0.0.2"), _txt("listed for spam, see bl.test")],
    "99.2.0.192.refusing.test": [("A", "127.255.255.254")],
    **_good_zone("good.test", KEY.value),
    # everything wrong
    "bad.test": [
        ("MX", "10 mx.other.test."),
        _txt("v=spf1 a:mx.other.test -all"),
        _txt("v=spf1 -all"),
    ],
    "m2026a._domainkey.bad.test": [_txt(f"v=DKIM1; k=rsa; p={OTHER.public_value}")],
    "_mta-sts.bad.test": [_txt("v=STSv1; id=not valid!")],
    "_dmarc.bad.test": [_txt("v=DMARC1; p=none")],
    # one SPF record that does not allow us; DMARC inherited from the org domain
    "nospf.test": [
        ("MX", f"20 {HOST}."),
        ("MX", "10 mx.other.test."),
        _txt("v=spf1 ip4:198.51.100.0/24 -all"),
    ],
    "mx.other.test": [("A", "198.51.100.1")],
    "_dmarc.parent.test": [_txt("v=DMARC1; p=quarantine")],
    "sub.parent.test": [("MX", f"10 {HOST}."), _txt(f"v=spf1 ip4:{IP} +all")],
    # the mail of a domain that is only half set up
    "new.test": [("A", "203.0.113.1")],
}


@pytest.fixture(scope="module")
def dns_zone() -> Iterator[DnsServer]:
    server = DnsServer(ZONE, servfail=["_dmarc.broken.test", "broken.test"]).start()
    yield server
    server.stop()


def _dns_env(server: DnsServer) -> dict[str, str]:
    return {
        "MUNINET_DNS__NAMESERVERS": '["127.0.0.1"]',
        "MUNINET_DNS__PORT": str(server.port),
        "MUNINET_DNS__TIMEOUT": "2s",
        "MUNINET_ASSOCIATION__HOSTNAME": HOST,
    }


@pytest.fixture
def dns_settings(dns_zone: DnsServer) -> Settings:
    return load_settings(_dns_env(dns_zone))


def _by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check: r for r in results}


def _check(settings: Settings, domain: str, **kwargs: Any) -> dict[str, CheckResult]:
    kwargs.setdefault("dnsbl_zones", ["bl.test"])
    return _by_check(dnscheck.check_domain(settings, domain, **kwargs))


def test_a_correct_domain_is_all_ok(dns_settings: Settings) -> None:
    results = _check(dns_settings, "good.test", dkim=[KEY])
    assert {name: r.status for name, r in results.items()} == {
        "server address": Status.OK,
        "MX": Status.OK,
        "SPF": Status.OK,
        "DKIM m2026a": Status.OK,
        "DMARC": Status.OK,
        f"PTR {IP}": Status.OK,
        "MTA-STS": Status.OK,
        "TLS-RPT": Status.OK,
        f"DNSBL bl.test {IP}": Status.OK,
    }
    assert results["MX"].found == f"10 {HOST}."
    assert results["SPF"].found == f"v=spf1 a:{HOST} -all"
    assert results["DKIM m2026a"].found == KEY.value  # joined from two strings
    assert all(r.publish == "" for r in results.values())
    assert not dnscheck.failed(list(results.values()))


def test_wrong_records_are_reported_with_the_fix(dns_settings: Settings) -> None:
    results = _check(dns_settings, "bad.test", dkim=[KEY])
    status = {name: r.status for name, r in results.items()}
    assert status["MX"] is Status.WRONG
    assert status["SPF"] is Status.WRONG  # two records
    assert "several SPF records" in results["SPF"].note
    assert status["DKIM m2026a"] is Status.WRONG
    assert results["DKIM m2026a"].found.endswith(OTHER.public_value)
    assert status["DMARC"] is Status.WARNING  # p=none
    assert status["MTA-STS"] is Status.WRONG
    assert status["TLS-RPT"] is Status.WARNING  # optional, absent
    assert dnscheck.failed(list(results.values()))
    assert results["MX"].publish == f"bad.test. IN MX 10 {HOST}."
    assert results["DKIM m2026a"].publish == dkim_service.txt_zone_line(
        "m2026a._domainkey.bad.test", KEY.value
    )
    assert results["DKIM m2026a"].publish.startswith("m2026a._domainkey.bad.test. IN TXT ( ")


def test_spf_that_lacks_this_server_and_inherited_dmarc(dns_settings: Settings) -> None:
    results = _check(dns_settings, "nospf.test")
    assert results["MX"].status is Status.WARNING  # ours, but not the preferred one
    spf = results["SPF"]
    assert spf.status is Status.WRONG
    assert f"{IP}: fail" in spf.note
    assert spf.publish == f'nospf.test. IN TXT "v=spf1 a:{HOST} ip4:198.51.100.0/24 -all"'
    assert results["DKIM"].status is Status.WARNING  # no key made yet
    assert results["DMARC"].status is Status.MISSING

    sub = _check(dns_settings, "sub.parent.test")
    assert sub["SPF"].status is Status.WARNING  # passes, but +all lets anyone send
    assert sub["DMARC"].status is Status.OK
    assert sub["DMARC"].found == "v=DMARC1; p=quarantine (at _dmarc.parent.test)"


def test_reverse_dns_and_blocklists(dns_settings: Settings) -> None:
    results = _check(
        dns_settings,
        "good.test",
        dkim=[KEY],
        server_addresses=["192.0.2.99"],
        dnsbl_zones=["bl.test", "refusing.test", "clean.test"],
    )
    ptr = results["PTR 192.0.2.99"]
    assert ptr.status is Status.WRONG
    assert ptr.found == "dsl-99.isp.test."
    assert ptr.publish == f"99.2.0.192.in-addr.arpa. IN PTR {HOST}."
    listed = results["DNSBL bl.test 192.0.2.99"]
    assert listed.status is Status.WRONG
    assert listed.found == "listed: 127.0.0.2 (listed for spam, see bl.test)"
    assert results["DNSBL refusing.test 192.0.2.99"].status is Status.ERROR
    assert results["DNSBL clean.test 192.0.2.99"].status is Status.OK
    assert "server address" not in results  # given, not looked up


def test_dns_failures_are_errors(dns_settings: Settings) -> None:
    results = _check(dns_settings, "broken.test")
    assert results["MX"].status is Status.ERROR
    assert results["DMARC"].status is Status.ERROR
    assert dnscheck.failed(list(results.values()))


def test_publishing_the_suggested_records_fixes_the_domain(
    dns_settings: Settings, dns_zone: DnsServer
) -> None:
    results = dnscheck.check_domain(dns_settings, "new.test", dkim=[KEY], dnsbl_zones=[])
    by = _by_check(results)
    assert [by[c].status for c in ("MX", "SPF", "DKIM m2026a", "DMARC")] == [Status.MISSING] * 4
    lines = [r.publish for r in results if r.publish]
    # The suggested lines are valid zone-file syntax; serve exactly what they say.
    zone = dns.zone.from_text(
        "@ 3600 IN SOA ns. host. 1 2 3 4 5\n@ IN NS ns.\n" + "\n".join(lines) + "\n",
        origin=".",
        relativize=False,
    )
    for name, node in zone.nodes.items():
        for rdataset in node.rdatasets:
            if rdataset.rdtype in (dns.rdatatype.SOA, dns.rdatatype.NS):
                continue
            key = name.to_text().lower()
            dns_zone.records.setdefault(key, [])
            dns_zone.records[key] += [
                (dns.rdatatype.to_text(rdataset.rdtype), r.to_text()) for r in rdataset
            ]
    fixed = _by_check(dnscheck.check_domain(dns_settings, "new.test", dkim=[KEY], dnsbl_zones=[]))
    for check in ("MX", "SPF", "DKIM m2026a", "DMARC", "TLS-RPT"):
        assert fixed[check].status is Status.OK, fixed[check]


# -- hosted domains and the CLI -------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_cli_domain_check(
    unit: Unit,
    dns_zone: DnsServer,
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    with unit() as ctx:
        domains.create(ctx, IDN)
        domains.create(ctx, "bad.test")
        key = dkim_service.generate(ctx, IDN, DkimAlgorithm.RSA)
        value = dkim_service.txt_value(key)
        dkim_service.generate(ctx, "bad.test", DkimAlgorithm.ED25519)
    dns_zone.records.update(
        {f"{k}.": v for k, v in _good_zone(IDN_ASCII, value, key.selector).items()}
    )
    env = _dns_env(dns_zone)

    good = cli("domain", "check", IDN, "--json", extra_env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    rows = json.loads(good.stdout)
    assert {row["status"] for row in rows} == {"ok"}
    by = {row["check"]: row for row in rows}
    assert by[f"DKIM {key.selector}"]["name"] == f"{key.selector}._domainkey.{IDN_ASCII}"
    assert by["MX"]["name"] == IDN_ASCII
    assert "DNSBL zen.spamhaus.org 192.0.2.10" in by  # the default blocklists

    bad = cli("domain", "check", "bad.test", extra_env=env)
    assert bad.returncode == 1
    out = bad.stdout
    assert out.splitlines()[0].split() == ["check", "status", "expected", "found"]
    assert any(line.startswith("MX") and " wrong " in line for line in out.splitlines())
    assert f"bad.test. IN MX 10 {HOST}." in out.splitlines()
    assert "DKIM e20" in out and "(pending)" not in out

    unknown = cli("domain", "check", "not-hosted.test", extra_env=env)
    assert unknown.returncode == 1
    assert "not hosted" in unknown.stderr


def test_expected_dkim_of_a_hosted_domain(unit: Unit) -> None:
    with unit() as ctx:
        domains.create(ctx, "example.pl")
        active = dkim_service.generate(ctx, "example.pl", DkimAlgorithm.RSA)
        pending = dkim_service.generate(ctx, "example.pl", DkimAlgorithm.RSA)
        expected = dnscheck.expected_dkim(ctx.session, "example.pl")
        assert [(e.selector, e.status) for e in expected] == [
            (active.selector, "active"),
            (pending.selector, "pending"),
        ]
        assert expected[0].value == dkim_service.txt_value(active)
