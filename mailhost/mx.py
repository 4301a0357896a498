"""Where to send mail for a domain: MX lookup (RFC 5321 5.1, RFC 7505) or a smarthost.

The lookup uses dnspython's async resolver, so a slow DNS server never blocks the
event loop that also runs the SMTP servers, and so that the nameservers named in
`[dns]` are used for every step: the MX query and the address queries of each
mail exchanger. The result is a list of `Target`s in the order to try them; each
carries the address to connect to, so the SMTP client never falls back to the
system resolver for MX hosts.

Failures are `DeliveryError`s the queue understands: a domain that cannot receive
mail (NXDOMAIN, null MX, no address at all) is permanent and bounces at once; a DNS
server that times out or answers SERVFAIL is temporary and retried.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import idna

from mailhost.errors import DeliveryError, PermanentFailure, TemporaryFailure
from provisioning.settings import DnsSettings, RelaySettings

log = logging.getLogger(__name__)

SMTP_PORT = 25
_shuffler = secrets.SystemRandom()


@dataclass(frozen=True)
class Target:
    """One place to try: a host name (for TLS, logs and DSNs) and where to connect.

    `address` is None for smarthosts: their name is resolved by the system
    resolver when connecting, which also honours /etc/hosts.
    """

    host: str
    port: int = SMTP_PORT
    address: str | None = None
    smarthost: bool = False

    @property
    def connect_to(self) -> str:
        return self.address or self.host

    def __str__(self) -> str:
        where = f"[{self.address}]" if self.address and self.address != self.host else ""
        return f"{self.host}{where}:{self.port}"


def ascii_domain(domain: str) -> str:
    """The domain as DNS knows it: lower case, punycode for IDNs, no trailing dot."""
    name = domain.strip().rstrip(".")
    if name.isascii():
        return name.lower()
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except UnicodeError as exc:  # idna.IDNAError is one
        raise PermanentFailure(553, f"invalid domain {domain!r}: {exc}", enhanced="5.1.3") from None


def domain_of(address: str) -> str:
    """The domain part of an envelope address (after the last @)."""
    return address.rpartition("@")[2]


# -- smarthosts -------------------------------------------------------------------------------


def parse_hostport(text: str, *, default_port: int = SMTP_PORT) -> tuple[str, int]:
    """`host:port`, `[v6 address]:port` or a bare host (then `default_port`)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"no host in {text!r}")
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


def smarthost_target(relay: RelaySettings, sender: str) -> Target | None:
    """The smarthost for mail from `sender`, or None for direct MX delivery.

    A per-sender-domain smarthost wins over the global one. The null sender (DSNs)
    has no domain and uses the global smarthost, if any.
    """
    sender_domain = ascii_domain(domain_of(sender)) if "@" in sender else ""
    for entry in relay.sender_domain_smarthosts:
        domain, _, hostport = entry.strip().partition(" ")
        if sender_domain and ascii_domain(domain) == sender_domain:
            return _smarthost(hostport)
    return _smarthost(relay.smarthost) if relay.smarthost else None


def _smarthost(hostport: str) -> Target:
    try:
        host, port = parse_hostport(hostport)
    except ValueError as exc:
        # A settings mistake must not bounce users' mail: keep it queued until fixed.
        raise TemporaryFailure(451, f"bad smarthost setting: {exc}", enhanced="4.3.5") from None
    return Target(host=host, port=port, smarthost=True)


# -- MX lookup --------------------------------------------------------------------------------


