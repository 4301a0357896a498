"""Mail counters per day: the mail engine adds to them, the dashboard reads them.

Every SMTP process counts in memory and adds its counts here every few seconds in
one transaction (an UPSERT that adds, so processes never overwrite each other);
reads are a few rows per day. Days are the server's local dates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from provisioning.models import MailCounter

# What the mail engine counts (a message refused at MAIL, RCPT or DATA counts once
# per refusal; viruses and spam also count in `rejected` when they were refused).
ACCEPTED = "accepted"
REJECTED = "rejected"
DEFERRED = "deferred"  # temporary refusals (4xx): the sender retries
VIRUSES = "viruses"
SPAM = "spam"  # refused as spam, or tagged and delivered to Junk
NAMES = (ACCEPTED, REJECTED, DEFERRED, VIRUSES, SPAM)


def add_counts(session: Session, counts: Mapping[tuple[date, str], int]) -> None:
    """Add `counts` ((day, name) -> amount) to the stored ones, creating rows as needed."""
    rows = [
        {"day": day, "name": name, "value": value}
        for (day, name), value in sorted(counts.items())
        if value
    ]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    if dialect not in ("postgresql", "sqlite"):
        raise RuntimeError(f"mail counters need SQLite or PostgreSQL, not {dialect}")
    statement = insert(MailCounter)
    statement = statement.on_conflict_do_update(
        index_elements=[MailCounter.day, MailCounter.name],
        set_={"value": MailCounter.value + statement.excluded.value},
    )
    session.execute(statement, rows)


@dataclass(frozen=True)
class DayCounts:
    day: date
    counts: Mapping[str, int]

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


def daily(
    session: Session, days: int = 14, today: date | None = None, names: Iterable[str] = NAMES
) -> list[DayCounts]:
    """The counters of the last `days` days, oldest first; days with no mail count zero."""
    today = today or date.today()
    first = today - timedelta(days=days - 1)
    wanted = list(names)
    found: dict[date, dict[str, int]] = {first + timedelta(days=n): {} for n in range(days)}
    query = select(MailCounter.day, MailCounter.name, MailCounter.value).where(
        MailCounter.day >= first, MailCounter.day <= today, MailCounter.name.in_(wanted)
    )
    for day, name, value in session.execute(query):
        found[day][name] = int(value)
    return [DayCounts(day, {n: counts.get(n, 0) for n in wanted}) for day, counts in found.items()]


def today_counts(session: Session, today: date | None = None) -> DayCounts:
    """Today's counters (zero when no mail came yet)."""
    return daily(session, 1, today)[0]
