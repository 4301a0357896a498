"""RADIUS check items in a table kept by triggers; plan items read per plan; open-session index

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22

Measured (bench/radius.py, SQLite, 50,000 subscribers): a login whose items were
not cached spent most of FreeRADIUS's CPU preparing two queries over the
`radius_check` (9-way UNION ALL) and `radius_reply` (3-way) views. SQLite
expands a view into every statement that names it, and FreeRADIUS builds each
query as a new string, so every login paid for planning a dozen subqueries
(under 16 threads, mostly in SQLite's memory allocator, behind its global
mutex). Reading one indexed table instead cost a third as much CPU per login.

So:
- `radius_check` is now a table with a subscriber's own check items: its
  password forms, Calling-Station-Id binding, status (subscriber and member),
  plan (`Muninet-Plan`) and static address or pool (`Muninet-Framed-*`, copied
  into the reply by the policy). Triggers on `subscribers`, `members` (status)
  and `ip_pools` (name) rewrite a subscriber's rows from the view
  `radius_check_source` in the same transaction as every change, so FreeRADIUS
  still sees exactly what the last committed transaction left, whoever wrote it
  (services, bulk imports, SQL by hand). An expiry date needs no job: the row of
  `Muninet-Status` carries `expires_on`, and the check query answers "expired"
  once that date has passed, as the view did.
- The plan's check items (Simultaneous-Use, the monthly caps, the cap action)
  come from the view `radius_plan_check`, and the reply items straight from
  `radius_plan_attributes`, both per plan: FreeRADIUS caches them per plan (and
  tier and vendor), so a subscriber's first login reads one indexed table.
- `ix_radacct_open_username`: the Simultaneous-Use count at every login reads
  the user's open sessions only, not every session the user ever had.

Note for later migrations: the views and triggers name subscribers, members,
service_plans and ip_pools; SQLite's batch mode rebuilds a table by renaming
it, which fails while a view names it and drops the table's triggers: drop the
views and triggers around such a change and create them again after.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = "id, subscriber_id, username, attribute, op, value, expires_on"

# A subscriber's own check items, in rlm_sql's (id, username, attribute, op,
# value) shape plus the subscriber's id and, on the status row, the expiry date.
# The password goes in the forms FreeRADIUS can verify: the cleartext when CHAP
# is enabled (it serves PAP and MS-CHAP too), otherwise the SHA512-CRYPT hash
# (PAP) and the NT hash (MS-CHAPv1/v2). The id (subscriber id * 16 + n) orders a
# subscriber's rows and makes each unique.
SOURCE_VIEW = """
CREATE VIEW radius_check_source AS
SELECT s.id * 16 + 1 AS id, s.id AS subscriber_id, s.username AS username,
       'Cleartext-Password' AS attribute, ':=' AS op, s.password_clear AS value,
       CAST(NULL AS DATE) AS expires_on
  FROM subscribers s WHERE s.password_clear IS NOT NULL
UNION ALL
SELECT s.id * 16 + 2, s.id, s.username, 'Crypt-Password', ':=', s.password_crypt,
       CAST(NULL AS DATE)
  FROM subscribers s WHERE s.password_clear IS NULL
UNION ALL
SELECT s.id * 16 + 3, s.id, s.username, 'NT-Password', ':=', s.password_nt,
       CAST(NULL AS DATE)
  FROM subscribers s WHERE s.password_clear IS NULL
UNION ALL
SELECT s.id * 16 + 5, s.id, s.username, 'Muninet-Calling-Station', ':=',
       s.calling_station_id, CAST(NULL AS DATE)
  FROM subscribers s WHERE s.calling_station_id IS NOT NULL
UNION ALL
SELECT s.id * 16 + 6, s.id, s.username, 'Muninet-Status', ':=',
       CASE WHEN s.status <> 'active' THEN s.status
            WHEN m.status <> 'active' THEN 'member-' || m.status
            ELSE 'active' END,
       s.expires_on
  FROM subscribers s JOIN members m ON m.id = s.member_id
UNION ALL
SELECT s.id * 16 + 10, s.id, s.username, 'Muninet-Plan', ':=', CAST(s.plan_id AS TEXT),
       CAST(NULL AS DATE)
  FROM subscribers s
UNION ALL
SELECT s.id * 16 + 11, s.id, s.username, 'Muninet-Framed-IP-Address', ':=', s.static_ip,
       CAST(NULL AS DATE)
  FROM subscribers s WHERE s.static_ip IS NOT NULL
UNION ALL
SELECT s.id * 16 + 12, s.id, s.username, 'Muninet-Framed-Pool', ':=', ip.name,
       CAST(NULL AS DATE)
  FROM subscribers s JOIN ip_pools ip ON ip.id = s.pool_id
 WHERE s.static_ip IS NULL
"""

# A plan's check items, keyed by plan id (FreeRADIUS caches them per plan).
PLAN_VIEW = """
CREATE VIEW radius_plan_check AS
SELECT p.id * 16 + 4 AS id, p.id AS plan_id, 'Simultaneous-Use' AS attribute, ':=' AS op,
       CAST(p.simultaneous_use AS TEXT) AS value
  FROM service_plans p
UNION ALL
SELECT p.id * 16 + 7, p.id, 'Muninet-Max-Monthly-Octets', ':=', CAST(p.data_cap_bytes AS TEXT)
  FROM service_plans p WHERE p.data_cap_bytes IS NOT NULL
