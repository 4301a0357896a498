"""mail rules (vacation, forwarding, Sieve script) and Unicode login addresses

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Pigeonhole's dict script location reads two keys per user:
#   priv/sieve/name/<name> -> data id, priv/sieve/data/<id> -> script text.
# This view gives Dovecot's SQL dict exactly those rows, from muninet's tables.
SIEVE_VIEW = """
CREATE VIEW sieve_scripts AS
SELECT m.address AS username, 'muninet' AS name, r.sieve_id AS id, r.sieve_script AS script
  FROM mail_rules r JOIN mailboxes m ON m.id = r.mailbox_id
 WHERE r.sieve_script <> ''
"""


def upgrade() -> None:
    op.create_table(
        "mail_rules",
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("vacation_enabled", sa.Boolean(), nullable=False),
        sa.Column("vacation_subject", sa.String(length=200), nullable=False),
        sa.Column("vacation_body", sa.Text(), nullable=False),
        sa.Column("vacation_days", sa.Integer(), nullable=False),
        sa.Column("vacation_start", sa.Date(), nullable=True),
        sa.Column("vacation_end", sa.Date(), nullable=True),
        sa.Column("forward_to", sa.JSON(), nullable=False),
        sa.Column("forward_keep_copy", sa.Boolean(), nullable=False),
        sa.Column("sieve_id", sa.String(length=40), nullable=False),
        sa.Column("sieve_script", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_mail_rules_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("mailbox_id", name=op.f("pk_mail_rules")),
    )
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unicode_address", sa.String(length=320), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_mailboxes_unicode_address"), ["unicode_address"]
        )
    _fill_unicode_addresses()
    # Note for later migrations: SQLite's batch mode rebuilds a table by renaming,
    # which fails while a view names it; drop sieve_scripts around such changes.
    op.execute(SIEVE_VIEW)


def _fill_unicode_addresses() -> None:
    """Existing mailboxes on IDN domains get their Unicode login form."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT m.id, m.address, d.name FROM mailboxes m "
            "JOIN domains d ON d.id = m.domain_id WHERE d.name <> d.ascii_name"
        )
    ).all()
    for mailbox_id, address, domain in rows:
        local = address.rpartition("@")[0]
        bind.execute(
            sa.text("UPDATE mailboxes SET unicode_address = :value WHERE id = :id"),
            {"value": f"{local}@{domain}", "id": mailbox_id},
        )


def downgrade() -> None:
    op.execute("DROP VIEW sieve_scripts")
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_mailboxes_unicode_address"), type_="unique")
        batch_op.drop_column("unicode_address")
    op.drop_table("mail_rules")
