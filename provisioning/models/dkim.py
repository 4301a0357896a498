"""DKIM keys: one row per key of a hosted domain (RFC 6376, RFC 8463).

A domain may hold an RSA (2048-bit) and an Ed25519 key side by side; outbound mail is
signed with every active key. A new key for an algorithm that already has an active
one starts as `pending`: it is published in DNS first and activated once the record
has propagated, and the key it replaces is then `retired` (its private key erased).

The private key (PKCS#8 PEM) is kept in this table, not in files: the database is
the one source of truth that every process (CLI, SMTP workers, a second host on
PostgreSQL) already reads, a key and the selector published for it change in one
transaction, and a database backup restores keys that match the DNS records.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from provisioning.models.base import Base, Timestamps, str_enum
from provisioning.models.mail import Domain


class DkimAlgorithm(enum.StrEnum):
    RSA = "rsa"
    ED25519 = "ed25519"


class DkimKeyStatus(enum.StrEnum):
    PENDING = "pending"  # published, not yet used for signing
    ACTIVE = "active"  # signs outbound mail
    RETIRED = "retired"  # replaced; the private key is erased


class DkimKey(Timestamps, Base):
    __tablename__ = "dkim_keys"
    __table_args__ = (UniqueConstraint("domain_id", "selector"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    selector: Mapped[str] = mapped_column(String(63))
    algorithm: Mapped[DkimAlgorithm] = mapped_column(str_enum(DkimAlgorithm, "dkim_algorithm"))
    status: Mapped[DkimKeyStatus] = mapped_column(str_enum(DkimKeyStatus, "dkim_key_status"))
    # PKCS#8 PEM; "" once the key is retired.
    private_key: Mapped[str] = mapped_column(Text)
    # The p= value of the DNS record: base64 of the SubjectPublicKeyInfo (RSA) or of
    # the raw 32-byte public key (Ed25519, RFC 8463).
    public_key: Mapped[str] = mapped_column(Text)
    activated_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]

    domain: Mapped[Domain] = relationship()
