"""The lifecycle: withdrawn versions, and deployments recorded before they touch a node.

Revision ID: 0003_lifecycle
Revises: 0002_console

Columns are only added (and dropped on the way down): SQLite would otherwise copy the tables,
and dropping ``deployments`` with foreign keys on would cascade to every node result.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from certfleet.store._models import UTCDateTime

revision = "0003_lifecycle"
down_revision = "0002_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("versions", sa.Column("withdrawn_at", UTCDateTime(), nullable=True))
    # deployments recorded before 0003 all finished: only finished ones were ever written
    op.add_column("deployments", sa.Column("state", sa.String(32), nullable=False, server_default="finished"))
    op.add_column("deployments", sa.Column("rollback", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("deployments", sa.Column("host", sa.String(255), nullable=True))
    op.add_column("deployments", sa.Column("pid", sa.Integer(), nullable=True))


def downgrade() -> None:
    for column in ("pid", "host", "rollback", "state"):
        op.drop_column("deployments", column)
    op.drop_column("versions", "withdrawn_at")
