"""The DNS records a hosted domain should publish, as zone-file lines, without any lookup.

`dnscheck` says what is wrong with what is published; this module says what the whole
set should be, so an office can hand it to whoever runs its DNS before anything is
looked up: MX and SPF naming this server, the DKIM keys (active and pending), a DMARC
policy, TLS-RPT, and the names mail clients use to set themselves up (autoconfig and
autodiscover host names, RFC 6186/8314 SRV records). The values are the ones
`dnscheck.DomainChecker` recommends, so publishing them makes its checks pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from provisioning.autoconfig import endpoints
from provisioning.dnscheck import ExpectedDkim, ascii_name
from provisioning.services.dkim import txt_zone_line, zone_line
from provisioning.settings import Settings

HTTPS_PORT = 443  # autodiscover clients only ask https on the standard port


@dataclass(frozen=True)
class Record:
    """One record to publish."""

    purpose: str  # what it is for: a key the faces turn into their own words
    name: str  # ASCII, no trailing dot
    rdtype: str
    value: str  # the record data (for TXT: the whole text, unquoted)
    line: str  # the zone-file line to paste
    required: bool  # False: recommended (client setup, reports), mail works without it
    selector: str = ""  # DKIM: the key's selector
    state: str = ""  # DKIM: "active" or "pending" (publish both while a key waits)


def spf_value(hostname: str) -> str:
    return f"v=spf1 a:{ascii_name(hostname)} -all"


def dmarc_value(domain: str) -> str:
    return f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{ascii_name(domain)}"


def tls_rpt_value(domain: str) -> str:
    return f"v=TLSRPTv1; rua=mailto:postmaster@{ascii_name(domain)}"


def _plain(purpose: str, name: str, rdtype: str, value: str, *, required: bool) -> Record:
    return Record(purpose, name, rdtype, value, zone_line(name, rdtype, value), required)


def _txt(purpose: str, name: str, value: str, *, required: bool) -> Record:
    return Record(purpose, name, "TXT", value, txt_zone_line(name, value), required)


def records_to_publish(
    settings: Settings, domain: str, dkim: Sequence[ExpectedDkim] = ()
) -> list[Record]:
    """Every record `domain` (either form) should hold for mail through this server."""
    name = ascii_name(domain)
    host = ascii_name(settings.association.hostname)
    target = f"{host}."
    ports = endpoints(settings)
    records = [
        _plain("mx", name, "MX", f"10 {target}", required=True),
        _txt("spf", name, spf_value(host), required=True),
    ]
    for key in dkim:
        record_name = f"{key.selector}._domainkey.{name}"
        line = txt_zone_line(record_name, key.value)
        records.append(
            Record("dkim", record_name, "TXT", key.value, line, True, key.selector, key.status)
        )
    records += [
        _txt("dmarc", f"_dmarc.{name}", dmarc_value(name), required=True),
        _txt("tls-rpt", f"_smtp._tls.{name}", tls_rpt_value(name), required=False),
        _plain("autoconfig", f"autoconfig.{name}", "CNAME", target, required=False),
        _plain("autodiscover", f"autodiscover.{name}", "CNAME", target, required=False),
    ]
    services = [
        ("_imaps._tcp", ports.imaps),
        ("_imap._tcp", ports.imap),
        ("_submissions._tcp", ports.smtps),
        ("_submission._tcp", ports.submission),
        ("_autodiscover._tcp", HTTPS_PORT),
    ]
    records += [
        _plain("srv", f"{service}.{name}", "SRV", f"0 1 {port} {target}", required=False)
        for service, port in services
    ]
    return records
