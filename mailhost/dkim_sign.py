"""DKIM signing of outbound mail (RFC 6376, Ed25519 per RFC 8463), with dkimpy.

    keys = dkim_service.signing_keys(session, sender_domain)   # provisioning.services.dkim
    data = sign(data, sender_domain, keys)

Each active key of the domain adds one `DKIM-Signature` header on top: RSA and
Ed25519 both when both exist (receivers that do not know Ed25519 ignore that one,
RFC 8463 3). Canonicalization is relaxed/relaxed, which survives the header
refolding and whitespace changes that relays commonly make.

Signed headers: those of RFC 6376 5.4.1 that the message has, each as many times
as it occurs, plus one more occurrence of the ones an attacker must not be able to
add (From, Subject, Date, To, Cc, Reply-To, Sender, Message-ID, Content-Type, MIME-Version):
listing a header once more than it appears "oversigns" it, so a copy prepended
later breaks the signature instead of being shown to the reader.

Signing is CPU work (RSA 2048 in pure Python takes a few milliseconds): call it in a
worker thread from async code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import dkim  # type: ignore[import-untyped]

from provisioning.services.dkim import SigningKey

log = logging.getLogger(__name__)

# RFC 6376 5.4.1: the header fields that SHOULD be signed, when present.
SIGNED_HEADERS = (
    "from",
    "reply-to",
    "subject",
    "date",
    "to",
    "cc",
    "resent-date",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "in-reply-to",
    "references",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
    "message-id",
    "sender",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
)
# Signed once more than they occur, so none can be added after signing (From always).
OVERSIGNED = frozenset(
    {
        "from",
        "subject",
        "date",
        "to",
        "cc",
        "reply-to",
        "sender",
        "message-id",
        "mime-version",
        "content-type",
    }
)


def _header_names(message: bytes) -> list[str]:
    """The lower-case names of the header fields, in order (continuations skipped)."""
    names: list[str] = []
    for line in message.split(b"\n"):
        if line in (b"", b"\r"):
            break
        if line[:1] in (b" ", b"\t") or b":" not in line:
            continue
        names.append(line.split(b":", 1)[0].strip().decode("ascii", "replace").lower())
    return names


def headers_to_sign(message: bytes) -> list[bytes]:
    """The h= list: each recommended header as often as present, the oversigned once more."""
    present = _header_names(message)
    include: list[str] = [name for name in present if name in SIGNED_HEADERS]
    include += [name for name in SIGNED_HEADERS if name in OVERSIGNED]
    return [name.encode("ascii") for name in include]


def _line_ending(message: bytes) -> bytes:
    """The message's own line ending, for the folded signature header."""
    end = message.find(b"\n")
    return b"\n" if end == 0 or (end > 0 and message[end - 1 : end] != b"\r") else b"\r\n"


def sign(message: bytes, sender_domain: str, keys: Sequence[SigningKey]) -> bytes:
    """The message with one DKIM-Signature per key prepended (unchanged when no keys).

    `sender_domain` is the From domain (either form); only keys of that domain are
    used. The signatures are independent of each other: each covers the message
    without the other's header, so their order does not matter.
    """
    from provisioning.dnscheck import ascii_name

    domain = ascii_name(sender_domain)
    include = headers_to_sign(message)
    signatures: list[bytes] = []
    for key in keys:
        if key.domain != domain:
            log.warning("DKIM key %s is for %s, not %s: skipped", key.selector, key.domain, domain)
            continue
        header = dkim.sign(
            message,
            key.selector.encode("ascii"),
            domain.encode("ascii"),
            key.dkimpy_key,
            signature_algorithm=key.signature_algorithm,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
            linesep=_line_ending(message),
        )
        signatures.append(header)
    return b"".join(reversed(signatures)) + message
