"""Mail counters for the dashboard: one row per day and counter name.

The mail engine counts in memory and adds its counts here every few seconds
(`provisioning.services.stats.add_counts`), so a busy day is a handful of rows
and no message pays a database write of its own.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Date, String
from sqlalchemy.orm import Mapped, mapped_column

from provisioning.models.base import Base


class MailCounter(Base):
    __tablename__ = "mail_counters"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