class MxResolver:
    """Looks up mail exchangers with the nameservers from `[dns]` (or the system's).

    `port` is the SMTP port of every target: 25, except in tests and unusual
    setups that run the remote side on another port.
    """

    def __init__(self, settings: DnsSettings, *, port: int = SMTP_PORT) -> None:
        self.settings = settings
        self.port = port
        self._resolver: dns.asyncresolver.Resolver | None = None

    def _get_resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            try:
                resolver = dns.asyncresolver.Resolver(configure=not self.settings.nameservers)
            except dns.exception.DNSException as exc:  # e.g. no /etc/resolv.conf
                raise TemporaryFailure(
                    451, f"no DNS resolver configured: {exc}", enhanced="4.4.3"
                ) from None
            if self.settings.nameservers:
                resolver.port = self.settings.port
                try:
                    resolver.nameservers = list(self.settings.nameservers)
                except ValueError as exc:  # not an IP address; keep the mail until fixed
                    raise TemporaryFailure(
                        451, f"bad dns.nameservers setting: {exc}", enhanced="4.3.5"
                    ) from None
            resolver.timeout = self.settings.timeout
            resolver.lifetime = self.settings.timeout
            self._resolver = resolver
        return self._resolver

    async def targets(self, domain: str) -> list[Target]:
        """The targets for `domain`, best first; raises a DeliveryError when there are none."""
        name = ascii_domain(domain)
        if literal := _address_literal(name):
            return [Target(host=literal, port=self.port, address=literal)]
        hosts = await self.mx_hosts(name)
        if hosts is None:
            return await self._implicit_mx(name)
        found = await asyncio.gather(
            *(self._host_targets(host) for host in hosts), return_exceptions=True
        )
        targets: list[Target] = []
        problems: list[str] = []
        for result in found:
            if isinstance(result, DeliveryError):
                problems.append(result.text)
            elif isinstance(result, BaseException):
                raise result
            else:
                targets.extend(result)
        if not targets:
            # Broken DNS at the remote end is often fixed within hours: retry, do not bounce.
            detail = "; ".join(problems) or "no address records"
            raise TemporaryFailure(
                451, f"no mail exchanger of {name} has an address ({detail})", enhanced="4.4.4"
            )
        return targets

    async def mx_hosts(self, name: str) -> list[str] | None:
        """MX host names by preference, random among equals; None when there is no MX."""
        try:
            answer = await self._query(name, "MX")
        except dns.resolver.NXDOMAIN:
            raise PermanentFailure(550, f"domain {name} does not exist", enhanced="5.1.2") from None
        except dns.resolver.NoAnswer:
            return None
        records = [(r.preference, r.exchange) for r in answer]
        real = [(pref, exchange) for pref, exchange in records if exchange != dns.name.root]
        if not real:
            # RFC 7505: "0 ." says the domain never accepts mail. A null MX mixed with
            # real ones is a misconfiguration; the real ones are then used.
            raise PermanentFailure(
                556, f"domain {name} does not accept mail (null MX)", enhanced="5.1.10"
            )
        _shuffler.shuffle(real)
        real.sort(key=lambda record: record[0])
        return [exchange.to_text(omit_final_dot=True).lower() for _, exchange in real]

    async def _implicit_mx(self, name: str) -> list[Target]:
        """No MX: the domain's own A/AAAA records are its mail exchanger (RFC 5321 5.1)."""
        targets = await self._host_targets(name)
        if not targets:
            raise PermanentFailure(
                550, f"domain {name} has no MX, A or AAAA record", enhanced="5.1.2"
            )
        return targets

    async def _host_targets(self, host: str) -> list[Target]:
        return [
            Target(host=host, port=self.port, address=address)
            for address in await self.addresses(host)
        ]

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of `host`.

        IPv4 comes first because many small sites have no working IPv6 route, and
        an unreachable address costs a connect timeout before the next is tried.
        """
        results = await asyncio.gather(
            self._addresses(host, "A"), self._addresses(host, "AAAA"), return_exceptions=True
        )
        addresses: list[str] = []
        failure: BaseException | None = None
        for result in results:
            if isinstance(result, BaseException):
                failure = result
            else:
                addresses.extend(result)
        if not addresses and failure is not None:
            raise failure
        return addresses

    async def _addresses(self, host: str, rdtype: str) -> list[str]:
        try:
            answer = await self._query(host, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        return [record.address for record in answer]

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer:
        """One query; NXDOMAIN and NoAnswer pass through, every other failure is temporary."""
        try:
            return await self._get_resolver().resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            raise
        except dns.exception.Timeout:
            raise TemporaryFailure(
                451, f"DNS lookup of {name} {rdtype} timed out", enhanced="4.4.3"
            ) from None
        except dns.resolver.NoNameservers:
            raise TemporaryFailure(
                451, f"DNS lookup of {name} {rdtype} failed (SERVFAIL)", enhanced="4.4.3"
            ) from None
        except dns.exception.DNSException as exc:
            raise TemporaryFailure(
                451, f"DNS lookup of {name} {rdtype} failed: {exc}", enhanced="4.4.3"
            ) from None


def _address_literal(name: str) -> str | None:
    """The IP of an address literal domain (`[192.0.2.1]`, `[IPv6:2001:db8::1]`), else None."""
    if not (name.startswith("[") and name.endswith("]")):
        return None
    text = name[1:-1]
    text = text[5:] if text.lower().startswith("ipv6:") else text
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise PermanentFailure(553, f"invalid address literal {name}", enhanced="5.1.3") from None
