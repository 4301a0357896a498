"""Mail domains, mailboxes and aliases.

Lookup keys. Every mailbox and alias has an `address` column holding its lookup
key: the local part lower-cased (Unicode-aware, NFC) and the domain in its ASCII
(punycode) form, e.g. `glusk@info.association.pl`, `ивана@xn--80a1acny.xn--90ae`.
A catch-all alias has the key `@domain`. The key is unique in its table, and the
services keep it unique across both tables.

Dovecot (issue 4) and the SMTP servers look mailboxes up by that key in one
indexed query, e.g.
    SELECT m.password_hash, m.quota_bytes FROM mailboxes m
      JOIN members mb ON mb.id = m.member_id
     WHERE m.address = '%Lu' AND m.enabled AND mb.status = 'active'
"""

from __future__ import annotations

import enum
from datetime import date

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from provisioning.models.base import Base, Timestamps, str_enum
from provisioning.models.members import Member


class VirusAction(enum.StrEnum):
    """What happens to a virus for a domain; either way the sender gets `554`."""

    REJECT = "reject"  # refused, nothing kept
    QUARANTINE = "quarantine"  # refused, a copy kept for the admin


class Domain(Timestamps, Base):
    """A mail domain: the association's shared one, or a member's own.

    A shared domain (member_id is NULL) hands every member addresses named after
    its slug: `<slug>@...`, `<slug>.<name>@...` or `<slug>-<name>@...`.
    """

    __tablename__ = "domains"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    ascii_name: Mapped[str] = mapped_column(String(253), unique=True)
    member_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="RESTRICT"), index=True
    )
    utf8_local_parts: Mapped[bool] = mapped_column(Boolean, default=False)
    # Content filter settings of this domain; NULL: the global [spam] / [antivirus] value.
    spam_add_header_score: Mapped[float | None] = mapped_column(Float)
    spam_reject_score: Mapped[float | None] = mapped_column(Float)
    virus_action: Mapped[VirusAction | None] = mapped_column(
        str_enum(VirusAction, "domain_virus_action")
    )

    member: Mapped[Member | None] = relationship()

    @property
    def is_shared(self) -> bool:
        return self.member_id is None


class Mailbox(Timestamps, Base):
    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    # The key with the domain in Unicode, for logins typed that way (IDN domains
    # only; NULL when it equals `address`). Dovecot matches either column.
    unicode_address: Mapped[str | None] = mapped_column(String(320), unique=True)
    local_part: Mapped[str] = mapped_column(String(64))
    domain_id: Mapped[int] = mapped_column(
        ForeignKey("domains.id", ondelete="RESTRICT"), index=True
    )
    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="RESTRICT"), index=True
    )
    display_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(400))
    quota_bytes: Mapped[int] = mapped_column(BigInteger)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)

    domain: Mapped[Domain] = relationship()
    member: Mapped[Member] = relationship()

    @property
    def display_address(self) -> str:
        """The address as people read it: local part and Unicode domain."""
        return f"{self.local_part}@{self.domain.name}"


class MailRules(Timestamps, Base):
    """A mailbox's vacation reply and forwarding, and the Sieve script made from them.

    Dovecot's Sieve (Pigeonhole) reads the script from the database through the
    `sieve_scripts` view (a dict script location), so these columns are the one
    source of truth. `sieve_id` changes with every new script: Pigeonhole compares
    it with its compiled binary to know when to recompile.
    """

    __tablename__ = "mail_rules"

    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True
    )
    vacation_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    vacation_subject: Mapped[str] = mapped_column(String(200), default="")
    vacation_body: Mapped[str] = mapped_column(Text, default="")
    vacation_days: Mapped[int] = mapped_column(Integer, default=7)
    vacation_start: Mapped[date | None] = mapped_column(Date)
    vacation_end: Mapped[date | None] = mapped_column(Date)
    forward_to: Mapped[list[str]] = mapped_column(JSON, default=list)
    forward_keep_copy: Mapped[bool] = mapped_column(Boolean, default=True)
    sieve_id: Mapped[str] = mapped_column(String(40), default="")
    sieve_script: Mapped[str] = mapped_column(Text, default="")

    mailbox: Mapped[Mailbox] = relationship()


class Alias(Timestamps, Base):
    """A source address (or `@domain` catch-all) forwarded to one or more destinations."""

    __tablename__ = "aliases"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    local_part: Mapped[str] = mapped_column(String(64))  # "" for a catch-all
    domain_id: Mapped[int] = mapped_column(
        ForeignKey("domains.id", ondelete="RESTRICT"), index=True
    )
    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="RESTRICT"), index=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)

    domain: Mapped[Domain] = relationship()
    member: Mapped[Member] = relationship()
    destinations: Mapped[list[AliasDestination]] = relationship(
        order_by="AliasDestination.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    @property
    def is_catch_all(self) -> bool:
        return self.local_part == ""

    @property
    def display_address(self) -> str:
        return f"{self.local_part}@{self.domain.name}"


class AliasDestination(Base):
    __tablename__ = "alias_destinations"
    __table_args__ = (UniqueConstraint("alias_id", "address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    alias_id: Mapped[int] = mapped_column(ForeignKey("aliases.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    # Destination as written (Unicode domain), normalized by the address parser.
    address: Mapped[str] = mapped_column(String(320))
