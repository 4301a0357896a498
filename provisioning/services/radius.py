"""Online sessions, usage reports, stale-session closing and cap enforcement, from `radacct`.

FreeRADIUS writes one `radacct` row per session (Start, Interim-Update, Stop);
times are epoch seconds and octets include the gigawords. A month's usage is the
sum over the sessions that started in that month, in the server's local time: the
same rule the FreeRADIUS monthly counters (sqlcounter, `reset = monthly`) apply
at login, so the report and the cap always agree.

Those monthly sums are kept in `radacct_monthly` by triggers on `radacct`
(migration 0008), in the same transaction as each accounting write, keyed by
the months of `usage_months`. `usage` and `over_cap_sessions` read them instead
of every session of the month whenever the month's stored bounds are the ones
`month_bounds` computes here (else, e.g. after a time zone change, they sum
`radacct` as before, and `rebuild_usage_rollup` brings the rollup back).
"""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Select, case, delete, func, insert, or_, select, text, update
from sqlalchemy.orm import Session, aliased

from provisioning.errors import ValidationError
from provisioning.models import (
    CapAction,
    Member,
    Nas,
    RadAcct,
    ServicePlan,
    Subscriber,
)
from provisioning.models.radius import RadAcctMonthly, UsageMonth
from provisioning.services import members, plans
from provisioning.services import nas as nas_service
from provisioning.services.context import ServiceContext

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def parse_month(text: str | None, today: date | None = None) -> tuple[int, int]:
    """(year, month) from "YYYY-MM"; None means the current month."""
    if text is None:
        today = today or date.today()
        return today.year, today.month
    match = _MONTH.match(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ValidationError("not a month: %(text)r (use YYYY-MM)", text=text)
    return int(match.group(1)), int(match.group(2))


def month_bounds(year: int, month: int) -> tuple[int, int]:
    """Epoch seconds of the first instant of the month and of the next, in local time."""
    start = datetime(year, month, 1).astimezone()
    following = datetime(year + month // 12, month % 12 + 1, 1).astimezone()
    return int(start.timestamp()), int(following.timestamp())


@dataclass(frozen=True)
class OnlineSession:
    username: str
    member: str | None
    nas_address: str
    session_id: str
    unique_id: str
    started: int
    last_update: int
    session_time: int
    input_octets: int
    output_octets: int
    framed_ip: str
    calling_station_id: str

    def as_dict(self) -> dict[str, object]:
        return {
            "username": self.username,
            "member": self.member,
            "nas": self.nas_address,
            "session_id": self.session_id,
            "started": datetime.fromtimestamp(self.started).astimezone().isoformat(),
            "last_update": datetime.fromtimestamp(self.last_update).astimezone().isoformat(),
            "session_time": self.session_time,
            "input_octets": self.input_octets,
            "output_octets": self.output_octets,
            "framed_ip": self.framed_ip,
            "calling_station_id": self.calling_station_id,
        }


def online_sessions(
    session: Session, member_slug: str | None = None, username: str | None = None
) -> list[OnlineSession]:
    """Sessions without a stop time, newest first."""
    query = (
        select(RadAcct, Member.slug)
        .outerjoin(Subscriber, Subscriber.username == RadAcct.username)
        .outerjoin(Member, Member.id == Subscriber.member_id)
        .where(RadAcct.acctstoptime.is_(None))
    )
    if member_slug is not None:
        query = query.where(Subscriber.member_id == members.get(session, member_slug).id)
    if username is not None:
        query = query.where(RadAcct.username == username.strip().lower())
    rows = session.execute(query.order_by(RadAcct.acctstarttime.desc())).all()
    return [
        OnlineSession(
            username=row.username,
            member=slug,
            nas_address=row.nasipaddress,
            session_id=row.acctsessionid,
            unique_id=row.acctuniqueid,
            started=row.acctstarttime,
            last_update=row.acctupdatetime,
            session_time=row.acctsessiontime,
            input_octets=row.acctinputoctets,
            output_octets=row.acctoutputoctets,
            framed_ip=row.framedipaddress,
            calling_station_id=row.callingstationid,
        )
        for row, slug in rows
    ]


class UsageRow(NamedTuple):
    """One line of a usage report: a subscriber's month (or a member's, or a day's) sums.

    A named tuple, not a dataclass: a month's report builds ~40,000 of them, and a
    tuple is made straight from the database row (`UsageRow._make`) at a fraction
    of a dataclass's construction cost.
    """

    username: str
    member: str | None
    sessions: int
    session_time: int
    input_octets: int
    output_octets: int

    @property
    def total_octets(self) -> int:
        return self.input_octets + self.output_octets

    def as_dict(self) -> dict[str, object]:
        return {
            "username": self.username,
            "member": self.member,
            "sessions": self.sessions,
            "session_time": self.session_time,
            "input_octets": self.input_octets,
            "output_octets": self.output_octets,
            "total_octets": self.total_octets,
        }


@dataclass
class UsageReport:
    year: int
    month: int
    rows: list[UsageRow]  # by subscriber, largest total first (top users)
    members: dict[str, UsageRow] = field(default_factory=dict)  # summed per member

    def as_dict(self) -> dict[str, object]:
        return {
            "month": f"{self.year:04d}-{self.month:02d}",
            "subscribers": [row.as_dict() for row in self.rows],
            "members": {slug: row.as_dict() for slug, row in sorted(self.members.items())},
        }


def _sum_rows(label: str, member: str | None, rows: Iterable[UsageRow]) -> UsageRow:
    rows = list(rows)
    return UsageRow(
        username=label,
        member=member,
        sessions=sum(r.sessions for r in rows),
        session_time=sum(r.session_time for r in rows),
        input_octets=sum(r.input_octets for r in rows),
        output_octets=sum(r.output_octets for r in rows),
    )


def rollup_covers(session: Session, start: int, end: int) -> bool:
    """Whether `radacct_monthly` holds the month [start, end) (same bounds as computed here)."""
    stored = session.scalar(select(UsageMonth.month_end).where(UsageMonth.month_start == start))
    return stored == end


_CHUNK = 2000  # report rows fetched at a time


def _usage_from_rollup(start: int) -> Select[str, str, int, int, int, int]:
    """(username, member slug, sessions, seconds, octets in, octets out), top users first.

    One range of the rollup's key (month_start, username); each user name joins
    its member through `ix_subscribers_username_member_id` alone (migration 0009).
    """
    rolled = RadAcctMonthly
    return (
        select(
            rolled.username,
            Member.slug,
            rolled.sessions,
            rolled.session_time,
            rolled.input_octets,
            rolled.output_octets,
        )
        .outerjoin(Subscriber, Subscriber.username == rolled.username)
        .outerjoin(Member, Member.id == Subscriber.member_id)
        .where(rolled.month_start == start, rolled.sessions > 0)
        .order_by((rolled.input_octets + rolled.output_octets).desc(), rolled.username)
    )


def _usage_from_radacct(start: int, end: int) -> Select[str, str, int, int, int, int]:
    """The same sums over every session of the month (no rollup for it)."""
    total = func.sum(RadAcct.acctinputoctets + RadAcct.acctoutputoctets)
    return (
        select(
            RadAcct.username,
            Member.slug,
            func.count(RadAcct.radacctid),
            func.coalesce(func.sum(RadAcct.acctsessiontime), 0),
            func.coalesce(func.sum(RadAcct.acctinputoctets), 0),
            func.coalesce(func.sum(RadAcct.acctoutputoctets), 0),
        )
        .outerjoin(Subscriber, Subscriber.username == RadAcct.username)
        .outerjoin(Member, Member.id == Subscriber.member_id)
        .where(RadAcct.acctstarttime >= start, RadAcct.acctstarttime < end)
        .group_by(RadAcct.username, Member.slug)
        .order_by(total.desc(), RadAcct.username)
    )


def usage(
    session: Session,
    year: int,
    month: int,
    member_slug: str | None = None,
    *,
    rollup: bool = True,
) -> UsageReport:
    """One month's usage per subscriber (top users first) and per member.

    From the monthly rollup when it covers the month; `rollup=False` sums
    `radacct` itself (the same result, slower: for checks and comparisons).
    """
    start, end = month_bounds(year, month)
    from_rollup = rollup and rollup_covers(session, start, end)
    query = _usage_from_rollup(start) if from_rollup else _usage_from_radacct(start, end)
    if member_slug is not None:
        query = query.where(Subscriber.member_id == members.get(session, member_slug).id)
    # Core rows (~40,000 a month), in chunks: the ORM's result handling and a
    # per-row fetch would cost more than the query itself, and each chunk's
    # SQLAlchemy rows are freed once converted.
    rows: list[UsageRow] = []
    with _gc_paused():
        result = session.connection().execute(query.execution_options(yield_per=_CHUNK))
        for chunk in result.partitions():
            if from_rollup:  # BIGINT columns: ints on both backends
                rows.extend(map(UsageRow._make, chunk))
            else:  # PostgreSQL's SUM of BIGINT is NUMERIC
                rows.extend(
                    UsageRow(
                        username, slug, int(count), int(seconds), int(octets_in), int(octets_out)
                    )
                    for username, slug, count, seconds, octets_in, octets_out in chunk
                )
        per_member = _member_sums(rows)
    return UsageReport(year=year, month=month, rows=rows, members=per_member)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a report's rows are built.

    ~40,000 new tuples (and SQLAlchemy's rows) that live through the build made
    the collector scan them again and again and run ~1 full collection per
    report: measured over 5 million radacct rows, ~60 of ~170 ms (CPU). They
    hold only strings and numbers, so they form no cycle for it to find; the
    reference counts still free everything at once. Restores the previous state.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _member_sums(rows: list[UsageRow]) -> dict[str, UsageRow]:
    """The rows summed per member, in one pass (subscribers no longer listed have none)."""
    sums: dict[str, list[int]] = {}
    for _, slug, count, seconds, octets_in, octets_out in rows:
        if not slug:
            continue
        found = sums.get(slug)
        if found is None:
            sums[slug] = [count, seconds, octets_in, octets_out]
        else:
            found[0] += count
            found[1] += seconds
            found[2] += octets_in
            found[3] += octets_out
    return {slug: UsageRow(slug, slug, *found) for slug, found in sums.items()}


def daily_usage(session: Session, username: str, year: int, month: int) -> dict[int, UsageRow]:
    """One subscriber's usage per day of a month (by session start, local time)."""
    start, end = month_bounds(year, month)
    rows = session.scalars(
        select(RadAcct).where(
            RadAcct.username == username.strip().lower(),
            RadAcct.acctstarttime >= start,
            RadAcct.acctstarttime < end,
        )
    ).all()
    days: dict[int, list[UsageRow]] = {}
    for row in rows:
        day = datetime.fromtimestamp(row.acctstarttime).day
        days.setdefault(day, []).append(
            UsageRow(
                row.username,
                None,
                1,
                row.acctsessiontime,
                row.acctinputoctets,
                row.acctoutputoctets,
            )
        )
    return {day: _sum_rows(username, None, entries) for day, entries in sorted(days.items())}


def rebuild_usage_rollup(ctx: ServiceContext, first_year: int = 2000, last_year: int = 2099) -> int:
    """Refill `usage_months` in this process's time zone and recompute `radacct_monthly`.

    Needed only after a time zone change (the triggers keep the rollup otherwise).
    Holds off accounting writes while it runs (SQLite: the write lock; PostgreSQL:
    a SHARE lock on radacct), so that none is counted twice or missed. Returns
    the number of rollup rows.
    """
    session = ctx.session
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE radacct IN SHARE MODE"))
    session.execute(delete(RadAcctMonthly))
    session.execute(delete(UsageMonth))
    session.execute(
        insert(UsageMonth),
        [
            {"month_start": start, "month_end": end, "month": f"{year:04d}-{month:02d}"}
            for year in range(first_year, last_year + 1)
            for month in range(1, 13)
            for start, end in [month_bounds(year, month)]
        ],
    )
    month = aliased(UsageMonth)
    sums = (
        select(
            RadAcct.username,
            month.month_start,
            func.count(),
            func.sum(RadAcct.acctsessiontime),
            func.sum(RadAcct.acctinputoctets),
            func.sum(RadAcct.acctoutputoctets),
        )
        .join(
            RadAcct,
            (RadAcct.acctstarttime >= month.month_start)
            & (RadAcct.acctstarttime < month.month_end),
        )
        .group_by(RadAcct.username, month.month_start)
    )
    session.execute(
        insert(RadAcctMonthly).from_select(
            [
                "username",
                "month_start",
                "sessions",
                "session_time",
                "input_octets",
                "output_octets",
            ],
            sums,
        )
    )
    rows = int(session.scalar(select(func.count()).select_from(RadAcctMonthly)) or 0)
    ctx.audit("radius.rollup", "radacct_monthly", rows=rows, first=first_year, last=last_year)
    return rows


def close_stale_sessions(
    ctx: ServiceContext, *, now: float | None = None, interval: int = plans.INTERIM_INTERVAL
) -> int:
    """Close open sessions with no accounting for twice the interim interval.

    A NAS that rebooted or lost its link never sends the Stop; without this the
    session would count against Simultaneous-Use forever. The stop time is the
    last update; an interim update arriving later reopens the session.
    """
    cutoff = int(now if now is not None else time.time()) - 2 * interval
    result = ctx.session.execute(
        update(RadAcct)
        .where(RadAcct.acctstoptime.is_(None), RadAcct.acctupdatetime < cutoff)
        .values(
            acctstoptime=RadAcct.acctupdatetime,
            acctterminatecause="Stale-Session",
        )
        .execution_options(synchronize_session=False)
    )
    closed = int(getattr(result, "rowcount", 0) or 0)
    if closed:
        ctx.audit("radius.stale", "radacct", closed=closed, cutoff=cutoff)
    return closed


@dataclass(frozen=True)
class OverCap:
    """An open session whose subscriber has used up a monthly cap."""

    session: OnlineSession
    nas: Nas | None
    action: CapAction  # REJECT: disconnect; THROTTLE: CoA with the fair-use rate
    reason: str


def over_cap_sessions(session: Session, *, now: float | None = None) -> list[OverCap]:
    """Open sessions past their plan's monthly cap (sqlcounter checks only at login)."""
    moment = datetime.fromtimestamp(now if now is not None else time.time())
    start, end = month_bounds(moment.year, moment.month)
    used: Select[str, int, int]
    if rollup_covers(session, start, end):
        used = select(
            RadAcctMonthly.username.label("username"),
            (RadAcctMonthly.input_octets + RadAcctMonthly.output_octets).label("octets"),
            RadAcctMonthly.session_time.label("seconds"),
        ).where(RadAcctMonthly.month_start == start, RadAcctMonthly.sessions > 0)
    else:
        used = (
            select(
                RadAcct.username.label("username"),
                func.sum(RadAcct.acctinputoctets + RadAcct.acctoutputoctets).label("octets"),
                func.sum(RadAcct.acctsessiontime).label("seconds"),
            )
            .where(RadAcct.acctstarttime >= start, RadAcct.acctstarttime < end)
            .group_by(RadAcct.username)
        )
    per_user = used.subquery()
    rows = session.execute(
        select(Subscriber.username, ServicePlan, per_user.c.octets, per_user.c.seconds)
        .join(ServicePlan, ServicePlan.id == Subscriber.plan_id)
        .join(per_user, per_user.c.username == Subscriber.username)
        .where(
            or_(
                ServicePlan.data_cap_bytes.is_not(None),
                ServicePlan.time_cap_seconds.is_not(None),
            )
        )
    ).all()
    result: list[OverCap] = []
    online = {s.unique_id: s for s in online_sessions(session)}
    by_user: dict[str, list[OnlineSession]] = {}
    for item in online.values():
        by_user.setdefault(item.username, []).append(item)
    for username, plan, octets, seconds in rows:
        if username not in by_user:
            continue
        over_time = plan.time_cap_seconds is not None and int(seconds or 0) >= plan.time_cap_seconds
        over_data = plan.data_cap_bytes is not None and int(octets or 0) >= plan.data_cap_bytes
        if not (over_time or over_data):
            continue
        throttle = not over_time and plan.cap_action is CapAction.THROTTLE and over_data
        for item in by_user[username]:
            result.append(
                OverCap(
                    session=item,
                    nas=nas_service.for_address(session, item.nas_address),
                    action=CapAction.THROTTLE if throttle else CapAction.REJECT,
                    reason="time cap" if over_time else "data cap",
                )
            )
    return result


@dataclass(frozen=True)
class DayTraffic:
    day: date
    input_octets: int
    output_octets: int

    @property
    def total_octets(self) -> int:
        return self.input_octets + self.output_octets


def daily_traffic(
    session: Session, days: int = 14, member_slug: str | None = None, today: date | None = None
) -> list[DayTraffic]:
    """Subscriber traffic per day of the last `days` days, oldest first (dashboard chart).

    A session counts on the local day it started, as in the monthly reports. One
    query: the day is a CASE over the days' boundaries, so the index on the start
    time is used and no row is read into Python.
    """
    today = today or date.today()
    starts = [
        int(
            datetime.combine(today - timedelta(days=days - 1 - n), datetime.min.time())
            .astimezone()
            .timestamp()
        )
        for n in range(days + 1)
    ]
    bucket = case(*((RadAcct.acctstarttime < starts[n + 1], n) for n in range(days)), else_=days)
    query = (
        select(
            bucket,
            func.coalesce(func.sum(RadAcct.acctinputoctets), 0),
            func.coalesce(func.sum(RadAcct.acctoutputoctets), 0),
        )
        .where(RadAcct.acctstarttime >= starts[0], RadAcct.acctstarttime < starts[-1])
        .group_by(bucket)
    )
    if member_slug is not None:
        member_id = members.get(session, member_slug).id
        query = query.join(Subscriber, Subscriber.username == RadAcct.username).where(
            Subscriber.member_id == member_id
        )
    found = {int(n): (int(i), int(o)) for n, i, o in session.execute(query)}
    return [
        DayTraffic(today - timedelta(days=days - 1 - n), *found.get(n, (0, 0))) for n in range(days)
    ]
