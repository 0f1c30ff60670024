"""What a console form made that is shown once (a new API token, a new client deployment link),
waiting in the store for the page after the form's redirect, sealed with the store's vault, so
that any console process sharing the store can show it.

Revision ID: 0011_reveals
Revises: 0010_zones
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from certfleet.store._models import UTCDateTime

revision = "0011_reveals"
down_revision = "0010_zones"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_reveals",
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["console_accounts.id"],
            name="fk_console_reveals_account_id_console_accounts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_hash", name="pk_console_reveals"),
    )
    op.create_index("ix_console_reveals_account_id", "console_reveals", ["account_id"])
    op.create_index("ix_console_reveals_expires_at", "console_reveals", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_console_reveals_expires_at", table_name="console_reveals")
    op.drop_index("ix_console_reveals_account_id", table_name="console_reveals")
    op.drop_table("console_reveals")
