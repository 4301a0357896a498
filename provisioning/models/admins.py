"""People and programs that administer muninet: admin users and their API tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from provisioning.models.base import Base, Timestamps
from provisioning.models.members import Member


class AdminUser(Timestamps, Base):
    """A superadmin (member_id NULL) or a member's delegated admin (scoped to one member).

    The optional second factor: `totp_secret` (base32, RFC 6238) is set at enrolment and
    asked for at login only once `totp_enabled` (the admin confirmed a code from the
    app); `totp_last_step` is the time step of the last accepted code, so a code
    cannot be used twice.
    """

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(400))
    member_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="RESTRICT"), index=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_login_at: Mapped[datetime | None]
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    totp_last_step: Mapped[int | None] = mapped_column(Integer)

    member: Mapped[Member | None] = relationship()

    @property
    def is_superadmin(self) -> bool:
        return self.member_id is None


class ApiToken(Base):
    """A bearer token for the JSON API. Only a SHA-256 of the secret is stored.

    The token reads `mnt_<prefix>_<secret>`; `prefix` finds the row, the hash proves it.
    A fast hash is enough: the secret has 256 bits of entropy, unlike a password.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    admin_id: Mapped[int] = mapped_column(
        ForeignKey("admin_users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    admin: Mapped[AdminUser] = relationship()
