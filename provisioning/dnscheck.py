"""DNS health of a hosted domain: what is published, what should be, and the records to add.

`check_hosted_domain(session, settings, domain)` (the admin UI and `muninet domain
check`) looks up, with dnspython against the `[dns]` resolvers:

- MX: the domain's mail goes to this server (`association.hostname`);
- SPF: exactly one `v=spf1` record, and it lets this server's addresses send (it is
  evaluated with pyspf, as receivers do, for each A/AAAA address of the hostname);
- DKIM: each active or pending key's record holds our public key;
- DMARC: a `v=DMARC1` record (the domain's own or, for a subdomain, the organizational
  domain's) with a policy; `p=none` only monitors, so it is a warning;
- PTR: each address of the hostname points back to the hostname (receivers check it);
- MTA-STS and TLS-RPT: optional, a warning when absent, wrong when malformed;
- DNSBL: the server's addresses are not listed on the configured blocklists.

Every result carries the expected and found values, a status (ok, missing, wrong,
warning, error) and the exact zone-file line to publish when something must change.

Also here, for the inbound checks of the mail engine: the resolver made from the
settings, SPF evaluation with pyspf on that resolver, DMARC record parsing and the
organizational domain (from the Public Suffix List shipped in `publicsuffixlist`).
"""

from __future__ import annotations

import contextvars
import enum
import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.resolver
import dns.reversename
import idna
import spf  # type: ignore[import-untyped]
from publicsuffixlist import PublicSuffixList
from sqlalchemy.orm import Session

from provisioning.db import Database
from provisioning.settings import DnsSettings, Settings

SPF_TIMEOUT = 20.0  # seconds for a whole SPF evaluation (RFC 7208 4.6.4 suggests 20)


class Status(enum.StrEnum):
    OK = "ok"
    MISSING = "missing"
    WRONG = "wrong"
    WARNING = "warning"
    ERROR = "error"  # the lookup failed (timeout, SERVFAIL): nothing could be said


FAILING = frozenset({Status.MISSING, Status.WRONG, Status.ERROR})


@dataclass(frozen=True)
class CheckResult:
    """One line of the report."""

    check: str  # what is checked: "MX", "SPF", "DKIM m2026a", "PTR 192.0.2.1", ...
    name: str  # the DNS name looked up (ASCII)
    expected: str
    found: str
    status: Status
    publish: str = ""  # zone-file line(s) to publish; "" when nothing is to change
    note: str = ""

    def as_dict(self) -> dict[str, str]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


@dataclass(frozen=True)
class ExpectedDkim:
    """A DKIM key whose record must be in DNS."""

    selector: str
    value: str  # the whole TXT value, "v=DKIM1; k=...; p=..."
    status: str  # "active" or "pending"


# -- resolver -----------------------------------------------------------------------------------


def make_resolver(settings: DnsSettings) -> dns.resolver.Resolver:
    """A blocking resolver using the `[dns]` nameservers, or /etc/resolv.conf when none."""
    resolver = dns.resolver.Resolver(configure=not settings.nameservers)
    if settings.nameservers:
        resolver.nameservers = list(settings.nameservers)
        resolver.port = settings.port
    resolver.timeout = resolver.lifetime = settings.timeout
    return resolver


def ascii_name(name: str) -> str:
    """Lower case, punycode for IDN labels, no trailing dot."""
    name = name.strip().rstrip(".")
    if name.isascii():
        return name.lower()
    return idna.encode(name, uts46=True).decode("ascii").lower()


@dataclass(frozen=True)
class Answer:
    records: list[Any]  # dnspython rdata objects
    nxdomain: bool = False
    error: str = ""  # timeout, SERVFAIL, ...: "" when DNS answered


