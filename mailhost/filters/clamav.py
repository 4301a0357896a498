"""Antivirus: an async clamd client (zINSTREAM) and the filter that refuses viruses.

The client speaks clamd's own protocol over a unix socket or TCP: `zINSTREAM\\0`,
then chunks of `<4-byte big-endian length><data>`, then a zero length; clamd
answers `stream: OK`, `stream: <name> FOUND` or `<reason> ERROR`. At most
`max_parallel` scans are in flight per process, so bursts queue here instead of in
clamd's backlog.

Scans go over clamd sessions kept open for the next ones (`zIDSESSION\\0`, then one
`zINSTREAM\\0` at a time, each answered `<n>: <reply>`), at most `max_parallel`
idle ones per process: a connection per scan cost the client a socket, a connect
and a close, and clamd an accept, on every message. A session that breaks (clamd
restarted, cut it off, answered out of turn) is closed and never yields a verdict:
the scan is sent once more on a new connection, within the same `antivirus.timeout`
(see `ClamdClient`); a scan that runs out of that time closes its session and is a
ClamdUnavailable, as is a failure on the new connection.

Streams over clamd's StreamMaxLength: clamd answers `INSTREAM size limit exceeded`
and closes the connection, often while we are still writing (EPIPE/ECONNRESET).
The filter never sends a message larger than `antivirus.max_stream_size` (the
StreamMaxLength it renders for its own clamd) and treats clamd's own cut-off the
same way, for a clamd configured elsewhere with a smaller limit: `on_oversize`
decides (deliver unscanned with a header, 451, or 552).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from mailhost.filters.base import (
    DomainFiltersLookup,
    MessageInfo,
    SocketAddress,
    Verdict,
    clean_text,
)
from mailhost.filters.quarantine import Quarantine
from provisioning.settings import Settings

log = logging.getLogger(__name__)

HEADER = "X-Muninet-Antivirus"
SIZE_LIMIT_REPLY = "INSTREAM size limit exceeded"
CHUNK_SIZE = 256 * 1024
SESSION_IDLE_TIMEOUT = 30.0  # seconds an idle clamd session is kept for reuse


class ClamdError(Exception):
    """clamd gave no usable answer."""


class ClamdUnavailable(ClamdError):
    """clamd could not be reached, closed the connection or did not answer in time."""


class SessionBroken(ClamdUnavailable):
    """A clamd connection closed or garbled mid-request: its answer cannot be trusted."""


class StreamTooLarge(ClamdError):
    """The message is larger than clamd's StreamMaxLength."""


@dataclass(frozen=True)
class ScanResult:
    virus: str | None  # the signature name, e.g. "Eicar-Signature"; None when clean
    request: int | None = None  # clamd's number for the request in its session, if any

    @property
    def infected(self) -> bool:
        return self.virus is not None


def parse_reply(reply: str) -> ScanResult:
    """clamd's answer to zINSTREAM, or ClamdError."""
    text = reply.strip("\0").strip()
    body = text.removeprefix("stream:").strip()
    if body == "OK":
        return ScanResult(None)
    if body.endswith(" FOUND"):
        return ScanResult(body.removesuffix(" FOUND").strip() or "unknown")
    if SIZE_LIMIT_REPLY in text:
        raise StreamTooLarge(text)
    raise ClamdError(f"clamd answered {text!r}")


