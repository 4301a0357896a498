"""A remote mail server for tests: aiosmtpd on 127.0.0.1 with scripted answers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from conftest import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    tls: bool
    session: int


@dataclass
class RemoteMx:
    """An aiosmtpd handler playing a remote mail server with scripted answers."""

    reject: dict[str, str] = field(default_factory=dict)  # recipient -> 5xx reply
    defer: dict[str, int] = field(default_factory=dict)  # recipient -> 451s still to give
    received: list[Received] = field(default_factory=list)
    helo_names: list[str] = field(default_factory=list)
    port: int = 0

    async def handle_EHLO(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.helo_names.append(hostname)
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if address in self.reject:
            return self.reject[address]
        if self.defer.get(address, 0) > 0:
            self.defer[address] -= 1
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.received.append(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                content=envelope.content,
                mail_options=list(envelope.mail_options),
                tls=session.ssl is not None,
                session=id(session),
            )
        )
        return "250 2.0.0 queued as 42"

    def recipients(self) -> list[str]:
        return [rcpt for r in self.received for rcpt in r.rcpt_tos]


@contextmanager
def remote_server(**smtp_options: Any) -> Iterator[RemoteMx]:
    """An aiosmtpd server on 127.0.0.1 and a free port (its own thread and loop)."""
    handler = RemoteMx(port=free_port())
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port, **smtp_options)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()
