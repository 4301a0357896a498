"""Content filter settings per domain (spam thresholds, virus action)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite rebuilds `domains` in batch mode; the sieve_scripts view names mailboxes only.
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spam_add_header_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("spam_reject_score", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "virus_action",
                sa.Enum(
                    "reject",
                    "quarantine",
                    name="domain_virus_action",
                    native_enum=False,
                    create_constraint=True,
                    length=20,
                ),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.drop_column("virus_action")
        batch_op.drop_column("spam_reject_score")
        batch_op.drop_column("spam_add_header_score")
