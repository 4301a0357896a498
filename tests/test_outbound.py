"""Outbound delivery over real sockets: MX lookup, remote SMTP, retries, DSNs, the queue CLI.

DNS answers come from a dnspython server on 127.0.0.1 (tests/dns_server.py), so
the real resolver path runs; the remote side is an aiosmtpd server on 127.0.0.1
playing MX or smarthost. Nothing here mocks SMTP or DNS, and nothing leaves the
loopback interface. Time-dependent behaviour (backoff, max_age) is driven by the
`now` argument of `run_once`, never by sleeping.
"""

from __future__ import annotations

import asyncio
import datetime
import email
import email.message
import email.policy
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import idna
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from aiosmtpd.smtp import SMTP as SMTPServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dns_server import DnsServer
from mailhost.durability import GroupCommitter
from mailhost.dsn import RecipientStatus, build_report
from mailhost.errors import PermanentFailure, TemporaryFailure
from mailhost.mx import MxResolver, parse_hostport, smarthost_target
from mailhost.queue_runner import QueueRunner, RunReport
from mailhost.spool import LOCAL_PREFIX, MessageHeader, Spool, new_id
from provisioning.settings import DnsSettings, Settings, load_settings

HOSTNAME = "mail.outbound-test.example"
IDN_DOMAIN = "пример.test"
IDN_ASCII = idna.encode(IDN_DOMAIN, uts46=True).decode()
ZONE: dict[str, list[tuple[str, str]]] = {
    "example.test": [("MX", "10 mx1.example.test."), ("MX", "20 mx2.example.test.")],
    "mx1.example.test": [("A", "127.0.0.1")],
    "mx2.example.test": [("A", "127.0.0.1")],
    "equal.test": [("MX", "10 a.equal.test."), ("MX", "10 b.equal.test."), ("MX", "5 c.equal.test.")],
    "a.equal.test": [("A", "127.0.0.1")],
    "b.equal.test": [("A", "127.0.0.1")],
    "c.equal.test": [("A", "127.0.0.1"), ("AAAA", "::1")],
    "fallback.test": [("A", "127.0.0.1")],
    "nullmx.test": [("MX", "0 .")],
    "nothing.test": [("TXT", '"v=spf1 -all"')],
    # The preferred MX refuses connections (nothing listens on 127.0.0.2).
    "backup.test": [("MX", "10 dead.backup.test."), ("MX", "20 live.backup.test.")],
    "dead.backup.test": [("A", "127.0.0.2")],
    "live.backup.test": [("A", "127.0.0.1")],
    IDN_ASCII: [("MX", "10 mx1.example.test.")],
}
SERVFAIL = ["broken.test"]
DROP = ["slow.test"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the remote side --------------------------------------------------------------------------


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
    """An aiosmtpd handler that plays a remote mail server with scripted answers."""

    reject: dict[str, str] = field(default_factory=dict)  # recipient -> 5xx reply
    defer: dict[str, int] = field(default_factory=dict)  # recipient -> 4xx replies left
    received: list[Received] = field(default_factory=list)
    helo_names: list[str] = field(default_factory=list)

    async def handle_EHLO(
        self, server: SMTPServer, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self.helo_names.append(hostname)
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
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


@contextmanager_fixture := None  # placeholder removed below
