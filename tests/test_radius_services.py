"""Plans, NASes, subscribers and usage services on SQLite and PostgreSQL (no FreeRADIUS needed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import date

import pytest
from passlib.hash import nthash, sha512_crypt
from radius_queries import check_items, plan_items, reply_items
from sqlalchemy import select

from provisioning.db import Database
from provisioning.errors import Conflict, LimitExceeded, NotFound, NotPermitted, ValidationError
from provisioning.models import AuditEvent, MemberStatus, PlanAttribute, Subscriber
from provisioning.services import members, nas, plans, radius, subscribers
from provisioning.services.context import ServiceContext

Unit = Callable[[], AbstractContextManager[ServiceContext]]
PW = "dial-up password 1"


@pytest.fixture
def isp(unit: Unit) -> None:
    with unit() as ctx:
        members.create(ctx, "glusk", "Gmina Głusk", max_lines=2)
        members.create(ctx, "trun", "Община Трън", max_lines=0)
        plans.create(ctx, "dsl", download_bps=plans.parse_rate("2M"), upload_bps=512_000)


def test_rates_and_plan_validation(unit: Unit) -> None:
    assert plans.parse_rate("2M") == 2_000_000
    assert plans.parse_rate("512k") == 512_000
    assert plans.parse_rate("1.5M") == 1_500_000
    assert plans.format_rate(1_500_000) == "1500k"
    with pytest.raises(ValidationError, match="not a rate"):
        plans.parse_rate("fast")
    with pytest.raises(ValidationError, match="plan name"), unit() as ctx:
        plans.create(ctx, "Bad Name!")
    with pytest.raises(ValidationError, match="needs a data cap"), unit() as ctx:
        plans.create(ctx, "t", cap_action="throttle", fair_use_download_bps=1000)
    with pytest.raises(ValidationError, match="fair-use rate"), unit() as ctx:
        plans.create(ctx, "t", cap_action="throttle", data_cap_bytes=10**9)
    with pytest.raises(ValidationError, match="must not exceed"), unit() as ctx:
        plans.create(
            ctx,
            "t",
            download_bps=1000,
            cap_action="throttle",
            data_cap_bytes=10**9,
            fair_use_download_bps=2000,
        )
    with pytest.raises(ValidationError, match="simultaneous"), unit() as ctx:
        plans.create(ctx, "t", simultaneous_use=0)
    with unit() as ctx:
        plans.create(ctx, "t")
    with pytest.raises(Conflict), unit() as ctx:
        plans.create(ctx, "T")


def test_plan_attributes_follow_every_change(unit: Unit, db: Database) -> None:
    with unit() as ctx:
        plan = plans.create(
            ctx,
            "fair",
            kind="dialup",
            download_bps=4_000_000,
            upload_bps=1_000_000,
            data_cap_bytes=10 * 1024**3,
            cap_action="throttle",
            fair_use_download_bps=256_000,
            fair_use_upload_bps=64_000,
            idle_timeout=300,
        )
        rows = {(a.tier, a.vendor, a.attribute): a.value for a in plan.attributes}
    assert rows[("normal", "mikrotik", "Mikrotik-Rate-Limit")] == "1M/4M"
    assert rows[("fairuse", "mikrotik", "Mikrotik-Rate-Limit")] == "64k/256k"
    assert rows[("fairuse", "wispr", "WISPr-Bandwidth-Max-Down")] == "256000"
    assert rows[("all", "", "Idle-Timeout")] == "300"
    assert rows[("all", "", "Framed-Protocol")] == "PPP"
    with unit() as ctx:
        plans.update(ctx, "fair", download_bps=8_000_000, idle_timeout=None, kind="wireless")
    with db.reader() as session:
        plan = plans.get(session, "fair")
        rows = {(a.tier, a.vendor, a.attribute): a.value for a in plan.attributes}
        assert rows[("normal", "mikrotik", "Mikrotik-Rate-Limit")] == "1M/8M"
        assert ("all", "", "Idle-Timeout") not in rows
        assert ("all", "", "Framed-Protocol") not in rows  # wireless: no PPP
        stored = session.scalars(select(PlanAttribute).where(PlanAttribute.plan_id == plan.id))
        assert len(list(stored)) == len(plan.attributes)
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "plan.update")).one()
        assert event.details["download_bps"] == 8_000_000
        assert event.details["idle_timeout"] is None


@pytest.mark.usefixtures("isp")
def test_subscriber_credentials_for_pap_chap_and_mschap(unit: Unit, db: Database) -> None:
    with unit() as ctx:
        subscribers.create(ctx, "Jan.Kowalski", "glusk", "dsl", PW)
        subscribers.create(ctx, "chap.user", "glusk", "dsl", PW, chap=True)
    with db.reader() as session:
        plain = subscribers.get(session, "jan.kowalski")
        assert plain.password_clear is None
        assert sha512_crypt.verify(PW, plain.password_crypt)
        assert plain.password_crypt.startswith("$6$")
        assert plain.password_nt == nthash.hash(PW).lower()
        chap = subscribers.get(session, "chap.user")
        assert chap.password_clear == PW
        attributes = check_items(session, "jan.kowalski")
        assert attributes["Crypt-Password"] == plain.password_crypt
        assert attributes["NT-Password"] == plain.password_nt
        assert "Cleartext-Password" not in attributes
        assert attributes["Muninet-Status"] == "active"
        assert attributes["Muninet-Plan"] == str(plain.plan_id)
        assert plan_items(session, plain.plan_id)["Simultaneous-Use"] == "1"
        assert check_items(session, "chap.user")["Cleartext-Password"] == PW
        assert "Crypt-Password" not in check_items(session, "chap.user")
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action.like("subscriber.%"))
        ).all()
        assert events
        assert all(PW not in json.dumps(e.details) for e in events)
    with unit() as ctx:
        subscribers.set_password(ctx, "chap.user", "another password 2", chap=False)
    with db.reader() as session:
        assert subscribers.get(session, "chap.user").password_clear is None
    with pytest.raises(ValidationError, match="too short"), unit() as ctx:
        subscribers.create(ctx, "short", "glusk", "dsl", "abc")
    with pytest.raises(ValidationError, match="subscriber name"), unit() as ctx:
        subscribers.create(ctx, "bad name", "glusk", "dsl", PW)


@pytest.mark.usefixtures("isp")
def test_subscriber_lines_are_counted_against_the_package(unit: Unit) -> None:
    with pytest.raises(LimitExceeded, match="all 0 subscriber lines"), unit() as ctx:
        subscribers.create(ctx, "t1", "trun", "dsl", PW)
    with unit() as ctx:
        subscribers.create(ctx, "g1", "glusk", "dsl", PW)
        subscribers.create(ctx, "g2", "glusk", "dsl", PW)
    with pytest.raises(LimitExceeded, match="all 2 subscriber lines"), unit() as ctx:
        subscribers.create(ctx, "g3", "glusk", "dsl", PW)
    with unit() as ctx:  # the package shows them, and cannot shrink below them
        assert members.usage(ctx.session, members.get(ctx.session, "glusk")).lines == 2
    with pytest.raises(LimitExceeded, match="has 2 lines"), unit() as ctx:
        members.update_package(ctx, "glusk", max_lines=1)
    with pytest.raises(Conflict, match="already exists"), unit() as ctx:
        subscribers.remove(ctx, "g2")
        subscribers.create(ctx, "G1", "glusk", "dsl", PW)
    with unit() as ctx:
        members.set_status(ctx, "glusk", MemberStatus.SUSPENDED)
    with pytest.raises(NotPermitted), unit() as ctx:
        subscribers.create(ctx, "g4", "glusk", "dsl", PW)
    with pytest.raises(NotFound, match="no plan"), unit() as ctx:
        subscribers.create(ctx, "g4", "trun", "nope", PW)


@pytest.mark.usefixtures("isp")
def test_static_addresses_pools_bindings_and_status(unit: Unit, db: Database) -> None:
    with unit() as ctx:
        members.update_package(ctx, "glusk", max_lines=10)
        nas.create_pool(ctx, "dyn", "10.64.0.0/16")
        subscribers.create(ctx, "a", "glusk", "dsl", PW, static_ip="192.0.2.10")
        subscribers.create(
            ctx, "b", "glusk", "dsl", PW, pool_name="dyn", calling_station_id="AA:BB:CC:00:11:22"
        )
    with pytest.raises(Conflict, match="static address of subscriber 'a'"), unit() as ctx:
        subscribers.create(ctx, "c", "glusk", "dsl", PW, static_ip="192.0.2.10")
    with pytest.raises(Conflict, match="inside IP pool"), unit() as ctx:
        subscribers.create(ctx, "c", "glusk", "dsl", PW, static_ip="10.64.3.3")
    with pytest.raises(ValidationError, match="IPv4"), unit() as ctx:
        subscribers.create(ctx, "c", "glusk", "dsl", PW, static_ip="2001:db8::1")
    with pytest.raises(Conflict, match="overlaps"), unit() as ctx:
        nas.create_pool(ctx, "dyn2", "10.64.128.0/17")
    with unit() as ctx:
        subscribers.set_status(ctx, "a", subscribers.SubscriberStatus.SUSPENDED, "unpaid")
        subscribers.update(ctx, "b", expires_on=date(2000, 1, 1))
    with pytest.raises(ValidationError, match="already suspended"), unit() as ctx:
        subscribers.set_status(ctx, "a", subscribers.SubscriberStatus.SUSPENDED)
    with db.reader() as session:
        status = {user: check_items(session, user)["Muninet-Status"] for user in ("a", "b")}
        assert status == {"a": "suspended", "b": "expired"}
        b = subscribers.get(session, "b")
        assert b.calling_station_id == "aa:bb:cc:00:11:22"
        assert subscribers.as_dict(b)["status"] == "expired"
        assert ("Framed-Pool", "dyn") in reply_items(session, "b")
        assert ("Framed-IP-Address", "192.0.2.10") in reply_items(session, "a")
        assert check_items(session, "b")["Muninet-Calling-Station"] == "aa:bb:cc:00:11:22"


def test_nas_validation_and_fingerprint(unit: Unit, db: Database) -> None:
    with db.reader() as session:
        empty = nas.fingerprint(session)
    with unit() as ctx:
        nas.create(ctx, "mt-1", "192.0.2.1", "s3cret-value", vendor="mikrotik")
        nas.create(ctx, "wifi", "10.1.0.0/24", "s3cret-value-2")
    with pytest.raises(Conflict, match="address"), unit() as ctx:
        nas.create(ctx, "mt-2", "192.0.2.1", "s3cret-value")
    with pytest.raises(ValidationError, match="shared secret"), unit() as ctx:
        nas.create(ctx, "mt-2", "192.0.2.2", 'bad"secret')
    with pytest.raises(ValidationError, match="8 to 64"), unit() as ctx:
        nas.create(ctx, "mt-2", "192.0.2.2", "short")
    with pytest.raises(ValidationError, match="vendor"), unit() as ctx:
        nas.create(ctx, "mt-2", "192.0.2.2", "s3cret-value", vendor="juniper")
    with db.reader() as session:
        assert nas.fingerprint(session) != empty
        found = nas.for_address(session, "10.1.0.77")
        assert found is not None
        assert found.name == "wifi"
    with unit() as ctx:
        nas.remove(ctx, "wifi")
    with pytest.raises(NotFound), unit() as ctx:
        nas.remove(ctx, "wifi")


@pytest.mark.usefixtures("isp")
def test_plan_in_use_cannot_be_removed(unit: Unit, db: Database) -> None:
    with unit() as ctx:
        subscribers.create(ctx, "g1", "glusk", "dsl", PW)
    with pytest.raises(Conflict, match="1 subscriber"), unit() as ctx:
        plans.remove(ctx, "dsl")
    with unit() as ctx:
        subscribers.remove(ctx, "g1")
        plans.remove(ctx, "dsl")
    with db.reader() as session:
        assert session.scalar(select(Subscriber.id)) is None


def test_month_parsing() -> None:
    assert radius.parse_month("2026-02") == (2026, 2)
    start, end = radius.month_bounds(2026, 12)
    assert end > start
    assert (end - start) // 86400 == 31
    with pytest.raises(ValidationError, match="YYYY-MM"):
        radius.parse_month("2026-13")
