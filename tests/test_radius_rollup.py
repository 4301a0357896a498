"""The monthly usage rollup (radacct_monthly, kept by triggers) gives exactly the radacct sums.

On SQLite and PostgreSQL: sessions are written and changed the way FreeRADIUS's
accounting queries do (Start insert, Interim/Stop updates, a repeated Start
moving the start time, Accounting-On closing a NAS's sessions), muninet closes
stale ones, and some are deleted; after each step the report read from the
rollup equals the one summed over radacct, for every month and member.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from contextlib import AbstractContextManager
from itertools import count

import pytest
from alembic import command
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from provisioning.db import Database
from provisioning.models import RadAcct
from provisioning.models.radius import RadAcctMonthly, UsageMonth
from provisioning.services import members, plans, radius, subscribers
from provisioning.services.context import ServiceContext

Unit = Callable[[], AbstractContextManager[ServiceContext]]
GIGA = 2**32
# March 2026: Europe's clocks change in the last week; both month edges tested.
YEAR, MONTH = 2026, 3
_ids = count(1)


@pytest.fixture
def isp(unit: Unit) -> None:
    with unit() as ctx:
        members.create(ctx, "glusk", "Gmina Głusk", max_lines=10)
        members.create(ctx, "trun", "Община Трън", max_lines=10)
        plans.create(ctx, "dsl", download_bps=2_000_000, upload_bps=512_000)
        for name, member in (("ala", "glusk"), ("bob", "glusk"), ("cyryl", "trun")):
            subscribers.create(ctx, name, member, "dsl", "dial-up password 1")


def start(ctx: ServiceContext, username: str, at: int, *, seconds: int = 0, octets: int = 0) -> str:
    """A session as FreeRADIUS's Start query stores it (open: no stop time)."""
    unique = f"u{next(_ids)}"
    ctx.session.add(
        RadAcct(
            acctsessionid=unique,
            acctuniqueid=unique,
            username=username,
            nasipaddress="10.0.0.1",
            acctstarttime=at,
            acctupdatetime=at,
            acctsessiontime=seconds,
            acctinputoctets=octets // 3,
            acctoutputoctets=octets - octets // 3,
        )
    )
    ctx.session.flush()
    return unique


def interim(ctx: ServiceContext, unique: str, at: int, seconds: int, octets_in: int) -> None:
    ctx.session.execute(
        update(RadAcct)
        .where(RadAcct.acctuniqueid == unique)
        .values(
            acctupdatetime=at,
            acctsessiontime=seconds,
            acctinputoctets=octets_in,
            acctoutputoctets=3 * GIGA + 7,
        )
    )


def stop(ctx: ServiceContext, unique: str, at: int, seconds: int) -> None:
    ctx.session.execute(
        update(RadAcct)
        .where(RadAcct.acctuniqueid == unique)
        .values(acctstoptime=at, acctupdatetime=at, acctsessiontime=seconds)
    )


def reports(ctx: ServiceContext) -> list[tuple[object, object]]:
    """(rollup, radacct) report pairs for the months around March and each member."""
    pairs = []
    for year, month in ((2026, 2), (2026, 3), (2026, 4)):
        for slug in (None, "glusk", "trun"):
            fast = radius.usage(ctx.session, year, month, slug).as_dict()
            slow = radius.usage(ctx.session, year, month, slug, rollup=False).as_dict()
            pairs.append((fast, slow))
    return pairs


def assert_same(ctx: ServiceContext) -> None:
    start_, end = radius.month_bounds(YEAR, MONTH)
    assert radius.rollup_covers(ctx.session, start_, end)
    for fast, slow in reports(ctx):
        assert fast == slow
    for month in (2, 3, 4):
        assert_members_sum_their_rows(radius.usage(ctx.session, YEAR, month))


def assert_members_sum_their_rows(report: radius.UsageReport) -> None:
    """Both report paths share the per-member sums: checked here against the rows."""
    slugs = {row.member for row in report.rows if row.member}
    assert set(report.members) == slugs
    for slug in slugs:
        mine = [row for row in report.rows if row.member == slug]
        assert report.members[slug] == radius.UsageRow(
            slug,
            slug,
            sum(row.sessions for row in mine),
            sum(row.session_time for row in mine),
            sum(row.input_octets for row in mine),
            sum(row.output_octets for row in mine),
        )


