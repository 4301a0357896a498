"""subscribers: service plans, plan attributes, NAS, IP pools, radacct, post-auth log, views

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# FreeRADIUS's check items of a subscriber, in rlm_sql's (id, username, attribute,
# op, value) shape. The password goes in the forms FreeRADIUS can verify: the
# cleartext when CHAP is enabled (it serves PAP and MS-CHAP too), otherwise the
# SHA512-CRYPT hash (PAP) and the NT hash (MS-CHAPv1/v2). Muninet-* are attributes
# of muninet's own dictionary that the rendered policy reads; Muninet-Status is
# computed here, so a suspended member or a past expiry date takes effect at the
# next login without any job.
# Note for later migrations: these views name members, subscribers, service_plans
# and ip_pools; SQLite's batch mode rebuilds a table by renaming it, which fails
# while a view names it: drop both views around such changes.
CHECK_VIEW = """
CREATE VIEW radius_check AS
SELECT s.id * 16 + 1 AS id, s.username AS username, 'Cleartext-Password' AS attribute,
       ':=' AS op, s.password_clear AS value
  FROM subscribers s WHERE s.password_clear IS NOT NULL
UNION ALL
SELECT s.id * 16 + 2, s.username, 'Crypt-Password', ':=', s.password_crypt
  FROM subscribers s WHERE s.password_clear IS NULL
UNION ALL
SELECT s.id * 16 + 3, s.username, 'NT-Password', ':=', s.password_nt
  FROM subscribers s WHERE s.password_clear IS NULL
UNION ALL
SELECT s.id * 16 + 4, s.username, 'Simultaneous-Use', ':=', CAST(p.simultaneous_use AS TEXT)
  FROM subscribers s JOIN service_plans p ON p.id = s.plan_id
UNION ALL
SELECT s.id * 16 + 5, s.username, 'Muninet-Calling-Station', ':=', s.calling_station_id
  FROM subscribers s WHERE s.calling_station_id IS NOT NULL
UNION ALL
SELECT s.id * 16 + 6, s.username, 'Muninet-Status', ':=',
       CASE WHEN s.status <> 'active' THEN s.status
            WHEN m.status <> 'active' THEN 'member-' || m.status
            WHEN s.expires_on < CURRENT_DATE THEN 'expired'
            ELSE 'active' END
  FROM subscribers s JOIN members m ON m.id = s.member_id
UNION ALL
SELECT s.id * 16 + 7, s.username, 'Muninet-Max-Monthly-Octets', ':=',
       CAST(p.data_cap_bytes AS TEXT)
  FROM subscribers s JOIN service_plans p ON p.id = s.plan_id
 WHERE p.data_cap_bytes IS NOT NULL
UNION ALL
SELECT s.id * 16 + 8, s.username, 'Muninet-Max-Monthly-Session', ':=',
       CAST(p.time_cap_seconds AS TEXT)
  FROM subscribers s JOIN service_plans p ON p.id = s.plan_id
 WHERE p.time_cap_seconds IS NOT NULL
UNION ALL
SELECT s.id * 16 + 9, s.username, 'Muninet-Cap-Action', ':=', p.cap_action
  FROM subscribers s JOIN service_plans p ON p.id = s.plan_id
"""

# Reply items: the subscriber's static address or pool, then the plan's generated
# attributes. The reply query picks the tier (normal, or fairuse over the cap of a
# throttling plan) and the vendor of the NAS asking.
REPLY_VIEW = """
CREATE VIEW radius_reply AS
SELECT 0 AS id, s.username AS username, 'Framed-IP-Address' AS attribute, ':=' AS op,
       s.static_ip AS value, 'all' AS tier, '' AS vendor
  FROM subscribers s WHERE s.static_ip IS NOT NULL
UNION ALL
SELECT 0, s.username, 'Framed-Pool', ':=', ip.name, 'all', ''
  FROM subscribers s JOIN ip_pools ip ON ip.id = s.pool_id
 WHERE s.static_ip IS NULL
UNION ALL
SELECT a.id, s.username, a.attribute, a.op, a.value, a.tier, a.vendor
  FROM subscribers s JOIN radius_plan_attributes a ON a.plan_id = s.plan_id
