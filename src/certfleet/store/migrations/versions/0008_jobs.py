"""Jobs and workers: a ``jobs`` table (deploys of one node each, taken by ``certfleet worker``
with a lease), a zone on each node (which workers may take its jobs), and one result per node in
a deployment, enforced by the database.

Revision ID: 0008_jobs
Revises: 0007_access
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from certfleet.store._models import UTCDateTime

revision = "0008_jobs"
down_revision = "0007_access"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column(
            "deployment_id",
            sa.Integer(),
            sa.ForeignKey("deployments.id", ondelete="CASCADE", name="fk_jobs_deployment_id_deployments"),
            nullable=True,
        ),
        sa.Column("lineage", sa.String(64), nullable=False),
        sa.Column("node", sa.String(64), nullable=True),
        sa.Column("zone", sa.String(64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_token", sa.String(64), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("deployment_id", "node", name="uq_jobs_deployment_id"),
    )
    op.create_index("ix_jobs_state", "jobs", ["state", "zone"])
    op.create_index("ix_jobs_deployment_id", "jobs", ["deployment_id"])
    # plain ADD COLUMN: nodes is what other tables' ON DELETE CASCADE keys point at
    op.add_column("nodes", sa.Column("zone", sa.String(64), nullable=True))
    # one result per node in a deployment (the store always kept it so; a duplicate, if any, is
    # an older copy of the same node's result)
    results = sa.table(
        "deployment_results", sa.column("id", sa.Integer), sa.column("deployment_id"), sa.column("node_name")
    )
    newest = (
        sa.select(sa.func.max(results.c.id)).group_by(results.c.deployment_id, results.c.node_name).scalar_subquery()
    )
    op.execute(results.delete().where(results.c.id.not_in(newest)))
    op.create_index(
        "uq_deployment_results_deployment_id_node_name",
        "deployment_results",
        ["deployment_id", "node_name"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_deployment_results_deployment_id_node_name", table_name="deployment_results")
    op.drop_column("nodes", "zone")
    op.drop_index("ix_jobs_deployment_id", table_name="jobs")
    op.drop_index("ix_jobs_state", table_name="jobs")
    op.drop_table("jobs")
