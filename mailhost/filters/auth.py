"""Sender authentication of incoming mail: SPF, DKIM and DMARC, as a pipeline filter.

    flt = SenderAuthFilter.from_settings(settings)
    verdict = await flt.check(message)

For mail arriving on the MX (no AUTH user) it evaluates

- SPF (RFC 7208) of the envelope sender, or of the HELO name for the null sender,
  with pyspf on a resolver using the `[dns]` settings;
- every DKIM signature (RFC 6376, Ed25519 per RFC 8463; at most `MAX_SIGNATURES`)
  with dkimpy, whose key lookups use the same resolver;
- DMARC (RFC 7489) for each domain in the From header: SPF or DKIM must pass for a
  domain aligned with it (relaxed: the same organizational domain, from the Public
  Suffix List shipped with `publicsuffixlist`; strict: the same name);

and answers with one RFC 8601 header

    Authentication-Results: <hostname>; spf=pass smtp.mailfrom=a@example.pl;
        dkim=pass header.d=example.pl header.s=m2026a; dmarc=pass header.from=example.pl

A DMARC failure under `p=reject` is refused with `550 5.7.1` (no bounce is ever
made); under `p=quarantine` the message is delivered with `X-Spam-Flag: YES` (when
`junk_on_quarantine`), which the global Sieve rule files into Junk; under `p=none`
it is only recorded in the header. `pct=` is honoured (RFC 7489 6.6.4). A DNS
failure never refuses mail: the result is temperror and the message is accepted.

pyspf and dkimpy are blocking libraries: each evaluation runs in a worker thread,
SPF and DKIM at the same time, so the event loop never waits for DNS.

Mail submitted with AUTH (`auth_user` set) is the member's own and is not checked.
The pipeline should also strip `Authentication-Results` headers that arrive with a
message (`OWNED_HEADERS`), so nobody can hand our users a forged result.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import getaddresses

import dkim  # type: ignore[import-untyped]
import dkim.util  # type: ignore[import-untyped]
import dns.exception
import dns.resolver

from mailhost.filters.base import MessageInfo, Verdict, clean_text
from provisioning.dnscheck import (
    DmarcRecord,
    ascii_name,
    evaluate_spf,
    find_dmarc,
    make_resolver,
    organizational_domain,
)
from provisioning.settings import DnsSettings, Settings

log = logging.getLogger(__name__)
# dkimpy logs every failed signature at ERROR; forged mail is routine, not an error here.
_dkimpy_log = logging.getLogger(f"{__name__}.dkimpy")
_dkimpy_log.setLevel(logging.CRITICAL)

MAX_SIGNATURES = 5  # DKIM signatures verified per message; more are ignored
_LOCAL_PART = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$")


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass, fail, neutral, temperror, permerror
    domain: str  # d= (ASCII, lower case); "" when unreadable
    selector: str


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass, fail, none, temperror, permerror
    domain: str  # the From domain
    policy: str = ""  # the published policy for this domain (none, quarantine, reject)
    disposition: str = "none"  # what is done here after pct: none, quarantine, reject


@dataclass(frozen=True)
class AuthResults:
    spf: str
    spf_explanation: str
    spf_domain: str  # the domain SPF was checked for (MAIL FROM's, or the HELO name)
    dkim: list[DkimResult]
    dmarc: DmarcResult


def aligned(domain: str, from_domain: str, mode: str) -> bool:
    """RFC 7489 3.1: strict needs the same name, relaxed the same organizational domain."""
    if not domain or not from_domain:
        return False
    if domain == from_domain:
        return True
    return mode != "s" and organizational_domain(domain) == organizational_domain(from_domain)


def _header_fields(data: bytes) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value) of each header field; values decoded as UTF-8."""
    end = data.find(b"\r\n\r\n")
    end2 = data.find(b"\n\n")
    cut = min((e for e in (end, end2) if e >= 0), default=len(data))
    text = data[:cut].decode("utf-8", "replace")
    fields: list[tuple[str, str]] = []
    for line in re.split(r"\r?\n", text):
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            fields.append((name.strip().lower(), value.strip()))
    return fields


def from_domains(data: bytes) -> list[str] | None:
    """The ASCII domains of the From header's addresses, in order; None if unusable."""
    values = [value for name, value in _header_fields(data) if name == "from"]
    if not values:
        return None
    domains: list[str] = []
    for _, address in getaddresses(values):
        domain = address.rpartition("@")[2].strip().rstrip(">")
        if "@" not in address or not domain:
            return None
        try:
            name = ascii_name(domain)
        except UnicodeError:
            return None
        if not _HOSTNAME.match(name):
            return None
        if name not in domains:
            domains.append(name)
    return domains or None