"""


def upgrade() -> None:
    op.create_table(
        "ip_pools",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("network", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ip_pools")),
        sa.UniqueConstraint("name", name=op.f("uq_ip_pools_name")),
    )
    op.create_table(
        "nas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column(
            "vendor",
            sa.Enum(
                "mikrotik",
                "cisco",
                "ascend",
                "wispr",
                "other",
                name="nas_vendor",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("coa_port", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nas")),
        sa.UniqueConstraint("address", name=op.f("uq_nas_address")),
        sa.UniqueConstraint("name", name=op.f("uq_nas_name")),
    )
    op.create_table(
        "radacct",
        sa.Column(
            "radacctid",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("acctsessionid", sa.Text(), nullable=False),
        sa.Column("acctuniqueid", sa.String(length=32), nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("nasipaddress", sa.String(length=45), nullable=False),
        sa.Column("nasportid", sa.Text(), nullable=False),
        sa.Column("nasporttype", sa.Text(), nullable=False),
        sa.Column("acctstarttime", sa.BigInteger(), nullable=False),
        sa.Column("acctupdatetime", sa.BigInteger(), nullable=False),
        sa.Column("acctstoptime", sa.BigInteger(), nullable=True),
        sa.Column("acctinterval", sa.Integer(), nullable=True),
        sa.Column("acctsessiontime", sa.BigInteger(), nullable=False),
        sa.Column("acctinputoctets", sa.BigInteger(), nullable=False),
        sa.Column("acctoutputoctets", sa.BigInteger(), nullable=False),
        sa.Column("acctterminatecause", sa.Text(), nullable=False),
        sa.Column("calledstationid", sa.Text(), nullable=False),
        sa.Column("callingstationid", sa.Text(), nullable=False),
        sa.Column("framedipaddress", sa.Text(), nullable=False),
        sa.Column("framedprotocol", sa.Text(), nullable=False),
        sa.Column("servicetype", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("radacctid", name=op.f("pk_radacct")),
        sa.UniqueConstraint("acctuniqueid", name=op.f("uq_radacct_acctuniqueid")),
    )
    with op.batch_alter_table("radacct", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_radacct_acctstarttime"), ["acctstarttime"], unique=False
        )
        batch_op.create_index(
            "ix_radacct_acctstoptime_acctupdatetime",
            ["acctstoptime", "acctupdatetime"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_radacct_nasipaddress"), ["nasipaddress"], unique=False)
        batch_op.create_index(
            "ix_radacct_username_acctstarttime", ["username", "acctstarttime"], unique=False
        )

    op.create_table(
        "radius_postauth",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("reply", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("nasipaddress", sa.String(length=45), nullable=False),
        sa.Column("callingstationid", sa.Text(), nullable=False),
        sa.Column("authdate", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_radius_postauth")),
    )
    with op.batch_alter_table("radius_postauth", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_radius_postauth_authdate"), ["authdate"], unique=False)
        batch_op.create_index(batch_op.f("ix_radius_postauth_username"), ["username"], unique=False)

    op.create_table(
        "service_plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "dialup",
                "pppoe",
                "wireless",
                name="plan_kind",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("download_bps", sa.BigInteger(), nullable=False),
        sa.Column("upload_bps", sa.BigInteger(), nullable=False),
        sa.Column("data_cap_bytes", sa.BigInteger(), nullable=True),
        sa.Column("time_cap_seconds", sa.BigInteger(), nullable=True),
        sa.Column(
            "cap_action",
            sa.Enum(
                "reject",
                "throttle",
                name="cap_action",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("fair_use_download_bps", sa.BigInteger(), nullable=False),
        sa.Column("fair_use_upload_bps", sa.BigInteger(), nullable=False),
        sa.Column("session_timeout", sa.Integer(), nullable=True),
        sa.Column("idle_timeout", sa.Integer(), nullable=True),
        sa.Column("simultaneous_use", sa.Integer(), nullable=False),
        sa.Column("port_limit", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_plans")),
        sa.UniqueConstraint("name", name=op.f("uq_service_plans_name")),
    )
    op.create_table(
        "radius_plan_attributes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(length=10), nullable=False),
        sa.Column("vendor", sa.String(length=20), nullable=False),
        sa.Column("attribute", sa.String(length=64), nullable=False),
        sa.Column("op", sa.String(length=2), nullable=False),
        sa.Column("value", sa.String(length=253), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["service_plans.id"],
            name=op.f("fk_radius_plan_attributes_plan_id_service_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_radius_plan_attributes")),
    )
    with op.batch_alter_table("radius_plan_attributes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_radius_plan_attributes_plan_id"), ["plan_id"], unique=False
        )

    op.create_table(
        "subscribers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "suspended",
                name="subscriber_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("status_reason", sa.String(length=500), nullable=False),
        sa.Column("password_crypt", sa.String(length=200), nullable=False),
        sa.Column("password_nt", sa.String(length=32), nullable=False),
        sa.Column("password_clear", sa.String(length=128), nullable=True),
        sa.Column("static_ip", sa.String(length=45), nullable=True),
        sa.Column("pool_id", sa.Integer(), nullable=True),
        sa.Column("calling_station_id", sa.String(length=64), nullable=True),
        sa.Column("expires_on", sa.Date(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_subscribers_member_id_members"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["service_plans.id"],
            name=op.f("fk_subscribers_plan_id_service_plans"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["ip_pools.id"],
            name=op.f("fk_subscribers_pool_id_ip_pools"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscribers")),
        sa.UniqueConstraint("static_ip", name=op.f("uq_subscribers_static_ip")),
        sa.UniqueConstraint("username", name=op.f("uq_subscribers_username")),
    )
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subscribers_member_id"), ["member_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_subscribers_plan_id"), ["plan_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_subscribers_pool_id"), ["pool_id"], unique=False)

    op.execute(CHECK_VIEW)
    op.execute(REPLY_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW radius_reply")
    op.execute("DROP VIEW radius_check")
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscribers_pool_id"))
        batch_op.drop_index(batch_op.f("ix_subscribers_plan_id"))
        batch_op.drop_index(batch_op.f("ix_subscribers_member_id"))
    op.drop_table("subscribers")
    with op.batch_alter_table("radius_plan_attributes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_radius_plan_attributes_plan_id"))
    op.drop_table("radius_plan_attributes")
    op.drop_table("service_plans")
    with op.batch_alter_table("radius_postauth", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_radius_postauth_username"))
        batch_op.drop_index(batch_op.f("ix_radius_postauth_authdate"))
    op.drop_table("radius_postauth")
    with op.batch_alter_table("radacct", schema=None) as batch_op:
        batch_op.drop_index("ix_radacct_username_acctstarttime")
        batch_op.drop_index(batch_op.f("ix_radacct_nasipaddress"))
        batch_op.drop_index("ix_radacct_acctstoptime_acctupdatetime")
        batch_op.drop_index(batch_op.f("ix_radacct_acctstarttime"))
    op.drop_table("radacct")
    op.drop_table("nas")
    op.drop_table("ip_pools")
