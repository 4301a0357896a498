"""Association members: municipalities, counties, schools, libraries, ... and their package."""

from __future__ import annotations

import enum
from datetime import date

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from provisioning.models.base import Base, Timestamps, str_enum


class MemberKind(enum.StrEnum):
    MUNICIPALITY = "municipality"
    COUNTY = "county"
    SCHOOL = "school"
    LIBRARY = "library"
    CULTURE = "culture"
    ASSOCIATION = "association"
    OTHER = "other"


class MemberStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    ENDED = "ended"


class Member(Timestamps, Base):
    """One member of the association, with the service package of its contract.

    The package limits (max_mailboxes, mail_quota_bytes, max_lines) are enforced by
    the services; 0 means "none allowed", not "unlimited".
    """

    __tablename__ = "members"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[MemberKind] = mapped_column(str_enum(MemberKind, "member_kind"))
    status: Mapped[MemberStatus] = mapped_column(
        str_enum(MemberStatus, "member_status"), default=MemberStatus.ACTIVE
    )
    status_reason: Mapped[str] = mapped_column(String(500), default="")
    contact_name: Mapped[str] = mapped_column(String(200), default="")
    contact_email: Mapped[str] = mapped_column(String(254), default="")
    contact_phone: Mapped[str] = mapped_column(String(40), default="")
    contract_number: Mapped[str] = mapped_column(String(100), default="")
    contract_start: Mapped[date | None]
    contract_end: Mapped[date | None]
    max_mailboxes: Mapped[int]
    mail_quota_bytes: Mapped[int] = mapped_column(BigInteger)
    max_lines: Mapped[int]

    @property
    def is_active(self) -> bool:
        return self.status is MemberStatus.ACTIVE
