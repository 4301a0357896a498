"""The SMTP faces of the engine: MX (inbound, port 25/2525), submission (587, 465),
and the loopback-only port for mail this host sends itself (Sieve replies, forwards).

aiosmtpd speaks the protocol; `MailHandler` decides. Every refusal carries the
RFC 5321 / RFC 3463 code users and remote servers expect.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
import socket
import ssl
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from mailhost.directory import Route
from mailhost.engine import Engine
from mailhost.errors import DeliveryError
from mailhost.filters import MessageInfo
from provisioning.addresses import parse_domain
from provisioning.errors import MuninetError, ValidationError

log = logging.getLogger(__name__)

MX = "mx"
SUBMISSION = "submission"
LOCAL = "local"
NULL_SENDER = "<>"  # how aiosmtpd hands over MAIL FROM:<>; stored as ""
LOOPBACK = "127.0.0.1"
TEMPORARY = "451 4.3.0 Temporary local problem, please try again later"


def reply(exc: DeliveryError) -> str:
    enhanced = f"{exc.enhanced} " if exc.enhanced else ""
    return f"{exc.code} {enhanced}{exc.text}"


def has_bare_line_ending(data: bytes | bytearray) -> bool:
    """True if a CR or LF appears outside a CRLF pair (the SMTP smuggling vector)."""
    crlf = data.count(b"\r\n")
    return data.count(b"\n") != crlf or data.count(b"\r") != crlf


def count_received(data: bytes | bytearray) -> int:
    end = data.find(b"\r\n\r\n")
    headers = data if end == -1 else data[: end + 2]
    return sum(1 for line in headers.split(b"\r\n") if line[:9].lower() == b"received:")


# A plain <local@domain> path, by far the common case; anything else (quotes, source
# routes, the null path) goes through aiosmtpd's full RFC 5322 parser.
_PLAIN_PATH = re.compile(r'^\s*<([^\s<>"\\()@,;:\[\]]+@[^\s<>"\\()@,;:\[\]]+)>\s*(.*)$', re.DOTALL)
DATA_CHUNK = 1 << 18
INLINE_SCAN_LIMIT = 1 << 18  # larger messages are scanned in a worker thread
_END = b"\r\n.\r\n"
_TOO_BIG = object()


def unstuff(data: bytearray) -> bytearray:
    """Undo dot-stuffing (RFC 5321 4.5.2): drop the first "." of every line.

    Works in place when there is nothing to undo, so a large message is not copied.
    """
    if b"\r\n." in data:
        data = data.replace(b"\r\n.", b"\r\n")
    if data.startswith(b"."):
        del data[0]
    return data


class MuninetSMTP(SMTP):
    """aiosmtpd's SMTP protocol with a per-IP connection limit and a fast DATA reader.

    aiosmtpd reads DATA one line at a time in Python, so a 20 MB upload means
    hundreds of thousands of loop iterations on the event loop (aiosmtpd #293),
    stalling every other session. Here DATA is read in large chunks, and the
    end marker search and dot-unstuffing run as single C-level bytes operations.
    """

    def __init__(self, handler: MailHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._counted_ip: str | None = None
        self._engine = handler.engine
        self._kind = handler.kind

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._counted_ip is None and getattr(self, "_original_transport", None) is None:
            peer = transport.get_extra_info("peername")
            ip = peer[0] if peer else "unknown"
            if not self._engine.connections.acquire(ip):
                log.warning("too many connections from %s", ip)
                transport.write(b"421 4.7.0 Too many connections from your address\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
            self._counted_ip = ip
            if self._kind == MX:
                # Looked up while the client says EHLO and MAIL; the answer counts at RCPT.
                self._engine.dnsbl.start(ip)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted_ip is None:
            return
        self._engine.connections.release(self._counted_ip)
        self._counted_ip = None
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        """Say why before hanging up on a silent client (aiosmtpd just closes)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(b"421 4.4.2 Timeout exceeded, closing connection\r\n")  # type: ignore[attr-defined]
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """Parse MAIL/RCPT paths; a regex for the plain form (aiosmtpd's parser is slow)."""
        match = _PLAIN_PATH.match(arg)
        if match:
            return match.group(1), match.group(2)
        address, rest = super()._getaddr(arg)
        return address, rest

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data = await self._read_data()
        if data is None:  # the client went away mid-DATA
            return
        if data is _TOO_BIG:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            self._engine.stats.refused("552")
            await self.push("552 5.3.4 Message too big for system")
            return
        assert isinstance(data, bytearray)
        # A bytearray, not bytes: the message is handed on without being copied.
        self.envelope.original_content = data  # type: ignore[assignment]
        self.envelope.content = data  # type: ignore[assignment]
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> bytearray | object | None:
        """The message up to CRLF.CRLF, unstuffed; _TOO_BIG past the limit; None on EOF."""
        reader = self._reader
        limit = self.data_size_limit or 0
        buf = bytearray()
        scanned = 0
        overflow = False
        at_start = True
        while True:
            if at_start and len(buf) >= 3:
                at_start = False
                if buf.startswith(b".\r\n"):  # an empty message
                    data_end, rest_start = 0, 3
                    break
            found = buf.find(_END, max(scanned - len(_END) + 1, 0))
            if found != -1:
                data_end, rest_start = found + 2, found + len(_END)
                break
            scanned = len(buf)
            if limit and len(buf) > limit + len(_END):
                overflow = True
                del buf[: -(len(_END) - 1)]  # keep what could start the end marker
                scanned = len(buf)
            chunk = await reader.read(DATA_CHUNK)
            if not chunk:
                return None
            buf += chunk
            self._reset_timeout()
        if rest_start < len(buf):  # pipelined commands after the marker go back to the reader
            reader._buffer[:0] = buf[rest_start:]  # type: ignore[attr-defined]
        if overflow or (limit and data_end > limit):
            return _TOO_BIG
        del buf[data_end:]
        return unstuff(buf)


class MailHandler:
    """aiosmtpd handler: the policy of one listening port (MX or submission)."""

    def __init__(self, engine: Engine, kind: str) -> None:
        self.engine = engine
        self.kind = kind
        self.settings = engine.settings

    # -- AUTH (submission only): verified in worker threads, never on the event loop ----

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        blob: object  # bytes, or aiosmtpd's MISSING when the client cancels
        if len(args) == 1:
            blob = await server.challenge_auth("")
        elif (blob := await _decode_inline(server, args[1])) is None:
            return AuthResult(success=False, handled=True)
        if not isinstance(blob, bytes) or blob.count(b"\x00") != 2:
            await server.push("501 5.5.2 Cannot split credentials")
            return AuthResult(success=False, handled=True)
        _, login, password = blob.split(b"\x00")
        return await self._verify(server, login, password)

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        login: object
        if len(args) == 1:
            login = await server.challenge_auth(server.AuthLoginUsernameChallenge)
        elif (login := await _decode_inline(server, args[1])) is None:
            return AuthResult(success=False, handled=True)
        if not isinstance(login, bytes):
            return AuthResult(success=False, handled=False)
        password = await server.challenge_auth(server.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=False)
        return await self._verify(server, login, password)

    async def _verify(self, server: SMTP, login_raw: bytes, password_raw: bytes) -> AuthResult:
        try:
            login, password = login_raw.decode(), password_raw.decode()
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False)
        ip = _peer_ip(server.session) if server.session else "unknown"
        if self.engine.auth_blocked(ip, login):
            await server.push("454 4.7.0 Too many failed logins, try again later")
            return AuthResult(success=False, handled=True)
        try:
            key = await self.engine.authenticate(ip, login, password)
        except Exception:
            log.exception("AUTH check for %r failed", login)
            await server.push("454 4.7.0 Temporary authentication failure")
            return AuthResult(success=False, handled=True)
        if key is None:
            await server.push("535 5.7.8 Authentication credentials invalid")
            return AuthResult(success=False, handled=True)
        return AuthResult(success=True, auth_data=key)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """MX and local ports offer no AUTH at all; submission offers it only once TLS is up."""
        session.host_name = hostname
        if self.kind != SUBMISSION:
            return [r for r in responses if not r[4:].upper().startswith("AUTH")]
        return responses

    # -- the envelope ---------------------------------------------------------------------

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        size = _size_option(mail_options)
        if size is not None and size > self.settings.smtp.max_message_size:
            return self._refuse("552 5.3.4 Message size exceeds fixed maximum message size")
        refusal = await self._sender_refusal(session, address)
        if refusal is not None:
            return self._refuse(refusal)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.routes = []  # type: ignore[attr-defined]
        envelope.declared_size = size or 0  # type: ignore[attr-defined]
        return "250 2.1.0 OK"

    async def _sender_refusal(self, session: Session, address: str) -> str | None:
        """Who may use this envelope sender on this port: the reply refusing it, or None."""
        if self.kind == MX:
            return None
        if self.kind == LOCAL:
            return await self._local_sender_refusal(address)
        return await self._submission_sender_refusal(session, address)

    async def _local_sender_refusal(self, address: str) -> str | None:
        """Processes on this host send as hosted addresses (or as <>), never as others."""
        try:
            if address == NULL_SENDER or await self.engine.is_hosted(address):
                return None
        except Exception:
            log.exception("sender check for %s failed", address)
            return TEMPORARY
        log.warning("local port refused sender <%s>: not in a hosted domain", address)
        return "553 5.7.1 Sender address rejected: not a hosted domain"

    async def _submission_sender_refusal(self, session: Session, address: str) -> str | None:
        login = session.auth_data if session.authenticated else None
        if login is None:
            return "530 5.7.0 Authentication required"
        try:
            allowed = await self.engine.may_send_as(login, address)
        except Exception:
            log.exception("sender check for %s failed", address)
            return TEMPORARY
        if not allowed:
            return f"553 5.7.1 Sender address rejected: not owned by user {login}"
        if self.engine.sent_by_account.exceeded(login):
            return "450 4.7.1 Sending rate limit exceeded, try again later"
        return None

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.settings.smtp.max_recipients:
            return self._refuse("452 4.5.3 Too many recipients")
        if self.kind == MX and not _is_postmaster(address):
            refusal = await self._dnsbl_refusal(session, address)
            if refusal is not None:
                return self._refuse(refusal)
        relay_allowed = self.kind == LOCAL or (
            self.kind == SUBMISSION and bool(session.authenticated)
        )
        try:
            route = await self.engine.route(
                address, relay_allowed=relay_allowed, size=getattr(envelope, "declared_size", 0)
            )
        except DeliveryError as exc:
            return self._refuse(reply(exc))
        except Exception:  # database down or locked, disk trouble: the client retries
            log.exception("recipient lookup for %s failed", address)
            return self._refuse(TEMPORARY)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.routes.append(route)  # type: ignore[attr-defined]
        return "250 2.1.5 OK"

    async def _dnsbl_refusal(self, session: Session, address: str) -> str | None:
        """The 554 for a client on a configured DNS blocklist (MX only), or None.

        Refused at RCPT, not at connection: the sender's server then bounces with our
        reason, and postmaster@ stays reachable for someone listed by mistake.
        """
        ip = _peer_ip(session)
        try:
            listing = await self.engine.dnsbl.check(ip)
        except Exception:  # a DNS problem never refuses mail
            log.exception("DNSBL check of [%s] failed", ip)
            return None
        if listing is None:
            return None
        log.info(
            "refused RCPT <%s> from [%s]: listed in %s (%s)",
            address,
            ip,
            listing.zone,
            ", ".join(listing.codes),
        )
        return listing.reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        login = session.auth_data if session.authenticated else None
        data = await self._prepare(session, envelope, envelope.original_content or b"", login)
        if isinstance(data, str):
            return self._refuse(data)
        routes: list[Route] = envelope.routes  # type: ignore[attr-defined]
        received = self._received(session, envelope, login)
        try:
            accepted = await self.engine.accept(
                mail_from=envelope_sender(envelope),
                routes=routes,
                parts=[received, data],
                smtputf8=envelope.smtp_utf8,
                auth_user=login,
            )
        except DeliveryError as exc:
            log.error("message from %s not stored: %s", envelope.mail_from, exc)
            return self._refuse(reply(exc))
        except Exception:
            log.exception("message from %s not stored", envelope.mail_from)
            return self._refuse(TEMPORARY)
        self.engine.stats.accepted()
        if login is not None:
            self.engine.sent_by_account.add(login)
        log.info(
            "accepted %s from <%s> for %d recipient(s) (%d local, %d queued), %d bytes",
            accepted.queue_id,
            envelope.mail_from,
            len(envelope.rcpt_tos),
            accepted.local,
            accepted.queued,
            len(received) + len(data),
        )
        return f"250 2.0.0 OK queued as {accepted.queue_id}"

    async def _prepare(
        self, session: Session, envelope: Envelope, data: bytes | bytearray, login: str | None
    ) -> str | bytes | bytearray:
        """The message to store, or the reply refusing it: checks, filters, DKIM signature."""
        # Scanning a large message takes milliseconds: not on the event loop.
        bare = (
            await self.engine.run(has_bare_line_ending, data)
            if len(data) > INLINE_SCAN_LIMIT
            else has_bare_line_ending(data)
        )
        if bare:
            return "550 5.6.11 Bare CR or LF in message; lines must end with CRLF"
        if count_received(data) >= self.settings.smtp.max_received_headers:
            return "554 5.4.6 Too many Received headers: mail loop"
        if self.kind != LOCAL and self.engine.pipeline.filters:
            # Mail from the loopback port (Sieve replies, forwards) was filtered on its way in.
            filtered = await self._filter(session, envelope, data, login)
            if isinstance(filtered, str):
                return filtered
            data = filtered
        if self.kind != MX:
            # Our users' mail and this host's own (Sieve replies) leave signed by their domain.
            try:
                data = await self.engine.dkim_sign(bytes(data))
            except Exception:
                log.exception("DKIM signing of mail from <%s> failed", envelope.mail_from)
                return TEMPORARY
        return data

    async def _filter(
        self, session: Session, envelope: Envelope, data: bytes | bytearray, login: str | None
    ) -> str | bytes:
        """Run the content filters: the reply refusing the message, or the message to store."""
        message = MessageInfo(
            data=bytes(data),
            mail_from=envelope_sender(envelope),
            recipients=list(envelope.rcpt_tos),
            recipient_domains=sorted({_ascii_domain(r) for r in envelope.rcpt_tos}),
            client_ip=_peer_ip(session),
            helo=session.host_name or "",
            auth_user=login,
        )
        result = await self.engine.pipeline.run(message)
        self.engine.stats.labels(label for _name, v in result.verdicts for label in v.labels)
        if not result.accepted:
            log.info(
                "refused message from <%s> to %s: %s (%s)",
                message.mail_from,
                ", ".join(message.recipients),
                result.reply,
                result.decided_by,
            )
            return result.reply or TEMPORARY
        return result.apply(message.data)

    def _refuse(self, reply: str) -> str:
        """A refusal, counted for the dashboard (5xx rejected, 4xx deferred)."""
        self.engine.stats.refused(reply)
        return reply

    def _received(self, session: Session, envelope: Envelope, login: str | None) -> bytes:
        protocol = (
            ("UTF8SMTP" if envelope.smtp_utf8 else "ESMTP")
            + ("S" if session.ssl else "")
            + ("A" if login else "")
        )
        helo = session.host_name or "unknown"
        ip = _peer_ip(session)
        recipient = f"\r\n\tfor <{envelope.rcpt_tos[0]}>" if len(envelope.rcpt_tos) == 1 else ""
        stamp = format_datetime(datetime.now(UTC))
        line = (
            f"Received: from {helo} ([{ip}])\r\n\tby {self.settings.association.hostname} "
            f"(muninet) with {protocol}{recipient}; {stamp}\r\n"
        )
        return line.encode("utf-8", "surrogateescape")


