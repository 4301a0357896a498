"""In-memory rate limits: failed logins per network and account, messages per account.

Per process: with several worker processes each keeps its own counts, so the
effective limit is at most `workers` times the configured one.
"""

from __future__ import annotations

import ipaddress
import time
from collections import defaultdict, deque


def network_of(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) a client address belongs to."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class SlidingWindow:
    """Counts events per key over the last `window` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = defaultdict(deque)

    def _trim(self, key: str, now: float) -> deque[float]:
        events = self._events[key]
        while events and events[0] <= now - self.window:
            events.popleft()
        if not events:
            del self._events[key]
            return deque()
        return events

    def exceeded(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return len(self._trim(key, now)) >= self.limit

    def add(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._trim(key, now)
        self._events[key].append(now)


class ConnectionCounter:
    """Open connections per client IP."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = defaultdict(int)

    def acquire(self, ip: str) -> bool:
        if self._open[ip] >= self.limit:
            return False
        self._open[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self._open[ip] -= 1
        if self._open[ip] <= 0:
            del self._open[ip]
