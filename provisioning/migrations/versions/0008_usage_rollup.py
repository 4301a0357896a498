"""Monthly usage rollup: radacct summed per subscriber and month, kept by triggers

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21

`radacct_monthly` holds, per user name and calendar month, what the usage report
sums over `radacct` (sessions, session time, octets in and out) for the sessions
that started in that month. Triggers on `radacct` keep it equal to that sum in
the same transaction as every accounting write (insert: add the row; update of
the counted columns: take the old values off and add the new ones; delete: take
the row off), so the report reads ~1 row per subscriber instead of every session
of the month, and open sessions are counted with their last interim values, as
before.

A month's bounds are local time (muninet's `month_bounds`), which SQL cannot
compute the same way on SQLite and PostgreSQL: `usage_months` lists them, as
muninet computed them, for 2000-2099; the triggers find a session's month there.
`radius.usage` uses the rollup only when the month's stored bounds equal the ones
it computes (so a change of time zone falls back to summing radacct, and
`radius.rebuild_usage_rollup` refills both tables).

Note for later migrations: SQLite drops a table's triggers when batch mode
rebuilds it: recreate them after a batch change to radacct.
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIRST_YEAR, LAST_YEAR = 2000, 2099
# A month is at most 31 days and a DST hour long: bounds the lookup's range scan.
LONGEST_MONTH = 32 * 86400

_COUNTED = "username, acctstarttime, acctsessiontime, acctinputoctets, acctoutputoctets"


def _month_of(row: str) -> str:
    """The month_start of a radacct row's start time (no row if outside the calendar)."""
    return f"""SELECT m.month_start FROM usage_months m
         WHERE m.month_start <= {row}.acctstarttime
           AND m.month_start > {row}.acctstarttime - {LONGEST_MONTH}
           AND m.month_end > {row}.acctstarttime"""  # noqa: S608 - DDL from constants


def _sqlite_add(row: str) -> str:
    return f"""
    INSERT INTO radacct_monthly
        (username, month_start, sessions, session_time, input_octets, output_octets)
    SELECT {row}.username, m.month_start, 1, {row}.acctsessiontime,
           {row}.acctinputoctets, {row}.acctoutputoctets
      FROM usage_months m
     WHERE m.month_start <= {row}.acctstarttime
       AND m.month_start > {row}.acctstarttime - {LONGEST_MONTH}
       AND m.month_end > {row}.acctstarttime
    ON CONFLICT (username, month_start) DO UPDATE SET
        sessions = sessions + excluded.sessions,
        session_time = session_time + excluded.session_time,
        input_octets = input_octets + excluded.input_octets,
        output_octets = output_octets + excluded.output_octets;
    """  # noqa: S608 - DDL from constants


def _sqlite_subtract(row: str) -> str:
    return f"""
    UPDATE radacct_monthly SET
        sessions = sessions - 1,
        session_time = session_time - {row}.acctsessiontime,
        input_octets = input_octets - {row}.acctinputoctets,
        output_octets = output_octets - {row}.acctoutputoctets
     WHERE username = {row}.username AND month_start = ({_month_of(row)});
    """  # noqa: S608 - DDL from constants


SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER radacct_monthly_insert AFTER INSERT ON radacct
    BEGIN {_sqlite_add("NEW")} END""",
    f"""CREATE TRIGGER radacct_monthly_update AFTER UPDATE OF {_COUNTED} ON radacct
    BEGIN {_sqlite_subtract("OLD")} {_sqlite_add("NEW")} END""",
    f"""CREATE TRIGGER radacct_monthly_delete AFTER DELETE ON radacct
    BEGIN {_sqlite_subtract("OLD")} END""",
]

POSTGRES_FUNCTION = f"""
CREATE FUNCTION radacct_monthly_sum() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    month_key BIGINT;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        {_month_of("OLD")} INTO month_key;
        IF month_key IS NOT NULL THEN
            UPDATE radacct_monthly SET
                sessions = sessions - 1,
                session_time = session_time - OLD.acctsessiontime,
                input_octets = input_octets - OLD.acctinputoctets,
                output_octets = output_octets - OLD.acctoutputoctets
             WHERE username = OLD.username AND month_start = month_key;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        month_key := NULL;
        {_month_of("NEW")} INTO month_key;
        IF month_key IS NOT NULL THEN
            INSERT INTO radacct_monthly
                (username, month_start, sessions, session_time, input_octets, output_octets)
            VALUES (NEW.username, month_key, 1, NEW.acctsessiontime,
                    NEW.acctinputoctets, NEW.acctoutputoctets)
            ON CONFLICT (username, month_start) DO UPDATE SET
                sessions = radacct_monthly.sessions + 1,
                session_time = radacct_monthly.session_time + EXCLUDED.session_time,
                input_octets = radacct_monthly.input_octets + EXCLUDED.input_octets,
                output_octets = radacct_monthly.output_octets + EXCLUDED.output_octets;
        END IF;
    END IF;
    RETURN NULL;