def test_rollup_equals_radacct_through_every_kind_of_write(unit: Unit, isp: None) -> None:
    first, following = radius.month_bounds(YEAR, MONTH)
    with unit() as ctx:
        # Sessions at both edges of March: the one a second before the month
        # counts in February even though it runs into March; the one starting
        # at the last second of March counts in March.
        before = start(ctx, "ala", first - 1, seconds=10, octets=1000)
        at_start = start(ctx, "ala", first, seconds=20, octets=GIGA + 5)
        at_end = start(ctx, "bob", following - 1, seconds=30, octets=77)
        after = start(ctx, "bob", following, seconds=40, octets=99)
        open_one = start(ctx, "cyryl", first + 86400)
        # Someone with no subscriber (removed since): listed without a member.
        start(ctx, "gone.user", first + 5 * 86400, seconds=5, octets=12345)
        assert_same(ctx)
    with unit() as ctx:
        # Interim updates (a counter past 4 GiB), a stop spanning the month's end.
        interim(ctx, open_one, first + 86400 + 300, 300, 5 * GIGA)
        interim(ctx, at_end, following + 300, 330, 1)
        stop(ctx, at_end, following + 600, 630)
        stop(ctx, before, first + 100, 110)
        assert_same(ctx)
        march = radius.usage(ctx.session, YEAR, MONTH).as_dict()
        rows = {r["username"]: r for r in march["subscribers"]}  # type: ignore[union-attr]
        assert rows["ala"]["sessions"] == 1
        assert rows["bob"]["sessions"] == 1
        assert rows["bob"]["session_time"] == 630
        assert rows["cyryl"]["input_octets"] == 5 * GIGA
        assert rows["gone.user"]["member"] is None
    with unit() as ctx:
        # Stale closing sets only the stop time: the sums stay.
        closed = radius.close_stale_sessions(ctx, now=following + 10**6)
        assert closed >= 1
        assert_same(ctx)
    with unit() as ctx:
        # A repeated Start moves the start time (FreeRADIUS's second start
        # query): here from March back into February, and one into April.
        ctx.session.execute(
            update(RadAcct).where(RadAcct.acctuniqueid == at_start).values(acctstarttime=first - 60)
        )
        ctx.session.execute(
            update(RadAcct)
            .where(RadAcct.acctuniqueid == open_one)
            .values(acctstarttime=following + 60)
        )
        assert_same(ctx)
        # Accounting-On from the NAS closes its sessions with their length.
        ctx.session.execute(
            update(RadAcct)
            .where(RadAcct.acctstoptime.is_(None), RadAcct.nasipaddress == "10.0.0.1")
            .values(acctstoptime=following + 10, acctsessiontime=following + 10 - first)
        )
        assert_same(ctx)
    with unit() as ctx:
        # Deleted sessions leave the sums (and an emptied row is not listed).
        ctx.session.execute(delete(RadAcct).where(RadAcct.acctuniqueid.in_([after, at_end])))
        assert_same(ctx)
        april = radius.usage(ctx.session, YEAR, 4).as_dict()
        listed = [r["username"] for r in april["subscribers"]]  # type: ignore[union-attr]
        assert "bob" not in listed
        # The rollup holds one row per user and month, not one per session.
        rows = ctx.session.scalars(select(RadAcctMonthly)).all()
        assert len(rows) <= 4 * 3


def test_report_reads_the_rollup_not_radacct(unit: Unit, isp: None) -> None:
    first, _ = radius.month_bounds(YEAR, MONTH)
    with unit() as ctx:
        start(ctx, "ala", first + 60, seconds=60, octets=600)
    with unit() as ctx:
        # Proof of where the numbers come from: a rollup row alone shows up.
        ctx.session.execute(
            update(RadAcctMonthly)
            .where(RadAcctMonthly.username == "ala")
            .values(session_time=RadAcctMonthly.session_time + 1)
        )
        report = radius.usage(ctx.session, YEAR, MONTH)
        assert report.rows[0].session_time == 61
        assert radius.usage(ctx.session, YEAR, MONTH, rollup=False).rows[0].session_time == 60
        # Rebuilding recomputes it from radacct.
        assert radius.rebuild_usage_rollup(ctx) == 1
        assert radius.usage(ctx.session, YEAR, MONTH).rows[0].session_time == 60


def test_month_outside_the_calendar_or_other_bounds_sums_radacct(unit: Unit, isp: None) -> None:
    first, following = radius.month_bounds(1999, 12)
    with unit() as ctx:
        start(ctx, "ala", first + 60, seconds=60, octets=600)
        assert not radius.rollup_covers(ctx.session, first, following)
        report = radius.usage(ctx.session, 1999, 12)
        assert [(r.username, r.session_time) for r in report.rows] == [("ala", 60)]
        # Bounds that differ from the stored ones (another time zone): not used.
        march, april = radius.month_bounds(YEAR, MONTH)
        ctx.session.execute(
            update(UsageMonth).where(UsageMonth.month_start == march).values(month_end=april + 3600)
        )
        assert not radius.rollup_covers(ctx.session, march, april)


