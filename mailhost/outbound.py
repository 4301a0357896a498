"""Outbound SMTP: hand a queued message's remote recipients to the servers that take them.

Recipients are grouped by domain and each group goes to that domain's mail
exchangers in one transaction (with a smarthost, everything goes there in one
transaction). The outcome is per recipient, because a remote server may accept
some recipients and refuse others: a 5xx reply is permanent for the recipients it
concerns, a 4xx reply temporary. Failures before any answer (connection refused,
timeout, a dropped connection, TLS or AUTH trouble) move on to the next mail
exchanger, and when none is left they are temporary.

TLS policy:

* Direct MX delivery uses STARTTLS whenever it is offered, without verifying the
  certificate (opportunistic TLS, as RFC 7435 describes and as most MTAs do by
  default: most MX certificates do not match, and refusing them would only push the
  mail to plain text). If the TLS handshake itself fails, the message goes again in
  plain text on a new connection, as an opportunistic client must not be stricter
  than one that never tried.
* A smarthost with `relay.require_tls` must give us TLS (STARTTLS, or implicit TLS
  on port 465) before AUTH and MAIL; otherwise the mail stays queued. Its
  certificate is not verified either: this protects the password against passive
  eavesdropping, not against an active attacker on the path. Verifying the
  smarthost certificate (and pinning a CA bundle) is a planned setting.

Connections are cached per target for the duration of a queue run, so several
messages for the same host share one connection; `close()` ends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from aiosmtplib import (
    SMTP,
    SMTPException,
    SMTPHeloError,
    SMTPResponseException,
)

from mailhost.errors import DeliveryError, PermanentFailure, TemporaryFailure
from mailhost.mx import SMTP_PORT, MxResolver, Target, ascii_domain, domain_of, smarthost_target
from mailhost.spool import MessageHeader
from provisioning.settings import Settings

log = logging.getLogger(__name__)

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")
_IMPLICIT_TLS_PORT = 465
_QUIT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Result:
    """What happened to one recipient: `error` None means the remote accepted it."""

    error: DeliveryError | None = None
    remote_mta: str | None = None  # the host that gave the answer, for logs and DSNs
    reply: str = ""  # the remote's success reply (e.g. its queue id), for logs

    @property
    def ok(self) -> bool:
        return self.error is None


def reply_failure(code: int, message: str) -> DeliveryError:
    """A remote SMTP reply as a DeliveryError; 5xx is permanent, anything else temporary."""
    text = " ".join(message.split())  # multi-line replies become one line
    enhanced = ""
    if match := _ENHANCED.match(text):
        enhanced = ".".join(match.groups())
        text = text[match.end() :]
    cls = PermanentFailure if 500 <= code <= 599 else TemporaryFailure
    return cls(code, text, enhanced=enhanced)


class _TryNext(Exception):
    """No outcome from this target (it could not be reached or dropped us): try the next."""

    def __init__(self, error: TemporaryFailure) -> None:
        super().__init__(str(error))
        self.error = error


class _TlsFailed(_TryNext):
    """STARTTLS was offered but the handshake failed."""


@dataclass(frozen=True)
class _Envelope:
    """The parts of a queued message a transaction needs, computed once per message."""

    id: str
    sender: str
    data: bytes
    smtputf8: bool
    eight_bit: bool
    utf8_headers: bool

    @classmethod
    def of(cls, header: MessageHeader, data: bytes) -> _Envelope:
        head = data.split(b"\r\n\r\n", 1)[0]
        return cls(
            id=header.id,
            sender=wire_address(header.mail_from) if header.mail_from else "",
            data=data,
            smtputf8=header.smtputf8,
            eight_bit=not data.isascii(),
            utf8_headers=not head.isascii(),
        )


def wire_address(address: str) -> str:
    """The address with its domain as an A-label, so that an IDN needs no SMTPUTF8."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    try:
        return f"{local}@{ascii_domain(domain)}"
    except DeliveryError:
        return address  # let the remote judge it


