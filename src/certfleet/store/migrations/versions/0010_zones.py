"""Probes by zone: the last probe of each node made by a worker of its zone (what the node
served, when, and which worker saw it), for ``status`` and the console to show when the node is
not reachable from where they run.

Revision ID: 0010_zones
Revises: 0009_shared_console
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from certfleet.store._models import UTCDateTime

revision = "0010_zones"
down_revision = "0009_shared_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN: nodes is what other tables' ON DELETE CASCADE keys point at
    op.add_column("nodes", sa.Column("probed", sa.JSON(), nullable=True))
    op.add_column("nodes", sa.Column("probed_at", UTCDateTime(), nullable=True))
    op.add_column("nodes", sa.Column("probed_by", sa.String(255), nullable=True))


def downgrade() -> None:
    op.drop_column("nodes", "probed_by")
    op.drop_column("nodes", "probed_at")
    op.drop_column("nodes", "probed")
