"""Subscribers of the association's ISP service, their plans, the NASes, and RADIUS accounting.

FreeRADIUS reads these tables with the queries muninet renders
(`config/templates/freeradius/`):

- `radius_check` (`RadiusCheck`): a subscriber's own check items (its password
  in the stored forms, the Calling-Station-Id binding, the effective status, its
  plan, its static address or pool), as (id, username, attribute, op, value)
  rows. Triggers on `subscribers`, `members` and `ip_pools` rewrite a
  subscriber's rows from the view `radius_check_source` in the same transaction
  as every change (migration 0010): the services never write it;
- `radius_plan_check` (a view): a plan's check items (Simultaneous-Use, the
  monthly caps and what happens at them), keyed by plan id;
- `radius_plan_attributes` (`PlanAttribute`): a plan's reply items, with a
  `tier` (all / normal / fairuse) and a `vendor` the reply query filters on.

So FreeRADIUS always sees exactly what the last committed transaction left: a
suspended member, a changed plan or a new password take effect at the next login
(after the few seconds FreeRADIUS caches them).

FreeRADIUS writes `radacct` (one row per session) and `radius_postauth` (one row
per login attempt, never with the attempted password). Times in these two tables
are Unix epoch seconds (BIGINT): FreeRADIUS writes them the same way on SQLite
and PostgreSQL without date functions, and month boundaries compare as integers.
Octet counters include the gigawords (value = gigawords * 2**32 + octets).
"""

from __future__ import annotations

import enum
from datetime import date

from sqlalchemy import (
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from provisioning.models.base import Base, Timestamps, str_enum
from provisioning.models.members import Member

# SQLite makes only an INTEGER PRIMARY KEY an auto-incrementing rowid alias.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class PlanKind(enum.StrEnum):
    DIALUP = "dialup"
    PPPOE = "pppoe"
    WIRELESS = "wireless"


class CapAction(enum.StrEnum):
    """What happens when a subscriber reaches the plan's monthly data cap."""

    REJECT = "reject"  # no new sessions until the next month
    THROTTLE = "throttle"  # new sessions get the fair-use rate


class SubscriberStatus(enum.StrEnum):
    """The stored status. "expired" is derived from `expires_on`, never stored."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


class NasVendor(enum.StrEnum):
    """Which vendor's rate attributes a NAS gets ("other": all of them)."""

    MIKROTIK = "mikrotik"
    CISCO = "cisco"
    ASCEND = "ascend"
    WISPR = "wispr"
    OTHER = "other"


class ServicePlan(Timestamps, Base):
    """A service plan: speeds, monthly caps, timeouts and session limits.

    Rates are bits per second; 0 means "not limited by RADIUS". Caps are NULL when
    the plan has none. The reply attributes for each NAS vendor are generated from
    these columns into `radius_plan_attributes` by the plans service.
    """

    __tablename__ = "service_plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[PlanKind] = mapped_column(str_enum(PlanKind, "plan_kind"))
    download_bps: Mapped[int] = mapped_column(BigInteger, default=0)
    upload_bps: Mapped[int] = mapped_column(BigInteger, default=0)
    data_cap_bytes: Mapped[int | None] = mapped_column(BigInteger)
    time_cap_seconds: Mapped[int | None] = mapped_column(BigInteger)
    cap_action: Mapped[CapAction] = mapped_column(
        str_enum(CapAction, "cap_action"), default=CapAction.REJECT
    )
    fair_use_download_bps: Mapped[int] = mapped_column(BigInteger, default=0)
    fair_use_upload_bps: Mapped[int] = mapped_column(BigInteger, default=0)
    session_timeout: Mapped[int | None] = mapped_column(Integer)
    idle_timeout: Mapped[int | None] = mapped_column(Integer)
    simultaneous_use: Mapped[int] = mapped_column(Integer, default=1)
    port_limit: Mapped[int | None] = mapped_column(Integer)

    attributes: Mapped[list[PlanAttribute]] = relationship(
        order_by="PlanAttribute.id", cascade="all, delete-orphan", passive_deletes=True
    )


class PlanAttribute(Base):
    """One generated RADIUS reply attribute of a plan (never typed by hand).

    `tier`: "all" (always sent), "normal" (under the cap) or "fairuse" (over the
    data cap of a throttling plan). `vendor`: "" for standard attributes, else the
    `NasVendor` whose NASes get it.
    """

    __tablename__ = "radius_plan_attributes"

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(
        ForeignKey("service_plans.id", ondelete="CASCADE"), index=True
    )
    tier: Mapped[str] = mapped_column(String(10))
    vendor: Mapped[str] = mapped_column(String(20))
    attribute: Mapped[str] = mapped_column(String(64))
    op: Mapped[str] = mapped_column(String(2))
    value: Mapped[str] = mapped_column(String(253))


class IpPool(Timestamps, Base):
    """An address pool configured on the NASes; subscribers in it get `Framed-Pool`."""

    __tablename__ = "ip_pools"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    network: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(200), default="")


