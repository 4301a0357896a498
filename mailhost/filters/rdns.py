"""The client's forward-confirmed reverse DNS name (FCrDNS), for the spam filter.

rspamd expects the MTA to pass the client's host name (`Hostname:`); without it its
hfilter module scores HFILTER_HOSTNAME_UNKNOWN (2.5) on every message, even from a
well-configured server. When the SMTP server did not look the name up itself
(`MessageInfo.client_hostname` is None), the spam filter does: PTR of the IP, then
A/AAAA of each name (at most 3) until one leads back to the IP. Uses the `[dns]`
resolvers, asynchronously; results (names and misses) are kept for `ttl` seconds.
Any DNS failure just means "no verified name".
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename

from provisioning.settings import DnsSettings

MAX_PTR_NAMES = 3


class ReverseDns:
    def __init__(self, settings: DnsSettings, *, ttl: float = 300, size: int = 10_000) -> None:
        self.settings = settings
        self.ttl = ttl
        self.size = size
        self._cache: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._resolver: dns.asyncresolver.Resolver | None = None

    def _get_resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            resolver = dns.asyncresolver.Resolver(configure=not self.settings.nameservers)
            if self.settings.nameservers:
                resolver.nameservers = list(self.settings.nameservers)
                resolver.port = self.settings.port
            resolver.timeout = resolver.lifetime = self.settings.timeout
            self._resolver = resolver
        return self._resolver

    async def verified_name(self, ip: str) -> str | None:
        """The FCrDNS name of `ip` (lower case, no trailing dot), or None."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        key = address.compressed
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key)
            return cached[1]
        try:
            name = await self._lookup(address)
        except (dns.exception.DNSException, OSError, ValueError):  # ValueError: bad [dns] setting
            name = None
        self._cache[key] = (now + self.ttl, name)
        self._cache.move_to_end(key)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return name

    async def _lookup(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        resolver = self._get_resolver()
        try:
            ptr = await resolver.resolve(dns.reversename.from_address(str(address)), "PTR")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        rdtype = "A" if address.version == 4 else "AAAA"
        for record in list(ptr)[:MAX_PTR_NAMES]:
            name = str(record.target.to_text()).rstrip(".").lower()
            try:
                forward = await resolver.resolve(f"{name}.", rdtype, search=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            if any(ipaddress.ip_address(r.address) == address for r in forward):
                return name
        return None