def lookup(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> Answer:
    """The records of one type at a name; no record and NXDOMAIN are answers, not errors."""
    try:
        answer = resolver.resolve(dns.name.from_text(name), rdtype, search=False)
    except dns.resolver.NXDOMAIN:
        return Answer([], nxdomain=True)
    except dns.resolver.NoAnswer:
        return Answer([])
    except dns.resolver.NoNameservers:
        return Answer([], error="no DNS server answered (SERVFAIL or refused)")
    except dns.exception.Timeout:
        return Answer([], error="DNS timeout")
    except dns.exception.DNSException as exc:
        return Answer([], error=f"DNS error: {exc}")
    return Answer(list(answer))


def txt_strings(records: Sequence[Any]) -> list[str]:
    """Each TXT record's character-strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
    return [b"".join(r.strings).decode("utf-8", "replace") for r in records]


def parse_tags(text: str) -> dict[str, str]:
    """`k=v; k=v` tag lists (DKIM, DMARC, TLS-RPT, MTA-STS); tag names lower-cased."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            tags.setdefault(name.strip().lower(), value.strip())
    return tags


# -- SPF through pyspf ------------------------------------------------------------------------
#
# pyspf looks names up through its module-level `DNSLookup` function, which uses the
# system resolver. It is replaced once by a dispatcher that uses the resolver set in a
# context variable for the current evaluation (each thread running an evaluation has
# its own context), so evaluations against different DNS settings never mix.

_spf_resolver: contextvars.ContextVar[dns.resolver.Resolver | None] = contextvars.ContextVar(
    "muninet_spf_resolver", default=None
)
_pyspf_lookup: Callable[..., Any] = spf.DNSLookup


def _spf_dns_lookup(
    name: str, qtype: str, strict: bool = True, timeout: float = 30
) -> list[tuple[tuple[str, str], Any]]:
    resolver = _spf_resolver.get()
    if resolver is None:
        return list(_pyspf_lookup(name, qtype, strict, timeout))
    try:
        answer = resolver.resolve(
            name, qtype, search=False, lifetime=min(timeout, resolver.lifetime)
        )
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        return []
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
        raise spf.TempError(f"DNS {exc}") from exc
    except dns.exception.DNSException as exc:
        raise spf.TempError(f"DNS {exc}") from exc
    out: list[tuple[tuple[str, str], Any]] = []
    for rdata in answer:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
    # A CNAME on the way is followed by dnspython; pyspf caches under the asked name.
    return out


spf.DNSLookup = _spf_dns_lookup


@contextmanager
def _using_resolver(resolver: dns.resolver.Resolver) -> Iterator[None]:
    token = _spf_resolver.set(resolver)
    try:
        yield
    finally:
        _spf_resolver.reset(token)


def spf_sender(mail_from: str, helo: str) -> str:
    """The identity SPF checks: MAIL FROM with an ASCII domain, or postmaster@HELO for <>."""
    local, _, domain = mail_from.rpartition("@")
    if not mail_from or not domain:
        return f"postmaster@{helo}"
    try:
        return f"{local or 'postmaster'}@{ascii_name(domain)}"
    except UnicodeError:
        return mail_from


def evaluate_spf(
    resolver: dns.resolver.Resolver, ip: str, mail_from: str, helo: str
) -> tuple[str, str]:
    """(result, explanation) of RFC 7208 check_host(): pass, fail, softfail, neutral, none,
    temperror or permerror. Blocking: run it in a thread from async code."""
    sender = spf_sender(mail_from, helo)
    with _using_resolver(resolver):
        try:
            result, explanation = spf.check2(
                i=ip, s=sender, h=helo, timeout=SPF_TIMEOUT, querytime=SPF_TIMEOUT
            )
        except (spf.TempError, dns.exception.DNSException) as exc:
            return "temperror", str(exc)
        except (spf.PermError, ValueError, UnicodeError) as exc:
            return "permerror", str(exc)
    return str(result), str(explanation)


# -- DMARC ------------------------------------------------------------------------------------


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """The registrable domain (RFC 7489 3.2): `info.association.pl` -> `association.pl`."""
    name = ascii_name(domain)
    return _psl().privatesuffix(name) or name


@dataclass(frozen=True)
class DmarcRecord:
    domain: str  # where the record was found (the domain itself or its org domain)
    text: str
    policy: str  # none, quarantine, reject: the policy for the asked domain
    adkim: str  # "r" or "s"
    aspf: str
    pct: int
    inherited: bool  # found at the organizational domain, not the domain itself


def parse_dmarc(text: str, found_at: str, *, inherited: bool) -> DmarcRecord | None:
    """A valid DMARC record, or None (no v=DMARC1 first, or no valid p=)."""
    if not re.match(r"^\s*v\s*=\s*DMARC1\s*(;|$)", text):
        return None
    tags = parse_tags(text)
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return None
    if inherited and tags.get("sp", "").lower() in ("none", "quarantine", "reject"):
        policy = tags["sp"].lower()
    try:
        pct = max(0, min(100, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    return DmarcRecord(
        domain=found_at,
        text=text,
        policy=policy,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
        pct=pct,
        inherited=inherited,
    )


def dmarc_candidates(records: Sequence[str]) -> list[str]:
    return [r for r in records if re.match(r"^\s*v\s*=\s*DMARC1\s*(;|$)", r)]


def find_dmarc(resolver: dns.resolver.Resolver, domain: str) -> tuple[DmarcRecord | None, str]:
    """The DMARC record that governs `domain` (RFC 7489 6.6.3), and an error text.

    "" as error with None: no policy published. Several records at one name are no
    policy, as the RFC says.
    """
    name = ascii_name(domain)
    org = organizational_domain(name)
    for where, inherited in ((name, False), (org, True)):
        if inherited and where == name:
            break
        answer = lookup(resolver, f"_dmarc.{where}", "TXT")
        if answer.error:
            return None, answer.error
        candidates = dmarc_candidates(txt_strings(answer.records))
        if len(candidates) == 1:
            return parse_dmarc(candidates[0], where, inherited=inherited), ""
        if len(candidates) > 1:
            return None, ""
    return None, ""


# -- the checks -------------------------------------------------------------------------------


def _short(values: Sequence[str]) -> str:
    return " | ".join(values) if values else "(none)"


class DomainChecker:
    """All checks for one domain; blocking DNS, run in a few threads at once."""

    def __init__(
        self,
        settings: Settings,
        domain: str,
        *,
        dkim: Sequence[ExpectedDkim] = (),
        dnsbl_zones: Sequence[str] | None = None,
        server_addresses: Sequence[str] | None = None,
    ) -> None:
        from provisioning.services.dkim import txt_zone_line, zone_line

        self._txt_line = txt_zone_line
        self._line = zone_line
        self.settings = settings
        self.domain = ascii_name(domain)
        self.hostname = ascii_name(settings.association.hostname)
        self.dkim = list(dkim)
        zones = settings.dnsbl.zones if dnsbl_zones is None else dnsbl_zones
        self.dnsbl_zones = [ascii_name(z) for z in zones]
        self.resolver = make_resolver(settings.dns)
        self._server_addresses = list(server_addresses) if server_addresses else None

    # Each check returns a list of results.

    def server(self) -> tuple[list[str], list[CheckResult]]:
        """The server's addresses (A and AAAA of the hostname) and a result for them."""
        if self._server_addresses is not None:
            return self._server_addresses, []
        addresses: list[str] = []
        errors: list[str] = []
        for rdtype in ("A", "AAAA"):
            answer = lookup(self.resolver, self.hostname, rdtype)
            errors += [answer.error] if answer.error else []
            addresses += [r.address for r in answer.records]
        found = _short(addresses)
        if addresses:
            status = Status.OK
        elif errors:
            status = Status.ERROR
            found = "; ".join(errors)
        else:
            status = Status.MISSING
        result = CheckResult(
            "server address",
            self.hostname,
            "an A or AAAA record",
            found,
            status,
            "" if addresses else self._line(self.hostname, "A", "<public IPv4 address>"),
            "" if addresses else "the server's host name must resolve to its public address",
        )
        return addresses, [result]

    def mx(self) -> list[CheckResult]:
        expected = f"10 {self.hostname}."
        publish = self._line(self.domain, "MX", expected)
        answer = lookup(self.resolver, self.domain, "MX")
        if answer.error:
            return [CheckResult("MX", self.domain, expected, answer.error, Status.ERROR)]
        found_pairs = sorted(
            (r.preference, r.exchange.to_text(omit_final_dot=True).lower()) for r in answer.records
        )
        found = _short([f"{p} {host}." for p, host in found_pairs])
        if not found_pairs:
            return [CheckResult("MX", self.domain, expected, found, Status.MISSING, publish)]
        hosts = [host for _, host in found_pairs]
        best = found_pairs[0][0]
        if self.hostname not in hosts:
            note = "null MX: the domain receives no mail" if hosts == [""] else ""
            return [CheckResult("MX", self.domain, expected, found, Status.WRONG, publish, note)]
        if (best, self.hostname) not in found_pairs:
            return [
                CheckResult(
                    "MX",
                    self.domain,
                    expected,
                    found,
                    Status.WARNING,
                    publish,
                    "this server is not the most preferred MX",
                )
            ]
        return [CheckResult("MX", self.domain, expected, found, Status.OK)]

    def spf(self, addresses: Sequence[str]) -> list[CheckResult]:
        expected = f"one v=spf1 record allowing {self.hostname}"
        answer = lookup(self.resolver, self.domain, "TXT")
        if answer.error:
            return [CheckResult("SPF", self.domain, expected, answer.error, Status.ERROR)]
        records = [
            t for t in txt_strings(answer.records) if re.match(r"(?i)^v=spf1(\s|$)", t.strip())
        ]
        status, value, note = self._spf_verdict(records, addresses)
        publish = self._txt_line(self.domain, value) if value else ""
        return [CheckResult("SPF", self.domain, expected, _short(records), status, publish, note)]

    def _spf_verdict(
        self, records: Sequence[str], addresses: Sequence[str]
    ) -> tuple[Status, str, str]:
        """(status, SPF value to publish or "", note) for the domain's v=spf1 records."""
        recommended = f"v=spf1 a:{self.hostname} -all"
        if not records:
            return Status.MISSING, recommended, ""
        if len(records) > 1:
            return Status.WRONG, recommended, "several SPF records are a permanent error: keep one"
        if not addresses:
            return Status.ERROR, "", "cannot evaluate: the server's host name has no address"
        record = records[0].strip()
        failures: list[tuple[str, str]] = []
        for ip in addresses:
            result, explanation = evaluate_spf(
                self.resolver, ip, f"postmaster@{self.domain}", self.hostname
            )
            if result != "pass":
                failures.append((result, f"{ip}: {result} {explanation}".strip()))
        note = "; ".join(text for _, text in failures)
        if failures:
            # The record with this server added in front of its first mechanism.
            head, _, rest = record.partition(" ")
            amended = f"{head} a:{self.hostname} {rest}".strip()
            temporary = any(result == "temperror" for result, _ in failures)
            return (Status.ERROR, "", note) if temporary else (Status.WRONG, amended, note)
        if re.search(r"(?i)(^|\s)[+?]?all(\s|$)", record):
            note = "the record ends in +all or ?all: any server may send as this domain"
            return Status.WARNING, recommended, note
        return Status.OK, "", ""

    def dkim_records(self) -> list[CheckResult]:
        if not self.dkim:
            return [
                CheckResult(
                    "DKIM",
                    f"*._domainkey.{self.domain}",
                    "a DKIM key",
                    "(no key made)",
                    Status.WARNING,
                    note=f"make one: muninet dkim generate {self.domain}",
                )
            ]
        return [self._dkim_one(key) for key in self.dkim]

    def _dkim_one(self, key: ExpectedDkim) -> CheckResult:
        name = f"{key.selector}._domainkey.{self.domain}"
        check = f"DKIM {key.selector}" + (" (pending)" if key.status == "pending" else "")
        publish = self._txt_line(name, key.value)
        answer = lookup(self.resolver, name, "TXT")
        if answer.error:
            return CheckResult(check, name, key.value, answer.error, Status.ERROR)
        texts = txt_strings(answer.records)
        if not texts:
            return CheckResult(check, name, key.value, "(none)", Status.MISSING, publish)
        ours = parse_tags(key.value)
        for text in texts:
            tags = parse_tags(text)
            public = re.sub(r"\s+", "", tags.get("p", ""))
            if public == ours["p"] and tags.get("k", "rsa").lower() == ours["k"]:
                return CheckResult(check, name, key.value, text, Status.OK)
        return CheckResult(
            check, name, key.value, _short(texts), Status.WRONG, publish, "not our public key"
        )

    def dmarc(self) -> list[CheckResult]:
        name = f"_dmarc.{self.domain}"
        recommended = f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{self.domain}"
        expected = "v=DMARC1 with p=quarantine or p=reject"
        answer = lookup(self.resolver, name, "TXT")
        if answer.error:
            return [CheckResult("DMARC", name, expected, answer.error, Status.ERROR)]
        texts = dmarc_candidates(txt_strings(answer.records))
        found = _short(texts)
        status, note = Status.OK, ""
        if len(texts) > 1:
            status, note = Status.WRONG, "several DMARC records: receivers apply none"
        elif texts and parse_dmarc(texts[0], self.domain, inherited=False) is None:
            status, note = Status.WRONG, "no valid p= tag"
        else:
            # The domain's own record, or for a subdomain the organizational domain's.
            record, error = find_dmarc(self.resolver, self.domain)
            if error:
                status, found = Status.ERROR, error
            elif record is None:
                status = Status.MISSING
            else:
                if record.inherited:
                    found = f"{record.text} (at _dmarc.{record.domain})"
                if record.policy == "none":
                    status = Status.WARNING
                    note = "p=none only monitors: forged mail is still delivered"
        publish = "" if status in (Status.OK, Status.ERROR) else self._txt_line(name, recommended)
        return [CheckResult("DMARC", name, expected, found, status, publish, note)]

    def ptr(self, addresses: Sequence[str]) -> list[CheckResult]:
        results: list[CheckResult] = []
        expected = f"{self.hostname}."
        for ip in addresses:
            rev = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
            publish = self._line(rev, "PTR", expected)
            note = "set by whoever assigned the address (your ISP or hosting provider)"
            answer = lookup(self.resolver, rev, "PTR")
            if answer.error:
                results.append(CheckResult(f"PTR {ip}", rev, expected, answer.error, Status.ERROR))
                continue
            names = [r.target.to_text(omit_final_dot=True).lower() for r in answer.records]
            found = _short([f"{n}." for n in names])
            if not names:
                status = Status.MISSING
            elif self.hostname in names:
                status = Status.OK
            else:
                status = Status.WRONG
            results.append(
                CheckResult(
                    f"PTR {ip}",
                    rev,
                    expected,
                    found,
                    status,
                    "" if status is Status.OK else publish,
                    "" if status is Status.OK else note,
                )
            )
        return results

    def mta_sts(self) -> list[CheckResult]:
        name = f"_mta-sts.{self.domain}"
        expected = "optional: v=STSv1; id=<policy version>"
        answer = lookup(self.resolver, name, "TXT")
        if answer.error:
            return [CheckResult("MTA-STS", name, expected, answer.error, Status.ERROR)]
        texts = [t for t in txt_strings(answer.records) if t.strip().startswith("v=STSv1")]
        note = f"also needs the policy at https://mta-sts.{self.domain}/.well-known/mta-sts.txt"
        if not texts:
            return [CheckResult("MTA-STS", name, expected, "(none)", Status.WARNING, "", note)]
        policy_id = parse_tags(texts[0]).get("id", "")
        if len(texts) > 1 or not re.fullmatch(r"[A-Za-z0-9]{1,32}", policy_id):
            return [
                CheckResult(
                    "MTA-STS", name, expected, _short(texts), Status.WRONG, "", "bad record"
                )
            ]
        return [CheckResult("MTA-STS", name, expected, texts[0], Status.OK, "", note)]

    def tls_rpt(self) -> list[CheckResult]:
        name = f"_smtp._tls.{self.domain}"
        expected = "optional: v=TLSRPTv1; rua=mailto:..."
        publish = self._txt_line(name, f"v=TLSRPTv1; rua=mailto:postmaster@{self.domain}")
        answer = lookup(self.resolver, name, "TXT")
        if answer.error:
            return [CheckResult("TLS-RPT", name, expected, answer.error, Status.ERROR)]
        texts = [t for t in txt_strings(answer.records) if t.strip().startswith("v=TLSRPTv1")]
        if not texts:
            note = "optional: reports about failed TLS to this domain"
            return [CheckResult("TLS-RPT", name, expected, "(none)", Status.WARNING, publish, note)]
        rua = parse_tags(texts[0]).get("rua", "")
        if len(texts) > 1 or not re.match(r"^(mailto:|https:)", rua):
            return [CheckResult("TLS-RPT", name, expected, _short(texts), Status.WRONG, publish)]
        return [CheckResult("TLS-RPT", name, expected, texts[0], Status.OK)]

    def dnsbl(self, addresses: Sequence[str]) -> list[CheckResult]:
        results: list[CheckResult] = []
        for ip in addresses:
            for zone in self.dnsbl_zones:
                results.append(self._dnsbl_one(ip, zone))
        return results

    def _dnsbl_one(self, ip: str, zone: str) -> CheckResult:
        address = ipaddress.ip_address(ip)
        if address.version == 4:
            reversed_ip = ".".join(reversed(ip.split(".")))
        else:
            reversed_ip = ".".join(reversed(address.exploded.replace(":", "")))
        name = f"{reversed_ip}.{zone}"
        check = f"DNSBL {zone} {ip}"
        answer = lookup(self.resolver, name, "A")
        if answer.error:
            return CheckResult(check, name, "not listed", answer.error, Status.ERROR)
        codes = [r.address for r in answer.records]
        if not codes:
            return CheckResult(check, name, "not listed", "not listed", Status.OK)
        if any(c.startswith("127.255.255.") or not c.startswith("127.") for c in codes):
            return CheckResult(
                check,
                name,
                "not listed",
                _short(codes),
                Status.ERROR,
                note="the blocklist refused the query (public resolver or over its limit)",
            )
        reasons = txt_strings(lookup(self.resolver, name, "TXT").records)
        return CheckResult(
            check,
            name,
            "not listed",
            f"listed: {_short(codes)}" + (f" ({_short(reasons)})" if reasons else ""),
            Status.WRONG,
            note=f"ask {zone} for delisting once the cause is fixed",
        )

    def run(self) -> list[CheckResult]:
        addresses, server = self.server()
        jobs: list[Callable[[], list[CheckResult]]] = [
            self.mx,
            lambda: self.spf(addresses),
            self.dkim_records,
            self.dmarc,
            lambda: self.ptr(addresses),
            self.mta_sts,
            self.tls_rpt,
            lambda: self.dnsbl(addresses),
        ]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            parts = list(pool.map(lambda job: job(), jobs))
        return server + [result for part in parts for result in part]


def check_domain(
    settings: Settings,
    domain: str,
    *,
    dkim: Sequence[ExpectedDkim] = (),
    dnsbl_zones: Sequence[str] | None = None,
    server_addresses: Sequence[str] | None = None,
) -> list[CheckResult]:
    """The DNS health of `domain` (any domain, hosted or not), one result per record."""
    return DomainChecker(
        settings,
        domain,
        dkim=dkim,
        dnsbl_zones=dnsbl_zones,
        server_addresses=server_addresses,
    ).run()


def expected_dkim(session: Session, domain: str) -> list[ExpectedDkim]:
    """The DKIM records a hosted domain must publish (NotFound if it is not hosted)."""
    from provisioning.services import dkim

    return [
        ExpectedDkim(k.selector, dkim.txt_value(k), k.status.value)
        for k in dkim.list_keys(session, domain)
    ]


def check_hosted_domain(
    database: Database,
    settings: Settings,
    domain: str,
    *,
    dnsbl_zones: Sequence[str] | None = None,
) -> list[CheckResult]:
    """`check_domain` for a hosted domain with its DKIM keys (NotFound if not hosted).

    The keys are read in a short transaction that ends before the DNS lookups start.
    """
    with database.reader() as session:
        keys = expected_dkim(session, domain)
    return check_domain(settings, domain, dkim=keys, dnsbl_zones=dnsbl_zones)


def failed(results: Sequence[CheckResult]) -> bool:
    """True when any record is missing or wrong, or could not be checked."""
    return any(r.status in FAILING for r in results)
