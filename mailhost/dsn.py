"""Delivery status notifications (RFC 3464): telling a sender what became of their mail.

A DSN is a multipart/report with three parts: a short English explanation for
people, a message/delivery-status part for programs (one block per recipient:
Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code), and the original
message's header section, so the sender can tell which message it was without
receiving the whole body back.

A DSN goes out from the null sender `<>`, so that if it fails in turn nothing
answers it: a message from the null sender never gets a DSN (RFC 5321 4.5.5),
which is what breaks bounce loops. Addresses that need UTF-8 use the RFC 6533
forms (the `utf-8` address type, message/global-delivery-status,
message/global-headers) and the DSN is queued as an SMTPUTF8 message.
"""

from __future__ import annotations

import email.utils
import quopri
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from mailhost.errors import DeliveryError
from mailhost.spool import LOCAL_PREFIX, MessageHeader, new_id

Action = Literal["failed", "delayed"]

_MAX_HEADER_BYTES = 64 * 1024  # enough of the original header section to identify it
_MAX_DIAGNOSTIC = 900  # keep each DSN field line under SMTP's 998-byte line limit


@dataclass(frozen=True)
class RecipientStatus:
    """One recipient's line in a DSN."""

    recipient: str  # as queued: a remote address or LOCAL_PREFIX + mailbox key
    action: Action
    status: str  # the enhanced status code, e.g. "5.1.1"
    diagnostic: str  # what was said, e.g. "550 5.1.1 no such user"
    remote_mta: str | None = None  # the host that said it; None: decided here

    @classmethod
    def from_error(
        cls, recipient: str, error: DeliveryError, *, action: Action, remote_mta: str | None
    ) -> RecipientStatus:
        status = error.enhanced or f"{5 if error.permanent else 4}.0.0"
        return cls(recipient, action, status, str(error), remote_mta)

    @property
    def address(self) -> str:
        """The address the sender knows (mailbox key for local recipients)."""
        return self.recipient.removeprefix(LOCAL_PREFIX)


def bounce(
    original: MessageHeader,
    data: bytes,
    statuses: Sequence[RecipientStatus],
    *,
    hostname: str,
    now: float,
    route: Callable[[str], str] | None = None,
) -> tuple[MessageHeader, bytes] | None:
    """The queued DSN for `statuses` (header and bytes), or None when none may be sent.

    `route` turns the sender's address into a spool recipient: the address itself
    for a remote sender, LOCAL_PREFIX + key for a hosted mailbox.
    """
    if not original.mail_from or not statuses:
        return None
    body = build_report(original, data, statuses, hostname=hostname, now=now)
    header = MessageHeader(
        id=new_id(),
        mail_from="",
        recipients=[route(original.mail_from) if route else original.mail_from],
        received_at=now,
        size=len(body),
        smtputf8=not body.isascii(),
    )
    return header, body


def build_report(
    original: MessageHeader,
    data: bytes,
    statuses: Sequence[RecipientStatus],
    *,
    hostname: str,
    now: float,
) -> bytes:
    """The RFC 3464 message itself, with CRLF line endings."""
    boundary = f"=_muninet_{secrets.token_hex(12)}"
    headers_part = _original_headers(data)
    delayed = all(s.action == "delayed" for s in statuses)
    status_text = _delivery_status(original, statuses, hostname=hostname, now=now)
    utf8 = not (status_text.isascii() and headers_part.isascii())
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{original.mail_from}>",
        f"Subject: {_subject(delayed)}",
        f"Date: {email.utils.formatdate(now, localtime=True)}",
        f"Message-ID: <{new_id()}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        *_human_part(statuses, hostname=hostname, delayed=delayed),
        f"--{boundary}",
        "Content-Type: message/"
        + ("global-delivery-status" if utf8 else "delivery-status")
        + ("; charset=utf-8" if utf8 else ""),
        "",
        status_text,
        f"--{boundary}",
        "Content-Type: " + ("message/global-headers" if utf8 else "text/rfc822-headers"),
        "",
    ]
    head = "\r\n".join(lines).encode() + b"\r\n"
    return head + headers_part + f"\r\n--{boundary}--\r\n".encode()


def _subject(delayed: bool) -> str:
    if delayed:
        return "Delayed Mail (still being retried)"
    return "Undelivered Mail Returned to Sender"


def _human_part(statuses: Sequence[RecipientStatus], *, hostname: str, delayed: bool) -> list[str]:
    """The text/plain explanation, quoted-printable so any address survives transport."""
    if delayed:
        summary = [
            "Your message has not been delivered yet to the recipients below.",
            "The mail system will keep trying; you need not send it again.",
        ]
    else:
        summary = [
            "Your message could not be delivered to the recipients below.",
            "The mail system has given up; they will not receive it.",
        ]
    text_lines = [
        f"This is the mail system at {hostname}.",
        "",
        *summary,
        "",
        *(f"<{s.address}>: {_one_line(s.diagnostic)}{_gave_up(s)}" for s in statuses),
        "",
    ]
    text = "\r\n".join(text_lines).encode()
    body = quopri.encodestring(text).decode("ascii").replace("\r\n", "\n").replace("\n", "\r\n")
    return [
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "Content-Description: Notification",
        "",
        body,
    ]


def _gave_up(status: RecipientStatus) -> str:
    """Why a temporary error became final: the message waited longer than queue.max_age."""
    if status.action == "failed" and status.status.startswith("4"):
        return " (still failing when the message became too old to keep trying)"
    return ""


def _delivery_status(
    original: MessageHeader,
    statuses: Sequence[RecipientStatus],
    *,
    hostname: str,
    now: float,
) -> str:
    """The machine-readable part: one per-message block, one block per recipient."""
    blocks = [
        [
            f"Reporting-MTA: dns; {hostname}",
            f"X-Muninet-Queue-ID: {original.id}",
            f"Arrival-Date: {email.utils.formatdate(original.received_at, localtime=True)}",
        ]
    ]
    for s in statuses:
        block = [
            f"Final-Recipient: {_address_type(s.address)}; {s.address}",
            f"Action: {s.action}",
            f"Status: {s.status}",
        ]
        if s.remote_mta:
            block.append(f"Remote-MTA: dns; {s.remote_mta}")
            block.append(f"Diagnostic-Code: smtp; {_one_line(s.diagnostic)}")
        else:
            block.append(f"Diagnostic-Code: X-Muninet; {_one_line(s.diagnostic)}")
        block.append(f"Last-Attempt-Date: {email.utils.formatdate(now, localtime=True)}")
        blocks.append(block)
    return "\r\n\r\n".join("\r\n".join(block) for block in blocks) + "\r\n"


def _address_type(address: str) -> str:
    return "rfc822" if address.isascii() else "utf-8"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:_MAX_DIAGNOSTIC]


def _original_headers(data: bytes) -> bytes:
    """The original header section, normalised to CRLF and ending with one."""
    end = data.find(b"\r\n\r\n")
    head = data[:end] if end >= 0 else data.split(b"\n\n", 1)[0]
    head = head[:_MAX_HEADER_BYTES].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return head + b"\r\n"
