"""Reading the audit log back: filtered, newest first, one page at a time.

Filters match as an admin types them: the actor and the target by substring, the
action by prefix (`mailbox.` finds every mailbox change), the dates as whole UTC
days, both ends included. Wildcards typed by the user (`%`, `_`) match themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from provisioning.errors import ValidationError
from provisioning.models import AuditEvent

MAX_PER_PAGE = 200


@dataclass(frozen=True)
class AuditFilter:
    actor: str = ""
    action: str = ""
    target: str = ""
    since: date | None = None  # first day included
    until: date | None = None  # last day included


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditEvent]
    total: int  # events matching the filter, on every page
    page: int  # 1-based
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _conditions(wanted: AuditFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if wanted.actor.strip():
        conditions.append(AuditEvent.actor_name.contains(wanted.actor.strip(), autoescape=True))
    if wanted.action.strip():
        conditions.append(AuditEvent.action.startswith(wanted.action.strip(), autoescape=True))
    if wanted.target.strip():
        conditions.append(AuditEvent.target.contains(wanted.target.strip(), autoescape=True))
    if wanted.since and wanted.until and wanted.since > wanted.until:
        raise ValidationError("the first day is after the last day")
    if wanted.since:
        conditions.append(AuditEvent.at >= datetime.combine(wanted.since, time(), UTC))
    if wanted.until:
        end = datetime.combine(wanted.until + timedelta(days=1), time(), UTC)
        conditions.append(AuditEvent.at < end)
    return conditions


def search(session: Session, wanted: AuditFilter, page: int = 1, per_page: int = 50) -> AuditPage:
    """One page of the events matching `wanted`, newest first."""
    if page < 1:
        raise ValidationError("page numbers start at 1")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValidationError("1 to %(max)s events per page", max=MAX_PER_PAGE)
    conditions = _conditions(wanted)
    total = session.scalar(select(func.count()).select_from(AuditEvent).where(*conditions)) or 0
    events = session.scalars(
        select(AuditEvent)
        .where(*conditions)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .offset((page - 1) * per_page)
        .limit(per_page)
    )
    return AuditPage(list(events), total, page, per_page)


def actions(session: Session) -> list[str]:
    """Every action recorded so far (for the filter's suggestions)."""
    return list(session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)))
