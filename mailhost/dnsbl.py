"""DNS blocklists (DNSBL) of connecting MX clients.

A client at 192.0.2.99 is listed in zone `bl.example` when
`99.2.0.192.bl.example` has an A record in 127.0.0.0/8 (IPv6: the 32 nibbles of
the address, reversed). The answer 127.255.255.x is not a listing: blocklists such
as Spamhaus use it to say the query was refused (a public resolver, over the free
limit); any answer outside 127.0.0.0/8 is a resolver that invents answers. Both
are logged and ignored.

Where: only on the MX port, never on submission or the loopback port, never for
loopback clients (127.0.0.0/8, ::1; `dnsbl.check_loopback` exists for tests) and
never for addresses that are not globally routable (private networks behind NAT,
link-local, documentation ranges): blocklists do not list them, and asking would
leak them.

How: the lookup starts when the client connects (`start`), all zones at once with
dnspython's async resolver on the `[dns]` servers, within `dnsbl.client_timeout`;
the SMTP server awaits the result at RCPT time, so the greeting is not delayed.
Results are kept for `dnsbl.client_cache` (at most `CACHE_SIZE` addresses), and a
lookup already under way for an address is shared by its other connections. A
DNS failure or timeout is never a listing: mail is refused only on a positive answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from provisioning.dnscheck import ascii_name
from provisioning.settings import DnsSettings, Settings

log = logging.getLogger(__name__)

CACHE_SIZE = 4096
FAILURE_TTL = 30.0  # a failed lookup is retried after this long, not after the full TTL
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
_REFUSED = ipaddress.ip_network("127.255.255.0/24")


@dataclass(frozen=True)
class Listing:
    """A client found on a blocklist."""

    ip: str
    zone: str
    codes: tuple[str, ...]  # the A records answered, e.g. ("127.0.0.2",)

    @property
    def reply(self) -> str:
        return f"554 5.7.1 Service unavailable; client [{self.ip}] blocked using {self.zone}"


def query_name(ip: str | IPAddress, zone: str) -> str:
    """`99.2.0.192.bl.example.` for 192.0.2.99; the reversed nibbles for IPv6."""
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if address.version == 4:
        labels = reversed(str(address).split("."))
    else:
        labels = reversed(address.exploded.replace(":", ""))
    return ".".join(labels) + "." + zone.rstrip(".") + "."


def _address(ip: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:192.0.2.1 on a dual-stack socket
    return address


class DnsblChecker:
    """Looks clients up on the configured zones; one per process (after any fork)."""

    def __init__(
        self,
        dns_settings: DnsSettings,
        zones: Sequence[str],
        *,
        timeout: float = 2.0,
        cache_ttl: float = 300.0,
        check_loopback: bool = False,
    ) -> None:
        self.dns_settings = dns_settings
        self.zones = [ascii_name(zone) for zone in zones if zone.strip()]
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.check_loopback = check_loopback
        self._cache: OrderedDict[str, tuple[float, Listing | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[Listing | None]] = {}
        self._resolver: dns.asyncresolver.Resolver | None = None
        self.counts = {"lookups": 0, "listed": 0, "errors": 0, "cached": 0}

    @classmethod
    def from_settings(cls, settings: Settings) -> DnsblChecker:
        bl = settings.dnsbl
        return cls(
            settings.dns,
            bl.client_zones,
            timeout=bl.client_timeout,
            cache_ttl=bl.client_cache,
            check_loopback=bl.check_loopback,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.zones)

    def applies_to(self, ip: str) -> bool:
        """Whether this client is looked up at all (see the module's docstring)."""
        address = _address(ip)
        if address is None or not self.zones:
            return False
        if address.is_loopback:
            return self.check_loopback and address in _LOOPBACK_V4
        return address.is_global

    def _get_resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            settings = self.dns_settings
            resolver = dns.asyncresolver.Resolver(configure=not settings.nameservers)
            if settings.nameservers:
                resolver.nameservers = list(settings.nameservers)
                resolver.port = settings.port
            resolver.timeout = resolver.lifetime = min(settings.timeout, self.timeout)
            self._resolver = resolver
        return self._resolver

    def start(self, ip: str) -> None:
        """Begin looking `ip` up in the background (at connection time); no-op if exempt."""
        if self.applies_to(ip) and self._cached(ip) is None:
            self._task(ip)

    async def check(self, ip: str) -> Listing | None:
        """The first configured zone listing `ip`, or None (exempt, not listed, DNS failed)."""
        if not self.applies_to(ip):
            return None
        cached = self._cached(ip)
        if cached is not None:
            self.counts["cached"] += 1
            return cached[0]
        # shield: a client hanging up must not cancel a lookup other connections share.
        return await asyncio.shield(self._task(ip))

    def _cached(self, ip: str) -> tuple[Listing | None] | None:
        entry = self._cache.get(ip)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._cache[ip]
            return None
        self._cache.move_to_end(ip)
        return (entry[1],)

    def _task(self, ip: str) -> asyncio.Task[Listing | None]:
        task = self._inflight.get(ip)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._lookup(ip))
            self._inflight[ip] = task
            task.add_done_callback(lambda _: self._inflight.pop(ip, None))
        return task

    async def _lookup(self, ip: str) -> Listing | None:
        address = _address(ip)
        assert address is not None
        self.counts["lookups"] += 1
        answers = await asyncio.gather(
            *(self._ask(address, zone) for zone in self.zones), return_exceptions=True
        )
        listing: Listing | None = None
        failed = False
        for zone, answer in zip(self.zones, answers, strict=True):
            if isinstance(answer, BaseException):
                failed = True
                log.warning("DNSBL lookup of [%s] in %s failed: %s", ip, zone, _why(answer))
            elif answer is not None and listing is None:
                listing = Listing(ip, zone, answer)
        if listing is not None:
            self.counts["listed"] += 1
        elif failed:
            self.counts["errors"] += 1
        # A listing or a clean answer from every zone is kept for the full TTL; a
        # partial failure only briefly, so a zone that was down is asked again soon.
        ttl = (
            self.cache_ttl
            if listing is not None or not failed
            else min(self.cache_ttl, FAILURE_TTL)
        )
        if ttl > 0:
            self._cache[ip] = (time.monotonic() + ttl, listing)
            self._cache.move_to_end(ip)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return listing

    async def _ask(self, address: IPAddress, zone: str) -> tuple[str, ...] | None:
        """The listing codes of one zone, None when not listed; raises on DNS failure."""
        name = query_name(address, zone)
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self._get_resolver().resolve(name, "A", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        codes = tuple(sorted(str(record.address) for record in answer))
        listed = []
        for code in codes:
            value = ipaddress.ip_address(code)
            if value in _REFUSED:
                log.warning("DNSBL %s refused the query for [%s]: %s", zone, address, code)
            elif value in _LOOPBACK_V4:
                listed.append(code)
            else:
                log.warning("DNSBL %s gave a bogus answer for [%s]: %s", zone, address, code)
        return tuple(listed) or None


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | dns.exception.Timeout):
        return "timeout"
    return str(exc) or type(exc).__name__
