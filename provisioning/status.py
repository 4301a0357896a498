"""Are the appliance's services up? Quick probes for the dashboard.

Each service is asked the way its clients ask it, with a short timeout:

- SMTP (MX and submission ports): a `220` greeting;
- Dovecot IMAP: a `* OK` greeting;
- clamd: `zPING` answered `PONG` (unix socket or TCP, as the antivirus filter uses it);
- rspamd: `GET /ping` answered `pong` (the normal worker the spam filter uses);
- FreeRADIUS: a Status-Server request (RFC 5997) answered with a signed Access-Accept,
  when the rendered configuration enables it and holds a client secret for this
  host; otherwise whether its UDP port is taken (the answer says which);
- the web admin: an HTTP answer on the admin port.

The probes run in parallel threads, so the page costs one timeout at most even when
every service is down. The mail queue size is the count of spooled messages, read
through `provisioning.queue` without touching them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import socket
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from provisioning.queue import open_queue
from provisioning.render_filters import clamd_address, rspamd_address
from provisioning.settings import Settings

DEFAULT_TIMEOUT = 0.5
LOOPBACK = "127.0.0.1"


class State(StrEnum):
    UP = "up"
    DOWN = "down"
    OFF = "off"  # turned off in the settings: nothing to probe


@dataclass(frozen=True)
class ServiceStatus:
    key: str  # smtp, submission, imap, clamd, rspamd, radius, web
    state: State
    address: str  # where it was probed, as shown to the admin
    detail: str = ""  # why it is down, or how "up" was decided (technical, English)

    @property
    def up(self) -> bool:
        return self.state is State.UP


class ProbeFailed(Exception):
    """The service did not answer as it should; the message says how."""


# -- addresses ----------------------------------------------------------------------------


def _host(settings: Settings) -> str:
    """Where this host's own listeners are reached: a wildcard listen address is loopback."""
    address = settings.listen.address
    if address in ("", "0.0.0.0"):  # noqa: S104 - the setting's own value
        return LOOPBACK
    if address == "::":
        return "::1"
    return address


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _connect(target: str | tuple[str, int], timeout: float) -> socket.socket:
    """A connected stream socket: unix path or (host, port)."""
    if isinstance(target, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except OSError:
            sock.close()
            raise
        return sock
    return socket.create_connection(target, timeout=timeout)


def _split(address: str) -> str | tuple[str, int]:
    """A filter daemon address: a unix path (any value with `/`), `host:port` or `[v6]:port`."""
    if "/" in address:
        return address
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ProbeFailed(f"not a socket path or host:port: {address!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ProbeFailed):
        return str(exc)
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


# -- probes: each returns a detail when up, raises when not ---------------------------------


def _read_until(sock: socket.socket, done: Callable[[bytes], bool], limit: int = 8192) -> bytes:
    data = b""
    while not done(data) and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _greeting(target: tuple[str, int], prefix: bytes, timeout: float) -> str:
    with _connect(target, timeout) as sock:
        line = _read_until(sock, lambda d: b"\n" in d)
        with contextlib.suppress(OSError):  # a polite goodbye; the answer does not matter
            sock.sendall(b"QUIT\r\n" if prefix == b"220" else b"a LOGOUT\r\n")
    if not line.startswith(prefix):
        raise ProbeFailed(f"unexpected greeting {line[:60]!r}")
    return ""


def probe_smtp(host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> str:
    return _greeting((host, port), b"220", timeout)


def probe_imap(host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> str:
    return _greeting((host, port), b"* OK", timeout)


def probe_clamd(address: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    with _connect(_split(address), timeout) as sock:
        sock.sendall(b"zPING\0")
        answer = _read_until(sock, lambda d: b"\0" in d)
    if answer.rstrip(b"\0\n") != b"PONG":
        raise ProbeFailed(f"answered {answer[:60]!r} to PING")
    return ""


def _http_get(target: str | tuple[str, int], path: str, timeout: float) -> tuple[int, bytes]:
    """(status, body) of a plain HTTP/1.0 GET; enough for a health check."""
    with _connect(target, timeout) as sock:
        host = "localhost" if isinstance(target, str) else _show(*target)
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        response = _read_until(sock, lambda _d: False, limit=65536)
    head, _, body = response.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if match is None:
        raise ProbeFailed(f"not an HTTP answer: {head[:60]!r}")
    return int(match.group(1)), body


def probe_rspamd(address: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    status, body = _http_get(_split(address), "/ping", timeout)
    if status != 200 or body.strip() != b"pong":
        raise ProbeFailed(f"/ping answered {status} {body[:40]!r}")
    return ""


def probe_web(host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> str:
    status, _body = _http_get((host, port), "/login", timeout)
    if status >= 500:
        raise ProbeFailed(f"HTTP {status}")
    return ""


# -- FreeRADIUS ---------------------------------------------------------------------------

STATUS_SERVER = 12
ACCESS_ACCEPT = 2
MESSAGE_AUTHENTICATOR = 80
_CLIENT = re.compile(r"client\s+\S+\s*\{(?P<body>[^}]*)\}", re.DOTALL)
_SECRET = re.compile(r'secret\s*=\s*"(?P<value>(?:[^"\\]|\\.)*)"')
_IPADDR = re.compile(r"ipaddr\s*=\s*(?P<value>\S+)")


def radius_secret(raddb: Path, source: str) -> bytes | None:
    """The secret of the client `source` in muninet's rendered FreeRADIUS configuration.

    None when Status-Server is not enabled there, no client is `source`, or the files
    cannot be read (the web then runs as another user than FreeRADIUS's owner).
    """
    try:
        config = (raddb / "radiusd.conf").read_text()
        clients = (raddb / "clients.conf").read_text()
    except OSError:
        return None
    if not re.search(r"^\s*status_server\s*=\s*yes\s*$", config, re.MULTILINE):
        return None
    for match in _CLIENT.finditer(clients):
        body = match.group("body")
        address, secret = _IPADDR.search(body), _SECRET.search(body)
        if address and secret and address.group("value") == source:
            return re.sub(r"\\(.)", r"\1", secret.group("value")).encode()
    return None


def status_server_packet(secret: bytes, identifier: int, authenticator: bytes) -> bytes:
    """A Status-Server request carrying only its Message-Authenticator (RFC 5997 section 3)."""
    length = 20 + 18
    zeroed = struct.pack("!BBH", STATUS_SERVER, identifier, length) + authenticator
    attribute = bytes([MESSAGE_AUTHENTICATOR, 18]) + bytes(16)
    signature = hmac.new(secret, zeroed + attribute, hashlib.md5).digest()
    return zeroed + bytes([MESSAGE_AUTHENTICATOR, 18]) + signature


def probe_radius_status(
    host: str, port: int, secret: bytes, timeout: float = DEFAULT_TIMEOUT
) -> str:
    """Send Status-Server; up only on an Access-Accept signed with the same secret."""
    identifier = secrets.randbelow(256)
    authenticator = secrets.token_bytes(16)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.send(status_server_packet(secret, identifier, authenticator))
        reply = sock.recv(4096)
    if len(reply) < 20:
        raise ProbeFailed("a malformed answer")
    code, answered_id, length = struct.unpack("!BBH", reply[:4])
    expected = hashlib.md5(  # noqa: S324 - RADIUS's Response Authenticator is MD5 (RFC 2865)
        reply[:4] + authenticator + reply[20:length] + secret
    ).digest()
    if answered_id != identifier or not hmac.compare_digest(reply[4:20], expected):
        raise ProbeFailed("an answer not signed with our secret")
    if code != ACCESS_ACCEPT:
        raise ProbeFailed(f"answered code {code} to Status-Server")
    return "Status-Server"


def probe_udp_bound(port: int, proc: Path = Path("/proc/net")) -> str:
    """Whether some socket holds the UDP port (all we can tell without a secret).

    Read from the kernel's socket tables, not by trying to bind the port: a bind,
    however brief, could make a starting FreeRADIUS fail.
    """
    wanted = f":{port:04X}"
    found = False
    for name in ("udp", "udp6"):
        try:
            lines = (proc / name).read_text().splitlines()[1:]
        except OSError:
            continue
        found = True
        if any(line.split()[1].endswith(wanted) for line in lines if len(line.split()) > 1):
            return "port in use (no Status-Server)"
    raise ProbeFailed("nothing listens on the port" if found else "cannot read the socket tables")


def probe_radius(settings: Settings, timeout: float = DEFAULT_TIMEOUT) -> str:
    host = _host(settings)
    port = settings.listen.radius_auth_port
    secret = radius_secret(settings.state_dir / "freeradius", host)
    if secret is None:
        return probe_udp_bound(port)
    return probe_radius_status(host, port, secret, timeout)


# -- all of them --------------------------------------------------------------------------


def _probes(settings: Settings, timeout: float) -> list[tuple[str, str, Callable[[], str] | None]]:
    """(key, address shown, probe or None when turned off) of every service, in page order."""
    host, listen = _host(settings), settings.listen
    clamd, rspamd = clamd_address(settings), rspamd_address(settings)
    return [
        (
            "smtp",
            _show(host, listen.smtp_port),
            lambda: probe_smtp(host, listen.smtp_port, timeout),
        ),
        (
            "submission",
            _show(host, listen.submission_port),
            lambda: probe_smtp(host, listen.submission_port, timeout),
        ),
        (
            "imap",
            _show(host, listen.imap_port),
            lambda: probe_imap(host, listen.imap_port, timeout),
        ),
        (
            "clamd",
            clamd,
            (lambda: probe_clamd(clamd, timeout)) if settings.antivirus.enabled else None,
        ),
        (
            "rspamd",
            rspamd,
            (lambda: probe_rspamd(rspamd, timeout)) if settings.spam.enabled else None,
        ),
        (
            "radius",
            _show(host, listen.radius_auth_port),
            lambda: probe_radius(settings, timeout),
        ),
        (
            "web",
            _show(host, listen.admin_port),
            lambda: probe_web(host, listen.admin_port, timeout),
        ),
    ]


def _run(probe: Callable[[], str]) -> tuple[bool, str]:
    try:
        return True, probe()
    except Exception as exc:  # every failure is "down", with its reason
        return False, _reason(exc)


def check_services(settings: Settings, timeout: float = DEFAULT_TIMEOUT) -> list[ServiceStatus]:
    """The state of every service; takes about `timeout` at most, whatever is down."""
    probes = _probes(settings, timeout)
    executor = ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="status")
    try:
        futures = {key: executor.submit(_run, probe) for key, _address, probe in probes if probe}
        wait(futures.values(), timeout=timeout + 0.2)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    results: list[ServiceStatus] = []
    for key, address, probe in probes:
        if probe is None:
            results.append(ServiceStatus(key, State.OFF, address))
            continue
        future = futures[key]
        up, detail = future.result() if future.done() else (False, "no answer in time")
        results.append(ServiceStatus(key, State.UP if up else State.DOWN, address, detail))
    return results


def queue_size(settings: Settings) -> int:
    """Messages in the mail spool (waiting for delivery or a retry)."""
    return len(open_queue(settings).ids())