class _Session:
    """One clamd connection in IDSESSION mode: one request at a time, numbered by clamd."""

    __slots__ = ("idle_since", "requests", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.requests = 0  # commands sent; clamd numbers its answers 1, 2, ...
        self.idle_since = 0.0


class ClamdClient:
    """One clamd, by unix socket path or `host:port`.

    `instream` keeps up to `sessions` idle clamd sessions for the next scans (0: a
    new connection per scan). A session idle longer than `idle_timeout` is closed
    rather than reused: clamd itself drops an idle session after its ReadTimeout
    (120 s in the clamd.conf muninet renders, clamd's default), answering
    `COMMAND READ TIMED OUT`; 30 s stays well clear of that, also for a clamd
    elsewhere with a shorter one. A pooled session that still turns out closed or
    garbled (clamd restarted, cut it off, answered out of turn) is dropped and the
    scan is sent once more on a new connection, within the same `timeout`; a
    failure there is ClamdUnavailable. A scan is never taken as clean without
    clamd's `stream: OK` under the request number it was sent with.
    """

    def __init__(
        self,
        address: str | SocketAddress,
        *,
        timeout: float = 60,
        chunk_size: int = CHUNK_SIZE,
        sessions: int = 8,
        idle_timeout: float = SESSION_IDLE_TIMEOUT,
    ) -> None:
        self.address = (
            address if isinstance(address, SocketAddress) else SocketAddress.parse(address)
        )
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.sessions = sessions
        self.idle_timeout = idle_timeout
        self.connections = 0  # connections opened so far (all commands)
        self._idle: list[_Session] = []  # most recently used last
        self._closed = False

    async def _connect(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        if self.address.path is not None:
            targets: list[tuple[int, int, int, Any]] = [
                (socket.AF_UNIX, socket.SOCK_STREAM, 0, self.address.path)
            ]
        else:
            infos = await loop.getaddrinfo(
                self.address.host, self.address.port, type=socket.SOCK_STREAM
            )
            targets = [(family, kind, proto, addr) for family, kind, proto, _, addr in infos]
        error: OSError = OSError(f"no address for {self.address}")
        for family, kind, proto, addr in targets:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, addr)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            self.connections += 1
            return sock
        raise error

    async def _exchange(self, command: bytes, payload: bytes | None = None) -> str:
        """Send `command`, then `payload` as an INSTREAM stream if given; the reply.

        A connection of its own. Plain non-blocking sockets rather than asyncio
        streams: when clamd closes the connection over StreamMaxLength, its answer
        must still be read after the failed write, which a stream transport no
        longer allows.
        """
        try:
            async with asyncio.timeout(self.timeout):
                sock = await self._connect()
                try:
                    await self._send(sock, command, payload)
                    return _decode(await _read_answer(sock))
                finally:
                    sock.close()
        except TimeoutError as exc:
            raise self._too_slow() from exc
        except OSError as exc:
            raise ClamdUnavailable(f"clamd at {self.address}: {exc}") from exc

    def _too_slow(self) -> ClamdUnavailable:
        return ClamdUnavailable(f"clamd at {self.address} did not answer within {self.timeout:g}s")

    async def _send(self, sock: socket.socket, command: bytes, payload: bytes | None) -> None:
        """The command, and the payload as INSTREAM chunks; a small one in one write."""
        loop = asyncio.get_running_loop()
        if payload is None:
            await loop.sock_sendall(sock, command)
            return
        try:
            if len(payload) <= self.chunk_size:
                frame = struct.pack(">I", len(payload)) if payload else b""
                await loop.sock_sendall(sock, b"".join((command, frame, payload, b"\0\0\0\0")))
                return
            await loop.sock_sendall(sock, command)
            view = memoryview(payload)
            for start in range(0, len(view), self.chunk_size):
                piece = view[start : start + self.chunk_size]
                await loop.sock_sendall(sock, struct.pack(">I", len(piece)))
                await loop.sock_sendall(sock, piece)
            await loop.sock_sendall(sock, b"\0\0\0\0")
        except (ConnectionResetError, BrokenPipeError) as exc:
            # Over StreamMaxLength clamd answers, stops reading and closes the
            # connection: its answer is normally still there to read.
            try:
                reply = _decode(await _read_answer(sock))
            except (OSError, ClamdError):
                reply = ""
            if SIZE_LIMIT_REPLY in reply:
                raise StreamTooLarge(reply) from exc
            raise SessionBroken(f"clamd at {self.address} closed the connection") from exc

    async def ping(self) -> bool:
        try:
            return await self._exchange(b"zPING\0") == "PONG"
        except ClamdError:
            return False

    async def version(self) -> str:
        """e.g. `ClamAV 1.4.6/27000/...` (the database version follows when official)."""
        return await self._exchange(b"zVERSION\0")

    async def instream(self, data: bytes) -> ScanResult:
        """Scan `data`: a ScanResult, or ClamdUnavailable / StreamTooLarge / ClamdError."""
        if self.sessions <= 0:
            return parse_reply(await self._exchange(b"zINSTREAM\0", data))
        try:
            async with asyncio.timeout(self.timeout):
                session = self._take_idle()
                if session is not None:
                    try:
                        return await self._scan(session, data)
                    except ClamdUnavailable as exc:
                        log.info("clamd session dropped (%s); scanning on a new connection", exc)
                session = _Session(await self._connect())
                return await self._scan(session, data, b"zIDSESSION\0")
        except TimeoutError as exc:
            raise self._too_slow() from exc
        except OSError as exc:
            raise ClamdUnavailable(f"clamd at {self.address}: {exc}") from exc

    async def _scan(self, session: _Session, data: bytes, opening: bytes = b"") -> ScanResult:
        """One INSTREAM in `session`; back to the pool only after a well-formed answer."""
        session.requests += 1
        reusable = False
        try:
            await self._send(session.sock, opening + b"zINSTREAM\0", data)
            raw = await _read_answer(session.sock)
            number, _, reply = _decode(raw).partition(": ")
            if raw.count(b"\0") != 1 or not raw.endswith(b"\0") or number != str(session.requests):
                # Not the answer to this request (or not clamd's form for it): the
                # connection's state is unknown, so nothing it says is trusted.
                raise SessionBroken(
                    f"clamd at {self.address} answered {_decode(raw)!r} "
                    f"to request {session.requests}"
                )
            result = ScanResult(parse_reply(reply).virus, session.requests)
            reusable = True
            return result
        except OSError as exc:
            raise SessionBroken(f"clamd at {self.address}: {exc}") from exc
        finally:
            if reusable:
                self._put_idle(session)
            else:
                session.sock.close()

    def _take_idle(self) -> _Session | None:
        """The most recently used idle session that clamd has not closed, or None."""
        deadline = time.monotonic() - self.idle_timeout
        while self._idle:
            session = self._idle.pop()
            if session.idle_since >= deadline and _quiet(session.sock):
                return session
            session.sock.close()
        return None

    def _put_idle(self, session: _Session) -> None:
        now = time.monotonic()
        while self._idle and self._idle[0].idle_since < now - self.idle_timeout:
            self._idle.pop(0).sock.close()  # the least recently used, gone stale
        if self._closed or len(self._idle) >= self.sessions:
            session.sock.close()
            return
        session.idle_since = now
        self._idle.append(session)

    @property
    def idle_sessions(self) -> int:
        return len(self._idle)

    async def aclose(self) -> None:
        """Close the idle sessions; sessions in use are closed when their scan ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().sock.close()


def _quiet(sock: socket.socket) -> bool:
    """True if an idle session has nothing to read: no end of file from clamd and no
    unasked-for answer (such as `COMMAND READ TIMED OUT` before it closes)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


async def _read_answer(sock: socket.socket, limit: int = 64 * 1024) -> bytes:
    """clamd's answer, NUL included: up to its NUL terminator or the end of the connection."""
    loop = asyncio.get_running_loop()
    raw = b""
    while b"\0" not in raw:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            break
        raw += chunk
        if len(raw) > limit:
            raise ClamdError("clamd's answer is too long")
    if not raw:
        raise SessionBroken("clamd closed the connection without an answer")
    return raw


def _decode(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()


class ClamavFilter:
    """Refuses viruses with `554 5.7.1 Virus found: <name>`.

    A copy is kept when the virus action is `quarantine`: globally when `quarantine`
    is given (`antivirus.quarantine`), or for a recipient domain whose own
    `virus_action` says so (copies then go to `domain_quarantine`). A message for
    several domains is kept if any of them wants it kept; it is refused either way.
    """

    name = "clamav"
    OWNED_HEADERS = (HEADER,)

    def __init__(
        self,
        client: ClamdClient,
        *,
        on_error: str = "tempfail",
        max_stream_size: int = 50 * 1024 * 1024,
        on_oversize: str = "skip",
        max_parallel: int = 8,
        quarantine: Quarantine | None = None,
        domain_filters: DomainFiltersLookup | None = None,
        domain_quarantine: Quarantine | None = None,
    ) -> None:
        if on_error not in {"tempfail", "accept"}:
            raise ValueError(f"on_error must be tempfail or accept, not {on_error!r}")
        if on_oversize not in {"skip", "tempfail", "reject"}:
            raise ValueError(f"on_oversize must be skip, tempfail or reject, not {on_oversize!r}")
        self.client = client
        self.on_error = on_error
        self.max_stream_size = max_stream_size
        self.on_oversize = on_oversize
        self.quarantine = quarantine
        self.domain_filters = domain_filters
        self.domain_quarantine = quarantine or domain_quarantine
        self._slots = asyncio.Semaphore(max_parallel)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, domain_filters: DomainFiltersLookup | None = None
    ) -> ClamavFilter:
        from provisioning.render_filters import clamd_address

        av = settings.antivirus
        store = Quarantine(settings.state_dir / "quarantine" / "virus")
        return cls(
            ClamdClient(clamd_address(settings), timeout=av.timeout, sessions=av.max_parallel),
            on_error=av.on_error,
            max_stream_size=av.max_stream_size,
            on_oversize=av.on_oversize,
            max_parallel=av.max_parallel,
            quarantine=store if av.quarantine else None,
            domain_filters=domain_filters,
            domain_quarantine=store,
        )

    async def aclose(self) -> None:
        """Close the clamd sessions kept for reuse."""
        await self.client.aclose()

    async def check(self, message: MessageInfo) -> Verdict:
        size = len(message.data)
        if size > self.max_stream_size:
            return self._oversize(message, size, f"larger than {self.max_stream_size} bytes")
        try:
            async with asyncio.timeout(self.client.timeout):
                await self._slots.acquire()
        except TimeoutError:
            return self._unavailable(message, ClamdUnavailable("all scan slots stayed busy"))
        try:
            result = await self.client.instream(message.data)
        except StreamTooLarge:
            return self._oversize(message, size, "larger than the scanner's limit")
        except ClamdError as exc:
            return self._unavailable(message, exc)
        finally:
            self._slots.release()
        if result.virus is None:
            return Verdict.accept([(HEADER, "clean (ClamAV)")])
        virus = clean_text(result.virus)
        log.warning(
            "virus %s in a message from <%s> [%s] to %s: refused",
            virus,
            message.mail_from,
            message.client_ip,
            ", ".join(message.recipients),
        )
        store = await self._quarantine_for(message)
        keep = None if store is None else partial(store.store, message, "virus", virus)
        return Verdict.reject(554, "5.7.1", f"Virus found: {virus}", "viruses", keep=keep)

    async def _quarantine_for(self, message: MessageInfo) -> Quarantine | None:
        """Where to keep a copy of this infected message, or None: the virus action."""
        if self.domain_filters is None or not message.recipient_domains:
            return self.quarantine
        try:
            own = await self.domain_filters(message.recipient_domains)
        except Exception:
            log.exception("per-domain virus actions unavailable; using the global one")
            return self.quarantine
        default = "quarantine" if self.quarantine is not None else "reject"
        for domain in message.recipient_domains:
            found = own.get(domain)
            action = (found.virus_action if found is not None else None) or default
            if action == "quarantine":
                return self.domain_quarantine
        return None

    def _unavailable(self, message: MessageInfo, exc: ClamdError) -> Verdict:
        log.warning("virus scan of a message from [%s] failed: %s", message.client_ip, exc)
        if self.on_error == "accept":
            return Verdict.accept([(HEADER, "unavailable, not scanned")], "unavailable")
        return Verdict.tempfail(
            451, "4.7.1", "Virus scanner unavailable, try again later", "unavailable"
        )

    def _oversize(self, message: MessageInfo, size: int, why: str) -> Verdict:
        log.info(
            "message of %d bytes from [%s] not virus-scanned: %s (%s)",
            size,
            message.client_ip,
            why,
            self.on_oversize,
        )
        if self.on_oversize == "tempfail":
            return Verdict.tempfail(
                451, "4.3.4", "Message too big for the virus scanner, try again later", "oversize"
            )
        if self.on_oversize == "reject":
            return Verdict.reject(552, "5.3.4", "Message too big for the virus scanner", "oversize")
        return Verdict.accept([(HEADER, f"not scanned, {why}")], "oversize")