def _opportunistic_tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class OutboundDeliverer:
    """Delivers remote recipients over SMTP, directly to MX hosts or through a smarthost.

    `mx_port` is the port of every MX target: 25, except in tests and unusual setups
    that run the remote side elsewhere. At most `queue.max_parallel` transactions are
    in flight at once, however many messages and domains the queue runner hands in.
    """

    def __init__(
        self, settings: Settings, *, mx_port: int = SMTP_PORT, resolver: MxResolver | None = None
    ) -> None:
        self.settings = settings
        self.hostname = settings.association.hostname
        self.timeout = settings.queue.timeout
        self.resolver = resolver or MxResolver(settings.dns, port=mx_port)
        self._idle: dict[Target, list[SMTP]] = {}
        self._slots = asyncio.Semaphore(settings.queue.max_parallel)
        self._tls = _opportunistic_tls_context()

    async def deliver(
        self, header: MessageHeader, data: bytes, recipients: Sequence[str]
    ) -> dict[str, Result]:
        """Try every recipient once; the result maps each recipient to its outcome."""
        try:
            smarthost = smarthost_target(self.settings.relay, header.mail_from)
        except DeliveryError as exc:
            return dict.fromkeys(recipients, Result(exc))
        groups = {"": list(recipients)} if smarthost else _by_domain(recipients)
        envelope = _Envelope.of(header, data)
        outcomes = await asyncio.gather(
            *(
                self._deliver_group(envelope, domain, group, smarthost)
                for domain, group in groups.items()
            )
        )
        results: dict[str, Result] = {}
        for outcome in outcomes:
            results.update(outcome)
        return results

    async def close(self) -> None:
        """Say QUIT on every cached connection (at the end of a queue run)."""
        idle, self._idle = self._idle, {}
        await asyncio.gather(*(_quit(client) for clients in idle.values() for client in clients))

    # -- one domain ---------------------------------------------------------------------------

    async def _deliver_group(
        self, env: _Envelope, domain: str, recipients: list[str], smarthost: Target | None
    ) -> dict[str, Result]:
        try:
            targets = [smarthost] if smarthost else await self.resolver.targets(domain)
        except DeliveryError as exc:
            return dict.fromkeys(recipients, Result(exc))
        async with self._slots:
            return await self._try_targets(env, targets, recipients)

    async def _try_targets(
        self, env: _Envelope, targets: list[Target], recipients: list[str]
    ) -> dict[str, Result]:
        last: DeliveryError = TemporaryFailure(451, "no target to try", enhanced="4.4.4")
        for target in targets:
            try:
                client = await self._checkout(target)
                results = await self._transaction(client, target, env, recipients)
            except _TryNext as exc:
                log.info("%s: %s", env.id, exc.error.text)
                last = exc.error
                continue
            self._checkin(target, client)
            return results
        return dict.fromkeys(recipients, Result(last))

    # -- connections --------------------------------------------------------------------------

    async def _checkout(self, target: Target) -> SMTP:
        """A cached connection that still answers RSET, or a new one."""
        pool = self._idle.get(target, [])
        while pool:
            client = pool.pop()
            if await _still_usable(client):
                return client
        return await self._connect(target)

    def _checkin(self, target: Target, client: SMTP) -> None:
        if client.is_connected:
            self._idle.setdefault(target, []).append(client)

    async def _connect(self, target: Target) -> SMTP:
        try:
            return await self._open(target, starttls=True)
        except _TlsFailed as exc:
            if target.smarthost and self.settings.relay.require_tls:
                raise
            log.warning("%s; trying again without TLS", exc.error.text)
            return await self._open(target, starttls=False)

    async def _open(self, target: Target, *, starttls: bool) -> SMTP:
        implicit_tls = target.smarthost and target.port == _IMPLICIT_TLS_PORT
        client = SMTP(
            hostname=target.connect_to,
            port=target.port,
            local_hostname=self.hostname,
            timeout=self.timeout,
            use_tls=implicit_tls,
            start_tls=False,
            tls_context=self._tls,
        )
        try:
            await client.connect()
            await _greet(client)
            if starttls and not implicit_tls and client.supports_extension("starttls"):
                await self._starttls(client, target)
            self._check_tls(client, target)
            await self._authenticate(client, target)
        except _TryNext:
            client.close()
            raise
        except DeliveryError as exc:
            client.close()
            raise _TryNext(TemporaryFailure(exc.code, exc.text, enhanced=exc.enhanced)) from exc
        except (SMTPException, OSError) as exc:
            client.close()
            raise _TryNext(
                TemporaryFailure(451, f"{target}: {_describe(exc)}", enhanced="4.4.1")
            ) from exc
        return client

    async def _starttls(self, client: SMTP, target: Target) -> None:
        try:
            await client.starttls(server_hostname=target.host, tls_context=self._tls)
            await _greet(client)  # RFC 3207: forget what was said before TLS, ask again
        except (SMTPException, OSError) as exc:
            raise _TlsFailed(
                TemporaryFailure(
                    451, f"{target}: STARTTLS failed: {_describe(exc)}", enhanced="4.7.0"
                )
            ) from exc

    def _check_tls(self, client: SMTP, target: Target) -> None:
        if not (target.smarthost and self.settings.relay.require_tls):
            return
        if client.get_transport_info("sslcontext") is None:
            raise TemporaryFailure(
                451,
                f"smarthost {target} offers no STARTTLS and relay.require_tls is on",
                enhanced="4.7.0",
            )

    async def _authenticate(self, client: SMTP, target: Target) -> None:
        relay = self.settings.relay
        if not (target.smarthost and relay.username):
            return
        try:
            await client.login(relay.username, relay.password)
        except SMTPException as exc:
            # A wrong password is the admin's to fix: keep the mail queued, do not bounce it.
            raise TemporaryFailure(
                451, f"AUTH at smarthost {target} failed: {_describe(exc)}", enhanced="4.7.0"
            ) from exc

    # -- the transaction ----------------------------------------------------------------------

    async def _transaction(
        self, client: SMTP, target: Target, env: _Envelope, recipients: list[str]
    ) -> dict[str, Result]:
        try:
            return await self._send(client, target, env, recipients)
        except OSError as exc:  # disconnects and timeouts (aiosmtplib's are OSErrors)
            client.close()
            raise _TryNext(
                TemporaryFailure(
                    451, f"{target}: connection lost: {_describe(exc)}", enhanced="4.4.2"
                )
            ) from exc

    async def _send(
        self, client: SMTP, target: Target, env: _Envelope, recipients: list[str]
    ) -> dict[str, Result]:
        remote = target.host
        wire = {rcpt: wire_address(rcpt) for rcpt in recipients}
        try:
            options = self._mail_options(client, target, env, list(wire.values()))
        except PermanentFailure as exc:
            return dict.fromkeys(recipients, Result(exc, remote))
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        try:
            await client.mail(env.sender, options=options, encoding=encoding)
        except SMTPResponseException as exc:
            return dict.fromkeys(recipients, Result(reply_failure(exc.code, exc.message), remote))
        except ValueError:
            bad = PermanentFailure(553, "sender address cannot be sent", enhanced="5.1.7")
            return dict.fromkeys(recipients, Result(bad))
        results, accepted = await self._recipients(client, remote, wire, encoding)
        if not accepted:
            with contextlib.suppress(SMTPResponseException):
                await client.rset()
            return results
        try:
            reply = await client.data(env.data)
        except SMTPResponseException as exc:
            outcome = Result(reply_failure(exc.code, exc.message), remote)
        else:
            outcome = Result(None, remote, reply=f"{reply.code} {reply.message}")
        results.update(dict.fromkeys(accepted, outcome))
        return results

    async def _recipients(
        self, client: SMTP, remote: str, wire: dict[str, str], encoding: str
    ) -> tuple[dict[str, Result], list[str]]:
        """RCPT for each recipient: (refusals, accepted recipients)."""
        results: dict[str, Result] = {}
        accepted: list[str] = []
        for rcpt, address in wire.items():
            try:
                await client.rcpt(address, encoding=encoding)
            except SMTPResponseException as exc:
                results[rcpt] = Result(reply_failure(exc.code, exc.message), remote)
            except ValueError:
                bad = PermanentFailure(553, "recipient address cannot be sent", enhanced="5.1.3")
                results[rcpt] = Result(bad)
            else:
                accepted.append(rcpt)
        return results, accepted

    def _mail_options(
        self, client: SMTP, target: Target, env: _Envelope, recipients: list[str]
    ) -> list[str]:
        """MAIL FROM parameters: SMTPUTF8 and 8BITMIME when needed and offered, SIZE."""
        options: list[str] = []
        utf8_addresses = not env.sender.isascii() or not all(r.isascii() for r in recipients)
        if utf8_addresses or env.smtputf8:
            if client.supports_extension("smtputf8"):
                options.append("SMTPUTF8")
            elif utf8_addresses or env.utf8_headers:
                # RFC 6531 3.2: without SMTPUTF8 at the server, such a message cannot go on.
                raise PermanentFailure(
                    553,
                    f"{target.host} does not support SMTPUTF8, which this message needs",
                    enhanced="5.6.7",
                )
        # Without 8BITMIME at the server, 8-bit data goes as it is (no 7-bit downgrade):
        # practically every server accepts it, and a conversion could break signatures.
        if env.eight_bit and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        if client.supports_extension("size"):
            options.append(f"SIZE={len(env.data)}")
        return options


def _by_domain(recipients: Sequence[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for rcpt in recipients:
        groups.setdefault(domain_of(rcpt).lower(), []).append(rcpt)
    return groups


async def _greet(client: SMTP) -> None:
    """EHLO, or HELO for the rare server that does not speak ESMTP."""
    try:
        await client.ehlo()
    except SMTPHeloError:
        await client.helo()


async def _still_usable(client: SMTP) -> bool:
    """Whether a cached connection still answers; a dead one is closed."""
    if client.is_connected:
        try:
            if (await client.rset()).code == 250:
                return True
        except (SMTPException, OSError):
            pass
    client.close()
    return False


async def _quit(client: SMTP) -> None:
    try:
        await client.quit(timeout=_QUIT_TIMEOUT)
    except (SMTPException, OSError):
        pass
    finally:
        client.close()


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or exc.__class__.__name__