def _disposition(record: DmarcRecord) -> str:
    """The policy to apply to a failing message after pct sampling (RFC 7489 6.6.4)."""
    if record.pct >= 100 or random.randrange(100) < record.pct:  # noqa: S311 - sampling
        return record.policy
    return {"reject": "quarantine", "quarantine": "none"}.get(record.policy, "none")


class SenderAuthFilter:
    """SPF, DKIM and DMARC of MX mail; one `Authentication-Results` header."""

    name = "sender-auth"
    OWNED_HEADERS = ("Authentication-Results",)

    def __init__(
        self,
        dns_settings: DnsSettings,
        authserv_id: str,
        *,
        reject_dmarc: bool = True,
        junk_on_quarantine: bool = True,
    ) -> None:
        self.authserv_id = ascii_name(authserv_id)
        self.reject_dmarc = reject_dmarc
        self.junk_on_quarantine = junk_on_quarantine
        self.dns_timeout = dns_settings.timeout
        self.resolver = make_resolver(dns_settings)
        self.resolver.cache = dns.resolver.LRUCache(10_000)
        organizational_domain("example.com")  # load the Public Suffix List now, not per message

    @classmethod
    def from_settings(cls, settings: Settings) -> SenderAuthFilter:
        options = settings.sender_auth
        return cls(
            settings.dns,
            settings.association.hostname,
            reject_dmarc=options.reject_dmarc,
            junk_on_quarantine=options.quarantine_to_junk,
        )

    # -- DKIM ---------------------------------------------------------------------------------

    def _dkim_txt(self, name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's key lookup, through our resolver (called in the worker thread)."""
        try:
            answer = self.resolver.resolve(
                name.decode("ascii"), "TXT", search=False, lifetime=min(timeout, self.dns_timeout)
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise dkim.DnsTimeoutError(str(exc)) from exc
        except dns.exception.DNSException:  # not a valid DNS name: no key
            return None
        for record in answer:
            return b"".join(record.strings)
        return None

    def verify_dkim(self, data: bytes) -> list[DkimResult]:
        """Every DKIM signature's result (blocking: DNS and RSA/Ed25519 verification)."""
        try:
            checker = dkim.DKIM(data, logger=_dkimpy_log, minkey=1024, timeout=self.dns_timeout)
        except Exception:  # dkimpy cannot even parse the message
            return [DkimResult("permerror", "", "")]
        signatures = [v for n, v in checker.headers if n.lower() == b"dkim-signature"]
        results: list[DkimResult] = []
        for index, value in enumerate(signatures[:MAX_SIGNATURES]):
            try:
                tags = dkim.util.parse_tag_value(value)
                domain = tags.get(b"d", b"").decode("ascii").strip().lower()
                selector = tags.get(b"s", b"").decode("ascii").strip()
            except (dkim.util.InvalidTagValueList, UnicodeError):
                results.append(DkimResult("permerror", "", ""))
                continue
            try:
                # dkimpy reports a missing key as a plain failure; RFC 8601 calls it permerror.
                key_name = f"{selector}._domainkey.{domain}.".encode("ascii")
                if not selector or not domain or self._dkim_txt(key_name) is None:
                    results.append(DkimResult("permerror", domain, selector))
                    continue
                ok = checker.verify(idx=index, dnsfunc=self._dkim_txt)
                result = "pass" if ok else "fail"
            except dkim.DnsTimeoutError:
                result = "temperror"
            except dkim.ValidationError as exc:
                # A changed body is a failed signature (RFC 8601 2.7.1); a malformed
                # signature (missing tag, bad base64, expired) cannot be verified at all.
                result = "fail" if "body hash mismatch" in str(exc) else "permerror"
            except dkim.DKIMException as exc:
                log.debug("DKIM signature %s/%s: %s", domain, selector, exc)
                result = "permerror"
            except Exception:  # a malformed signature must never fail the message
                log.exception("DKIM verification of %s/%s failed", domain, selector)
                result = "permerror"
            results.append(DkimResult(result, domain, selector))
        return results

    # -- DMARC --------------------------------------------------------------------------------

    def evaluate_dmarc(
        self, domains: Sequence[str] | None, spf: str, spf_domain: str, dkim: list[DkimResult]
    ) -> DmarcResult:
        """The worst DMARC outcome over the From domains (blocking DNS)."""
        if not domains:
            return DmarcResult("permerror", "")
        outcomes: list[DmarcResult] = []
        for domain in domains:
            record, error = find_dmarc(self.resolver, domain)
            if error:
                outcomes.append(DmarcResult("temperror", domain))
                continue
            if record is None:
                outcomes.append(DmarcResult("none", domain))
                continue
            spf_ok = spf == "pass" and aligned(spf_domain, domain, record.aspf)
            dkim_ok = any(
                r.result == "pass" and aligned(r.domain, domain, record.adkim) for r in dkim
            )
            if spf_ok or dkim_ok:
                outcomes.append(DmarcResult("pass", domain, record.policy))
            else:
                outcomes.append(DmarcResult("fail", domain, record.policy, _disposition(record)))
        order = {"reject": 3, "quarantine": 2, "none": 1}
        rank = {"fail": 4, "temperror": 3, "permerror": 2, "none": 1, "pass": 0}
        return max(outcomes, key=lambda o: (order.get(o.disposition, 0), rank[o.result]))

    # -- the whole check ----------------------------------------------------------------------

    async def evaluate(self, message: MessageInfo) -> AuthResults:
        spf_domain = message.mail_from.rpartition("@")[2] if message.mail_from else message.helo
        try:
            spf_domain = ascii_name(spf_domain)
        except UnicodeError:
            spf_domain = ""
        (spf, explanation), dkim_results = await asyncio.gather(
            asyncio.to_thread(
                evaluate_spf, self.resolver, message.client_ip, message.mail_from, message.helo
            ),
            asyncio.to_thread(self.verify_dkim, message.data),
        )
        dmarc = await asyncio.to_thread(
            self.evaluate_dmarc, from_domains(message.data), spf, spf_domain, dkim_results
        )
        return AuthResults(spf, explanation, spf_domain, dkim_results, dmarc)

    def header(self, message: MessageInfo, results: AuthResults) -> str:
        """The Authentication-Results value (RFC 8601), printable ASCII only."""
        parts = [self.authserv_id]
        if message.mail_from:
            local = message.mail_from.rpartition("@")[0]
            who = f"{local}@{results.spf_domain}" if _LOCAL_PART.match(local) else ""
            parts.append(f"spf={results.spf} smtp.mailfrom={who or results.spf_domain}")
        elif _HOSTNAME.match(message.helo):
            parts.append(f"spf={results.spf} smtp.helo={message.helo}")
        else:
            parts.append(f"spf={results.spf}")
        if not results.dkim:
            parts.append("dkim=none")
        for r in results.dkim:
            detail = ""
            if r.domain and _HOSTNAME.match(r.domain):
                detail = f" header.d={r.domain}"
                if r.selector and _HOSTNAME.match(r.selector):
                    detail += f" header.s={r.selector}"
            parts.append(f"dkim={r.result}{detail}")
        dmarc = results.dmarc
        comment = ""
        if dmarc.policy:
            comment = f" (p={dmarc.policy} dis={dmarc.disposition})"
        from_part = f" header.from={dmarc.domain}" if dmarc.domain else ""
        parts.append(f"dmarc={dmarc.result}{comment}{from_part}")
        return clean_text("; ".join(parts))

    async def check(self, message: MessageInfo) -> Verdict:
        if message.auth_user is not None:
            return Verdict.accept()
        results = await self.evaluate(message)
        header = ("Authentication-Results", self.header(message, results))
        dmarc = results.dmarc
        if dmarc.result == "fail" and dmarc.disposition == "reject" and self.reject_dmarc:
            log.info(
                "DMARC reject: From %s, MAIL FROM <%s>, client %s",
                dmarc.domain,
                message.mail_from,
                message.client_ip,
            )
            return Verdict.reject(
                550,
                "5.7.1",
                f"Message rejected: the DMARC policy of {dmarc.domain} asks to refuse "
                "mail that neither SPF nor DKIM authenticates",
                "dmarc_reject",
                headers=[header],
            )
        if dmarc.result == "fail" and dmarc.disposition == "quarantine":
            headers = [header]
            if self.junk_on_quarantine:
                headers.append(("X-Spam-Flag", "YES"))
            return Verdict.accept(headers, "dmarc_quarantine")
        labels = ("dmarc_fail",) if dmarc.result == "fail" else ()
        return Verdict.accept([header], *labels)
