"""Usage rollup keyed by month first; a covering index from user name to member

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-21

The monthly report reads one month of `radacct_monthly` (~1 row per
subscriber) and joins each row to its subscriber's member. Measured over 5
million `radacct` rows (~33,000 rows in the month, bench/radius.py), most of
its SQL time went to two kinds of lookup per row:

- the rows of a month were found through `ix_radacct_monthly_month_start` and
  then fetched one by one by rowid from a table ordered by (user name, month).
  The key becomes (month_start, username), and on SQLite the table is
  WITHOUT ROWID: a month's rows lie together in key order and are read as one
  range, with no separate index (the month_start index goes; the triggers'
  upserts name both key columns, in any order);
- each user name was looked up in `uq_subscribers_username` and then in the
  subscribers table (wide rows: password forms) for its member id.
  `ix_subscribers_username_member_id` answers that from the index alone.

SQLite cannot change a primary key in place: the table is copied. SQLite drops
or re-checks the triggers on `radacct` that name `radacct_monthly` when that
table is renamed, so they are dropped first and recreated from their stored
SQL. PostgreSQL changes the key in place (no WITHOUT ROWID there).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = "username, month_start, sessions, session_time, input_octets, output_octets"


def _rebuild_sqlite(key: list[str], with_rowid: bool) -> None:
    """Copy radacct_monthly into a table with this key; the radacct triggers kept."""
    bind = op.get_bind()
    triggers = bind.execute(
        sa.text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'radacct'"
        )
    ).all()
    for name, _ in triggers:
        op.execute(f'DROP TRIGGER "{name}"')
    op.create_table(
        "radacct_monthly_new",
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("month_start", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.Column("session_time", sa.BigInteger(), nullable=False),
        sa.Column("input_octets", sa.BigInteger(), nullable=False),
        sa.Column("output_octets", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*key, name=op.f("pk_radacct_monthly")),
        sqlite_with_rowid=with_rowid,
    )
    op.execute(
        f"INSERT INTO radacct_monthly_new ({_COLUMNS}) SELECT {_COLUMNS} FROM radacct_monthly"  # noqa: S608 - constants
    )
    op.drop_table("radacct_monthly")
    op.rename_table("radacct_monthly_new", "radacct_monthly")
    for _, sql in triggers:
        op.execute(sql)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(["month_start", "username"], with_rowid=False)
    else:
        op.drop_index(op.f("ix_radacct_monthly_month_start"), table_name="radacct_monthly")
        op.drop_constraint(op.f("pk_radacct_monthly"), "radacct_monthly", type_="primary")
        op.create_primary_key(
            op.f("pk_radacct_monthly"), "radacct_monthly", ["month_start", "username"]
        )
    op.create_index(
        op.f("ix_subscribers_username_member_id"),
        "subscribers",
        ["username", "member_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_subscribers_username_member_id"), table_name="subscribers")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(["username", "month_start"], with_rowid=True)
    else:
        op.drop_constraint(op.f("pk_radacct_monthly"), "radacct_monthly", type_="primary")
        op.create_primary_key(
            op.f("pk_radacct_monthly"), "radacct_monthly", ["username", "month_start"]
        )
    op.create_index(
        op.f("ix_radacct_monthly_month_start"), "radacct_monthly", ["month_start"], unique=False
    )