class Nas(Timestamps, Base):
    """A network access server (dial-up concentrator, PPPoE/wireless router).

    FreeRADIUS reads NASes at start only: muninet renders them into its
    `clients.conf` and the supervisor restarts FreeRADIUS when they change.
    """

    __tablename__ = "nas"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    address: Mapped[str] = mapped_column(String(64), unique=True)  # IP or network (CIDR)
    secret: Mapped[str] = mapped_column(String(128))
    vendor: Mapped[NasVendor] = mapped_column(str_enum(NasVendor, "nas_vendor"))
    coa_port: Mapped[int] = mapped_column(Integer, default=3799)
    description: Mapped[str] = mapped_column(String(200), default="")


class Subscriber(Timestamps, Base):
    """A dial-up or broadband account of a member office, counted against its `max_lines`.

    Credentials (see `provisioning.services.subscribers`): `password_crypt`
    (SHA512-CRYPT, PAP) and `password_nt` (NT hash, MS-CHAPv1/v2, hex) always;
    `password_clear` only for subscribers with CHAP enabled, because CHAP cannot
    be verified against any hash.
    """

    __tablename__ = "subscribers"
    # Covers the usage report's join from a user name to its member (migration 0009).
    __table_args__ = (Index("ix_subscribers_username_member_id", "username", "member_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="RESTRICT"), index=True
    )
    plan_id: Mapped[int] = mapped_column(
        ForeignKey("service_plans.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[SubscriberStatus] = mapped_column(
        str_enum(SubscriberStatus, "subscriber_status"), default=SubscriberStatus.ACTIVE
    )
    status_reason: Mapped[str] = mapped_column(String(500), default="")
    password_crypt: Mapped[str] = mapped_column(String(200))
    password_nt: Mapped[str] = mapped_column(String(32))
    password_clear: Mapped[str | None] = mapped_column(String(128))
    static_ip: Mapped[str | None] = mapped_column(String(45), unique=True)
    pool_id: Mapped[int | None] = mapped_column(
        ForeignKey("ip_pools.id", ondelete="RESTRICT"), index=True
    )
    calling_station_id: Mapped[str | None] = mapped_column(String(64))
    expires_on: Mapped[date | None] = mapped_column(Date)
    notes: Mapped[str] = mapped_column(Text, default="")

    member: Mapped[Member] = relationship()
    plan: Mapped[ServicePlan] = relationship()
    pool: Mapped[IpPool | None] = relationship()

    @property
    def chap_enabled(self) -> bool:
        return self.password_clear is not None

    def effective_status(self, today: date) -> str:
        """What FreeRADIUS decides on: suspended, member-<status>, expired or active."""
        if self.status is not SubscriberStatus.ACTIVE:
            return self.status.value
        if not self.member.is_active:
            return f"member-{self.member.status.value}"
        if self.expires_on is not None and self.expires_on < today:
            return "expired"
        return "active"


class RadiusCheck(Base):
    """A subscriber's own RADIUS check item, written only by triggers (migration 0010).

    `expires_on` is set on the `Muninet-Status` row: the check query answers
    "expired" once that date has passed, with no job rewriting the row.
    """

    __tablename__ = "radius_check"
    __table_args__ = (Index("ix_radius_check_username_id", "username", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    subscriber_id: Mapped[int] = mapped_column(Integer, index=True)
    username: Mapped[str] = mapped_column(String(64))
    attribute: Mapped[str] = mapped_column(String(64))
    op: Mapped[str] = mapped_column(String(2))
    value: Mapped[str] = mapped_column(Text)
    expires_on: Mapped[date | None] = mapped_column(Date)


class RadAcct(Base):
    """One session, written by FreeRADIUS's accounting queries (Start, Interim, Stop).

    Times are epoch seconds; octets include gigawords. An open session has no
    `acctstoptime`. Free-form columns are TEXT: a NAS may send up to 253 octets, and
    a value too long for its column would make PostgreSQL refuse the whole packet.
    """

    __tablename__ = "radacct"
    __table_args__ = (
        Index("ix_radacct_username_acctstarttime", "username", "acctstarttime"),
        Index("ix_radacct_acctstoptime_acctupdatetime", "acctstoptime", "acctupdatetime"),
        # The Simultaneous-Use count at every login reads only the user's open sessions.
        Index(
            "ix_radacct_open_username",
            "username",
            sqlite_where=text("acctstoptime IS NULL"),
            postgresql_where=text("acctstoptime IS NULL"),
        ),
    )

    radacctid: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    acctsessionid: Mapped[str] = mapped_column(Text)
    acctuniqueid: Mapped[str] = mapped_column(String(32), unique=True)
    username: Mapped[str] = mapped_column(Text)
    nasipaddress: Mapped[str] = mapped_column(String(45), index=True)
    nasportid: Mapped[str] = mapped_column(Text, default="")
    nasporttype: Mapped[str] = mapped_column(Text, default="")
    acctstarttime: Mapped[int] = mapped_column(BigInteger, index=True)
    acctupdatetime: Mapped[int] = mapped_column(BigInteger)
    acctstoptime: Mapped[int | None] = mapped_column(BigInteger)
    acctinterval: Mapped[int | None] = mapped_column(Integer)
    acctsessiontime: Mapped[int] = mapped_column(BigInteger, default=0)
    acctinputoctets: Mapped[int] = mapped_column(BigInteger, default=0)
    acctoutputoctets: Mapped[int] = mapped_column(BigInteger, default=0)
    acctterminatecause: Mapped[str] = mapped_column(Text, default="")
    calledstationid: Mapped[str] = mapped_column(Text, default="")
    callingstationid: Mapped[str] = mapped_column(Text, default="")
    framedipaddress: Mapped[str] = mapped_column(Text, default="")
    framedprotocol: Mapped[str] = mapped_column(Text, default="")
    servicetype: Mapped[str] = mapped_column(Text, default="")


class RadPostAuth(Base):
    """One login attempt and FreeRADIUS's answer. The attempted password is never stored."""

    __tablename__ = "radius_postauth"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(Text, index=True)
    reply: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text, default="")
    nasipaddress: Mapped[str] = mapped_column(String(45), default="")
    callingstationid: Mapped[str] = mapped_column(Text, default="")
    authdate: Mapped[int] = mapped_column(BigInteger, index=True)


class UsageMonth(Base):
    """A calendar month in muninet's local time, as epoch bounds (migration 0008 fills them).

    The rollup's month key: SQL cannot compute local-time months the same way on
    SQLite and PostgreSQL, so the `radacct` triggers look the month up here.
    """

    __tablename__ = "usage_months"

    month_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    month_end: Mapped[int] = mapped_column(BigInteger)
    month: Mapped[str] = mapped_column(String(7), unique=True)  # "YYYY-MM"


class RadAcctMonthly(Base):
    """`radacct` summed per user name and month of the session's start (the usage rollup).

    Kept equal to those sums by triggers on `radacct` (migration 0008), in the
    same transaction as each accounting write; open sessions count with their
    last interim values. A row can reach 0 sessions (a session moved or deleted).

    The key is (month, user name) and on SQLite the table is WITHOUT ROWID
    (migration 0009): a month's rows are then stored together, in key order, so
    the monthly report reads one contiguous range instead of looking up each row
    by rowid from a separate index.
    """

    __tablename__ = "radacct_monthly"
    __table_args__ = (
        PrimaryKeyConstraint("month_start", "username"),
        {"sqlite_with_rowid": False},
    )

    username: Mapped[str] = mapped_column(Text)
    month_start: Mapped[int] = mapped_column(BigInteger, autoincrement=False)
    sessions: Mapped[int] = mapped_column(BigInteger)
    session_time: Mapped[int] = mapped_column(BigInteger)
    input_octets: Mapped[int] = mapped_column(BigInteger)
    output_octets: Mapped[int] = mapped_column(BigInteger)