async def _decode_inline(server: SMTP, text: str) -> bytes | None:
    """The base64 answer given on the AUTH line itself; None (501 sent) if it is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        await server.push("501 5.5.2 Cannot decode base64")
        return None


def envelope_sender(envelope: Envelope) -> str:
    """The envelope sender as the engine stores it: "" for the null sender (bounces)."""
    sender = envelope.mail_from or ""
    return "" if sender == NULL_SENDER else sender


def _ascii_domain(address: str) -> str:
    domain = address.rpartition("@")[2]
    try:
        return parse_domain(domain).ascii
    except ValidationError:
        return domain.lower()


def _is_postmaster(address: str) -> bool:
    """`postmaster` or `postmaster@domain` (RFC 5321 4.5.1), any case."""
    local = address.rpartition("@")[0] if "@" in address else address
    return local.lower() == "postmaster"


def _peer_ip(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unknown"


def _size_option(options: list[str]) -> int | None:
    for option in options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


async def start_servers(
    engine: Engine, *, reuse_port: bool = False
) -> list[asyncio.base_events.Server]:
    """Listen on the MX, submission (STARTTLS), SMTPS (implicit TLS) and local ports."""
    settings = engine.settings
    listen = settings.listen
    tls = engine_tls(engine)
    smtp = settings.smtp

    def factory(kind: str, *, starttls: bool, implicit_tls: bool) -> MuninetSMTP:
        return MuninetSMTP(
            MailHandler(engine, kind),
            data_size_limit=smtp.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.association.hostname,
            ident="muninet",
            tls_context=tls if starttls else None,
            require_starttls=kind == SUBMISSION and starttls,
            timeout=smtp.command_timeout,
            auth_require_tls=not implicit_tls,
            auth_exclude_mechanism=[] if kind == SUBMISSION else ["PLAIN", "LOGIN"],
        )

    loop = asyncio.get_running_loop()
    address = listen.address
    plans: list[tuple[str, int, Any, ssl.SSLContext | None]] = [
        (address, listen.smtp_port, lambda: factory(MX, starttls=True, implicit_tls=False), None),
        (
            address,
            listen.submission_port,
            lambda: factory(SUBMISSION, starttls=True, implicit_tls=False),
            None,
        ),
        (
            address,
            listen.smtps_port,
            lambda: factory(SUBMISSION, starttls=False, implicit_tls=True),
            tls,
        ),
        (
            LOOPBACK,
            listen.local_port,
            lambda: factory(LOCAL, starttls=False, implicit_tls=False),
            None,
        ),
    ]
    servers: list[asyncio.Server] = []
    for host, port, make, context in plans:
        try:
            server = await loop.create_server(
                make,
                host=host,
                port=port,
                ssl=context,
                reuse_address=True,
                reuse_port=reuse_port,
                family=socket.AF_UNSPEC,
            )
        except OSError as exc:
            for started in servers:
                started.close()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise MuninetError(f"cannot listen on {host}:{port}: {reason}") from exc
        servers.append(server)
    return servers


def engine_tls(engine: Engine) -> ssl.SSLContext:
    from provisioning.tls import server_context

    return server_context(engine.settings)
