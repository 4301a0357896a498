"""The radius_check table follows every change to subscribers, members and pools (migration 0010).

Triggers rewrite a subscriber's rows in the same transaction as the change, so
after each step the table must equal its definition, the view
radius_check_source, row for row, and the queries FreeRADIUS runs
(tests/radius_queries.py) must answer with the new values at once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import pytest
from radius_queries import check_items, plan_items, reply_items
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from provisioning.db import Database
from provisioning.models import MemberStatus, Subscriber
from provisioning.services import members, nas, plans, subscribers
from provisioning.services.context import ServiceContext

Unit = Callable[[], AbstractContextManager[ServiceContext]]
PW = "dial-up password 1"
COLUMNS = "id, subscriber_id, username, attribute, op, value, expires_on"


def table_rows(session: Session) -> list[tuple[object, ...]]:
    return [tuple(r) for r in session.execute(text(f"SELECT {COLUMNS} FROM radius_check"))]


def source_rows(session: Session) -> list[tuple[object, ...]]:
    query = f"SELECT {COLUMNS} FROM radius_check_source"
    return [tuple(r) for r in session.execute(text(query))]


def assert_in_step(db: Database) -> None:
    with db.reader() as session:
        table, source = sorted(table_rows(session)), sorted(source_rows(session))
    assert table == source
    assert table, "no rows at all: the comparison would prove nothing"


@pytest.fixture
def isp(unit: Unit) -> None:
    with unit() as ctx:
        members.create(ctx, "glusk", "Gmina Głusk", max_lines=20)
        members.create(ctx, "trun", "Община Трън", max_lines=20)
        plans.create(ctx, "dsl", download_bps=2_000_000, upload_bps=512_000)
        plans.create(ctx, "radio", kind="wireless", download_bps=10_000_000)
        nas.create_pool(ctx, "dyn", "10.64.0.0/16")
        subscribers.create(ctx, "a", "glusk", "dsl", PW, static_ip="192.0.2.10")
        subscribers.create(ctx, "b", "glusk", "dsl", PW, pool_name="dyn", chap=True)
        subscribers.create(ctx, "c.trun", "trun", "radio", PW, calling_station_id="0048123")


@pytest.mark.usefixtures("isp")
def test_subscriber_changes_reach_the_table_in_the_same_transaction(
    unit: Unit, db: Database
) -> None:
    assert_in_step(db)
    with db.reader() as session:
        assert check_items(session, "b")["Cleartext-Password"] == PW
        assert check_items(session, "c.trun")["Muninet-Calling-Station"] == "0048123"
    with unit() as ctx:
        subscribers.set_password(ctx, "b", "another password 2", chap=False)
        subscribers.update(ctx, "a", plan_name="radio", static_ip=None)
        subscribers.update(ctx, "b", static_ip="192.0.2.11", calling_station_id="aa:bb:cc:dd:ee:ff")
        subscribers.set_status(ctx, "c.trun", subscribers.SubscriberStatus.SUSPENDED, "unpaid")
        # Seen by FreeRADIUS's queries inside the same transaction already.
        b = check_items(ctx.session, "b")
        assert "Cleartext-Password" not in b
        assert b["Crypt-Password"].startswith("$6$")
    assert_in_step(db)
    with db.reader() as session:
        radio = plans.get(session, "radio")
        assert check_items(session, "a")["Muninet-Plan"] == str(radio.id)
        assert "Muninet-Framed-IP-Address" not in check_items(session, "a")
        assert ("Framed-IP-Address", "192.0.2.11") in reply_items(session, "b")
        assert ("Framed-Pool", "dyn") not in reply_items(session, "b")
        assert check_items(session, "c.trun")["Muninet-Status"] == "suspended"
    with unit() as ctx:
        subscribers.remove(ctx, "a")
    assert_in_step(db)
    with db.reader() as session:
        assert check_items(session, "a") == {}


@pytest.mark.usefixtures("isp")
def test_member_status_and_pool_name_reach_their_subscribers(unit: Unit, db: Database) -> None:
    with unit() as ctx:
        members.set_status(ctx, "glusk", MemberStatus.SUSPENDED, "contract ended")
    assert_in_step(db)
    with db.reader() as session:
        assert check_items(session, "a")["Muninet-Status"] == "member-suspended"
        assert check_items(session, "c.trun")["Muninet-Status"] == "active"
    with unit() as ctx:
        members.set_status(ctx, "glusk", MemberStatus.ACTIVE)
        # No service renames a pool; the trigger covers SQL run by hand too.
        ctx.session.execute(text("UPDATE ip_pools SET name = 'dynamic' WHERE name = 'dyn'"))
    assert_in_step(db)
    with db.reader() as session:
        assert check_items(session, "a")["Muninet-Status"] == "active"
        assert ("Framed-Pool", "dynamic") in reply_items(session, "b")


@pytest.mark.usefixtures("isp")
def test_plan_items_are_read_per_plan_and_follow_plan_changes(unit: Unit, db: Database) -> None:
    with unit() as ctx:
        plans.update(
            ctx,
            "dsl",
            simultaneous_use=3,
            data_cap_bytes=5 * 10**9,
            cap_action="throttle",
            fair_use_download_bps=256_000,
            fair_use_upload_bps=64_000,
        )
    with db.reader() as session:
        dsl = plans.get(session, "dsl")
        items = plan_items(session, dsl.id)
        assert items == {
            "Simultaneous-Use": "3",
            "Muninet-Max-Monthly-Octets": str(5 * 10**9),
            "Muninet-Cap-Action": "throttle",
        }
        normal = dict(reply_items(session, "a", vendor="mikrotik"))
        fair = dict(reply_items(session, "a", tier="fairuse", vendor="mikrotik"))
        assert normal["Mikrotik-Rate-Limit"] == "512k/2M"
        assert fair["Mikrotik-Rate-Limit"] == "64k/256k"
        assert normal["Framed-IP-Address"] == "192.0.2.10"
        assert "WISPr-Bandwidth-Max-Down" not in normal  # not this NAS's vendor
    assert_in_step(db)  # plan changes leave the subscribers' own rows as they were


@pytest.mark.usefixtures("isp")
def test_bulk_inserts_and_expiry_dates(unit: Unit, db: Database) -> None:
    """Rows written without the services (an import by SQL) get their check items too."""
    today = datetime.now(UTC).date()
    with db.transaction() as session:
        member_id, plan_id = session.execute(
            text(
                "SELECT m.id, p.id FROM members m, service_plans p "
                "WHERE m.slug = 'trun' AND p.name = 'dsl'"
            )
        ).one()
        model = session.scalars(select(Subscriber).where(Subscriber.username == "b")).one()
        now = datetime.now(UTC)
        session.execute(
            insert(Subscriber),
            [
                {
                    "username": f"bulk{n}",
                    "member_id": member_id,
                    "plan_id": plan_id,
                    "status": "active",
                    "status_reason": "",
                    "password_crypt": model.password_crypt,
                    "password_nt": model.password_nt,
                    "password_clear": None,
                    "expires_on": today + timedelta(days=4 * n - 2),
                    "notes": "",
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(2)
            ],
        )
    assert_in_step(db)
    with db.reader() as session:
        # Answered at read time from the stored date (two days either side of today,
        # whatever the database's time zone).
        assert check_items(session, "bulk0")["Muninet-Status"] == "expired"
        assert check_items(session, "bulk1")["Muninet-Status"] == "active"
    with unit() as ctx:
        subscribers.set_status(ctx, "bulk0", subscribers.SubscriberStatus.SUSPENDED)
    with db.reader() as session:
        assert check_items(session, "bulk0")["Muninet-Status"] == "suspended"