def test_rebuild_gives_what_the_triggers_kept(unit: Unit, isp: None) -> None:
    first, _ = radius.month_bounds(YEAR, MONTH)
    with unit() as ctx:
        for n in range(40):
            unique = start(ctx, ("ala", "bob", "cyryl")[n % 3], first - 86400 * 3 + n * 7200)
            interim(ctx, unique, first + n * 7200, n * 10, n * 1000)
    with unit() as ctx:
        kept = sorted(
            (r.username, r.month_start, r.sessions, r.session_time, r.input_octets)
            for r in ctx.session.scalars(select(RadAcctMonthly)).all()
            if r.sessions
        )
        radius.rebuild_usage_rollup(ctx)
        rebuilt = sorted(
            (r.username, r.month_start, r.sessions, r.session_time, r.input_octets)
            for r in ctx.session.scalars(select(RadAcctMonthly)).all()
        )
        assert kept == rebuilt
        assert {r[1] for r in kept} == {radius.month_bounds(2026, 2)[0], first}
        assert_same(ctx)


def test_over_cap_uses_the_same_sums(unit: Unit, isp: None) -> None:
    import time

    with unit() as ctx:
        plans.create(ctx, "capped", download_bps=1_000_000, data_cap_bytes=10_000)
        subscribers.create(ctx, "dora", "glusk", "capped", "dial-up password 1")
        now = int(time.time())
        start(ctx, "dora", now - 60, seconds=60, octets=20_000)
    with unit() as ctx:
        over = radius.over_cap_sessions(ctx.session)
        assert [o.session.username for o in over] == ["dora"]
        assert over[0].reason == "data cap"


def test_report_leaves_the_garbage_collector_as_it_found_it(unit: Unit, isp: None) -> None:
    first, _ = radius.month_bounds(YEAR, MONTH)
    with unit() as ctx:
        start(ctx, "ala", first + 60, seconds=60, octets=600)
    with unit() as ctx:
        assert gc.isenabled()
        assert radius.usage(ctx.session, YEAR, MONTH).rows
        assert gc.isenabled()
        gc.disable()
        try:
            radius.usage(ctx.session, YEAR, MONTH)
            assert not gc.isenabled()
        finally:
            gc.enable()


ROLLUP_SQL = """SELECT username, month_start, sessions, session_time, input_octets, output_octets
FROM radacct_monthly ORDER BY username, month_start"""


def test_migration_0009_keeps_the_rollup_and_its_triggers(empty_database_url: str) -> None:
    """0009 re-keys radacct_monthly (SQLite: copies it): rows and triggers survive, both ways."""
    database = Database(empty_database_url)
    database.upgrade("0008")
    first, following = radius.month_bounds(YEAR, MONTH)

    def add_session(at: int, octets: int) -> None:
        unique = f"m{next(_ids)}"
        with Session(database.engine) as session, session.begin():
            session.add(
                RadAcct(
                    acctsessionid=unique,
                    acctuniqueid=unique,
                    username=("ala", "bob")[octets % 2],
                    nasipaddress="10.0.0.1",
                    nasportid="",
                    nasporttype="",
                    acctstarttime=at,
                    acctupdatetime=at,
                    acctsessiontime=60,
                    acctinputoctets=octets,
                    acctoutputoctets=2 * octets,
                    acctterminatecause="",
                    calledstationid="",
                    callingstationid="",
                    framedipaddress="",
                    framedprotocol="",
                    servicetype="",
                )
            )

    def rollup() -> list[tuple[object, ...]]:
        with database.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(ROLLUP_SQL))]

    for n in range(6):
        add_session(first - 3600 + n * 1800, 1000 + n)
    before = rollup()
    assert len(before) == 4  # ala and bob, in February and March
    assert database.upgrade() == ("0008", database.head_revision())
    assert rollup() == before
    add_session(following - 1, 7)  # the triggers still keep the rollup
    after = rollup()
    assert len(after) == 4
    assert sum(int(str(row[2])) for row in after) == 7
    with Session(database.engine) as session:
        fast = radius.usage(session, YEAR, MONTH).as_dict()
        assert fast == radius.usage(session, YEAR, MONTH, rollup=False).as_dict()
    with database.engine.begin() as connection:
        command.downgrade(database._alembic_config(connection), "0008")
    assert rollup() == after
    add_session(first, 9)
    assert sum(int(str(row[2])) for row in rollup()) == 8
    database.dispose()
