"""Domain names and mail addresses: parsing, validation and the lookup key.

Syntax of external addresses is checked by `email-validator` (RFC 5321/5322 and
RFC 6531 for SMTPUTF8, IDNA 2008 via `idna`). Addresses that muninet itself hosts
follow a stricter policy: letters, digits, `.`, `-` and `_` only. Characters such
as `%`, `!`, `/` and `+` are legal in RFC 5322 but serve relay tricks, pipes or
sub-addressing, so a hosted mailbox or alias never carries them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import email_validator
import idna

from provisioning.errors import ValidationError

MAX_DOMAIN = 253
MAX_LOCAL_OCTETS = 64
MAX_ADDRESS_OCTETS = 254
_ASCII_LOCAL = re.compile(r"^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$")
_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class DomainName:
    """A domain in its Unicode form (`name`) and its ASCII/punycode form (`ascii`)."""

    name: str
    ascii: str


@dataclass(frozen=True)
class LocalAddress:
    """A hosted address: its local part (lower case, "" for a catch-all) and domain."""

    local_part: str
    domain: DomainName

    @property
    def key(self) -> str:
        return address_key(self.local_part, self.domain.ascii)

    @property
    def display(self) -> str:
        return f"{self.local_part}@{self.domain.name}"


def address_key(local_part: str, ascii_domain: str) -> str:
    """The case-insensitive lookup key stored in mailboxes.address and aliases.address."""
    return f"{unicodedata.normalize('NFC', local_part).lower()}@{ascii_domain.lower()}"


def parse_domain(text: str) -> DomainName:
    """Validate a domain name (IDN allowed) and return both of its forms."""
    raw = unicodedata.normalize("NFC", text.strip()).rstrip(".")
    if not raw:
        raise ValidationError("domain name is empty")
    try:
        ascii_name = idna.encode(raw, uts46=True).decode("ascii").lower()
        unicode_name = idna.decode(ascii_name)
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValidationError(
            "invalid domain name %(text)r: %(reason)s", text=text, reason=str(exc)
        ) from exc
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise ValidationError(
            "invalid domain name %(text)r: it needs at least two labels", text=text
        )
    if len(ascii_name) > MAX_DOMAIN:
        raise ValidationError(
            "invalid domain name %(text)r: longer than %(max)s characters",
            text=text,
            max=MAX_DOMAIN,
        )
    if not all(_LDH_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValidationError(
            "invalid domain name %(text)r: use letters, digits and hyphens between dots", text=text
        )
    return DomainName(name=unicode_name, ascii=ascii_name)


def split_address(text: str) -> tuple[str, str]:
    """Split at the one `@`; refuse anything with none, several, or quoting."""
    text = text.strip()
    if text.count("@") != 1:
        raise ValidationError("invalid address %(text)r: it needs exactly one @", text=text)
    local, domain = text.split("@")
    return local, domain


def check_local_part(local_part: str, *, utf8_allowed: bool, address: str) -> str:
    """Apply the hosted-address policy to a local part; returns it lower-cased and NFC."""
    local = unicodedata.normalize("NFC", local_part).lower()
    if not local:
        raise ValidationError(
            "invalid address %(address)r: the part before @ is empty", address=address
        )
    if len(local.encode()) > MAX_LOCAL_OCTETS:
        raise ValidationError(
            "invalid address %(address)r: the part before @ is longer than %(max)s bytes",
            address=address,
            max=MAX_LOCAL_OCTETS,
        )
    if local.isascii():
        if not _ASCII_LOCAL.match(local):
            raise ValidationError(
                "invalid address %(address)r: use letters, digits, '.', '-' and '_' (no "
                "leading, trailing or double dots)",
                address=address,
            )
        return local
    if not utf8_allowed:
        raise ValidationError(
            "invalid address %(address)r: this domain does not allow non-ASCII "
            "(SMTPUTF8) addresses",
            address=address,
        )
    for part in local.split("."):
        if not part or not all(_is_word_char(ch) for ch in part):
            raise ValidationError(
                "invalid address %(address)r: use letters, digits, '.', '-' and '_' (no "
                "leading, trailing or double dots)",
                address=address,
            )
    return local


def _is_word_char(ch: str) -> bool:
    return ch in "-_" or unicodedata.category(ch)[0] in "LM" or unicodedata.category(ch) == "Nd"


def parse_destination(text: str) -> str:
    """Validate any deliverable address (external or local) and return it normalized."""
    try:
        result = email_validator.validate_email(
            text.strip(),
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
        )
    except email_validator.EmailNotValidError as exc:
        raise ValidationError(
            "invalid address %(text)r: %(reason)s", text=text.strip(), reason=str(exc)
        ) from exc
    if len(result.normalized.encode()) > MAX_ADDRESS_OCTETS:
        raise ValidationError(
            "invalid address %(text)r: longer than %(max)s bytes", text=text, max=MAX_ADDRESS_OCTETS
        )
    return f"{result.local_part}@{result.domain}"