UNION ALL
SELECT p.id * 16 + 8, p.id, 'Muninet-Max-Monthly-Session', ':=',
       CAST(p.time_cap_seconds AS TEXT)
  FROM service_plans p WHERE p.time_cap_seconds IS NOT NULL
UNION ALL
SELECT p.id * 16 + 9, p.id, 'Muninet-Cap-Action', ':=', p.cap_action
  FROM service_plans p
"""


# Every write of radius_check copies rows of its definition, radius_check_source.
FILL = f"INSERT INTO radius_check ({_COLUMNS}) SELECT {_COLUMNS} FROM radius_check_source"  # noqa: S608


def _refresh(subscribers: str) -> list[str]:
    """Statements rewriting the rows of the subscribers whose ids `subscribers` selects."""
    return [
        f"DELETE FROM radius_check WHERE subscriber_id IN ({subscribers})",  # noqa: S608 - DDL
        f"{FILL} WHERE subscriber_id IN ({subscribers})",
    ]


_OF_MEMBER = "SELECT id FROM subscribers WHERE member_id = NEW.id"
_OF_POOL = "SELECT id FROM subscribers WHERE pool_id = NEW.id"
_INSERT_NEW = f"{FILL} WHERE subscriber_id = NEW.id"
_DELETE_OLD = "DELETE FROM radius_check WHERE subscriber_id = OLD.id"


def _sqlite_trigger(name: str, event: str, statements: list[str]) -> str:
    body = "".join(f"\n    {statement};" for statement in statements)
    return f"CREATE TRIGGER {name} AFTER {event} FOR EACH ROW BEGIN{body}\nEND"


SQLITE_TRIGGERS = [
    _sqlite_trigger("radius_check_insert", "INSERT ON subscribers", [_INSERT_NEW]),
    _sqlite_trigger("radius_check_update", "UPDATE ON subscribers", [_DELETE_OLD, _INSERT_NEW]),
    _sqlite_trigger("radius_check_delete", "DELETE ON subscribers", [_DELETE_OLD]),
    _sqlite_trigger("radius_check_member", "UPDATE OF status ON members", _refresh(_OF_MEMBER)),
    _sqlite_trigger("radius_check_pool", "UPDATE OF name ON ip_pools", _refresh(_OF_POOL)),
]


def _plpgsql(name: str, body: list[str]) -> str:
    statements = "".join(f"\n    {statement};" for statement in body)
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN"
        f"{statements}\n    RETURN NULL;\nEND $$"
    )


POSTGRES_TRIGGERS = [
    _plpgsql(
        "radius_check_subscriber",
        [
            f"IF TG_OP <> 'INSERT' THEN {_DELETE_OLD}; END IF",
            f"IF TG_OP <> 'DELETE' THEN {_INSERT_NEW}; END IF",
        ],
    ),
    _plpgsql("radius_check_member", _refresh(_OF_MEMBER)),
    _plpgsql("radius_check_pool", _refresh(_OF_POOL)),
    """CREATE TRIGGER radius_check_subscriber AFTER INSERT OR UPDATE OR DELETE ON subscribers
    FOR EACH ROW EXECUTE FUNCTION radius_check_subscriber()""",
    """CREATE TRIGGER radius_check_member AFTER UPDATE OF status ON members
    FOR EACH ROW EXECUTE FUNCTION radius_check_member()""",
    """CREATE TRIGGER radius_check_pool AFTER UPDATE OF name ON ip_pools
    FOR EACH ROW EXECUTE FUNCTION radius_check_pool()""",
]


def _drop_triggers(dialect: str) -> None:
    if dialect == "postgresql":
        for name, table in (
            ("radius_check_subscriber", "subscribers"),
            ("radius_check_member", "members"),
            ("radius_check_pool", "ip_pools"),
        ):
            op.execute(f"DROP TRIGGER {name} ON {table}")
            op.execute(f"DROP FUNCTION {name}()")
    else:
        for name in (
            "radius_check_insert",
            "radius_check_update",
            "radius_check_delete",
            "radius_check_member",
            "radius_check_pool",
        ):
            op.execute(f"DROP TRIGGER {name}")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute("DROP VIEW radius_reply")
    op.execute("DROP VIEW radius_check")
    op.create_table(
        "radius_check",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("attribute", sa.String(length=64), nullable=False),
        sa.Column("op", sa.String(length=2), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_radius_check")),
    )
    with op.batch_alter_table("radius_check", schema=None) as batch_op:
        batch_op.create_index("ix_radius_check_username_id", ["username", "id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_radius_check_subscriber_id"), ["subscriber_id"], unique=False
        )
    with op.batch_alter_table("radacct", schema=None) as batch_op:
        batch_op.create_index(
            "ix_radacct_open_username",
            ["username"],
            unique=False,
            sqlite_where=sa.text("acctstoptime IS NULL"),
            postgresql_where=sa.text("acctstoptime IS NULL"),
        )
    op.execute(SOURCE_VIEW)
    op.execute(PLAN_VIEW)
    op.execute(FILL)
    for statement in POSTGRES_TRIGGERS if dialect == "postgresql" else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    from importlib import import_module

    views = import_module("provisioning.migrations.versions.0003_radius")
    _drop_triggers(op.get_bind().dialect.name)
    op.execute("DROP VIEW radius_plan_check")
    op.execute("DROP VIEW radius_check_source")
    with op.batch_alter_table("radacct", schema=None) as batch_op:
        batch_op.drop_index("ix_radacct_open_username")
    op.drop_table("radius_check")
    op.execute(views.CHECK_VIEW)
    op.execute(views.REPLY_VIEW)