END
$$
"""  # noqa: S608 - DDL from constants

POSTGRES_TRIGGERS = [
    POSTGRES_FUNCTION,
    """CREATE TRIGGER radacct_monthly_insert AFTER INSERT ON radacct
    FOR EACH ROW EXECUTE FUNCTION radacct_monthly_sum()""",
    f"""CREATE TRIGGER radacct_monthly_update AFTER UPDATE OF {_COUNTED} ON radacct
    FOR EACH ROW EXECUTE FUNCTION radacct_monthly_sum()""",
    """CREATE TRIGGER radacct_monthly_delete AFTER DELETE ON radacct
    FOR EACH ROW EXECUTE FUNCTION radacct_monthly_sum()""",
]

BACKFILL = """
INSERT INTO radacct_monthly
    (username, month_start, sessions, session_time, input_octets, output_octets)
SELECT r.username, m.month_start, COUNT(*), SUM(r.acctsessiontime),
       SUM(r.acctinputoctets), SUM(r.acctoutputoctets)
  FROM usage_months m
  JOIN radacct r ON r.acctstarttime >= m.month_start AND r.acctstarttime < m.month_end
 GROUP BY r.username, m.month_start
"""


def month_rows() -> list[dict[str, object]]:
    """The calendar months in this process's local time, as muninet's month_bounds."""
    rows: list[dict[str, object]] = []
    for year in range(FIRST_YEAR, LAST_YEAR + 1):
        for month in range(1, 13):
            start = datetime(year, month, 1).astimezone()
            end = datetime(year + month // 12, month % 12 + 1, 1).astimezone()
            rows.append(
                {
                    "month_start": int(start.timestamp()),
                    "month_end": int(end.timestamp()),
                    "month": f"{year:04d}-{month:02d}",
                }
            )
    return rows


def upgrade() -> None:
    months = op.create_table(
        "usage_months",
        sa.Column("month_start", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("month_end", sa.BigInteger(), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.PrimaryKeyConstraint("month_start", name=op.f("pk_usage_months")),
        sa.UniqueConstraint("month", name=op.f("uq_usage_months_month")),
    )
    op.create_table(
        "radacct_monthly",
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("month_start", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.Column("session_time", sa.BigInteger(), nullable=False),
        sa.Column("input_octets", sa.BigInteger(), nullable=False),
        sa.Column("output_octets", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("username", "month_start", name=op.f("pk_radacct_monthly")),
    )
    with op.batch_alter_table("radacct_monthly", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_radacct_monthly_month_start"), ["month_start"], unique=False
        )
    assert months is not None
    op.bulk_insert(months, month_rows())
    op.execute(BACKFILL)
    dialect = op.get_bind().dialect.name
    for statement in POSTGRES_TRIGGERS if dialect == "postgresql" else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    for name in ("radacct_monthly_insert", "radacct_monthly_update", "radacct_monthly_delete"):
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER {name} ON radacct")
        else:
            op.execute(f"DROP TRIGGER {name}")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION radacct_monthly_sum()")
    with op.batch_alter_table("radacct_monthly", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_radacct_monthly_month_start"))
    op.drop_table("radacct_monthly")
    op.drop_table("usage_months")
