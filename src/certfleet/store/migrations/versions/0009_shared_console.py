"""Console state in the store, for several console processes on one store: each node's steps while
a deployment runs, and imports shown but not yet confirmed (their files sealed with the store's
vault).

Revision ID: 0009_shared_console
Revises: 0008_jobs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from certfleet.store._models import UTCDateTime

revision = "0009_shared_console"
down_revision = "0008_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployment_progress",
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("node_name", sa.String(64), nullable=False),
        sa.Column("steps", sa.String(255), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name="fk_deployment_progress_deployment_id_deployments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("deployment_id", "node_name", name="pk_deployment_progress"),
    )
    op.create_table(
        "console_pending_imports",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("lineage", sa.String(64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["console_accounts.id"],
            name="fk_console_pending_imports_account_id_console_accounts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name="pk_console_pending_imports"),
    )
    op.create_index("ix_console_pending_imports_account_id", "console_pending_imports", ["account_id"])
    op.create_index("ix_console_pending_imports_expires_at", "console_pending_imports", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_console_pending_imports_expires_at", table_name="console_pending_imports")
    op.drop_index("ix_console_pending_imports_account_id", table_name="console_pending_imports")
    op.drop_table("console_pending_imports")
    op.drop_table("deployment_progress")
