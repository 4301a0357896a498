"""The audit log: who changed what, when and from where."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from provisioning.models.base import Base, utcnow


class AuditEvent(Base):
    """One change, written in the same transaction as the change itself."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_kind: Mapped[str] = mapped_column(String(20))  # cli, admin, token, system
    actor_name: Mapped[str] = mapped_column(String(100))
    source_address: Mapped[str] = mapped_column(String(100), default="")
    action: Mapped[str] = mapped_column(String(60), index=True)
    target: Mapped[str] = mapped_column(String(400), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
