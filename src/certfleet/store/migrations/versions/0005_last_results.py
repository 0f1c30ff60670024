"""Each node's last deploy result per lineage, in a table of its own (``deployment_last_results``).

``status`` and the console's dashboard want, for every node of a lineage, its newest result; read
from the history, that cost grows with every deploy. This table holds one row per (lineage,
node) pointing at that result, kept by the store in the transaction of every write of a node's
result (``start_deployment``'s ``interrupted`` placeholders, ``record_node``,
``finish_deployment``, ``mark_interrupted``, ``record_deployment``), and is filled here from the
history already recorded (newest deployment first, as the history was read before).

Self-contained: it creates, fills and drops only its own table and index, and reads only tables
of 0001_initial (``deployments``, ``deployment_results``), whose columns it reads no later
migration changes, so the backfill is the same whichever revision a store comes from.

Revision ID: 0005_last_results
Revises: 0004_acme
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_last_results"
down_revision = "0004_acme"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployment_last_results",
        sa.Column("lineage_id", sa.Integer(), nullable=False),
        sa.Column("node_name", sa.String(64), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("lineage_id", "node_name", name="pk_deployment_last_results"),
        sa.ForeignKeyConstraint(
            ["lineage_id"], ["lineages.id"], name="fk_deployment_last_results_lineage_id_lineages", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["result_id"],
            ["deployment_results.id"],
            name="fk_deployment_last_results_result_id_deployment_results",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_deployment_last_results_result_id", "deployment_last_results", ["result_id"])
    # window functions: SQLite 3.25 and later, every PostgreSQL certfleet supports
    op.execute(
        """
        INSERT INTO deployment_last_results (lineage_id, node_name, result_id)
        SELECT lineage_id, node_name, id FROM (
            SELECT d.lineage_id, r.node_name, r.id,
                   ROW_NUMBER() OVER (
                       PARTITION BY d.lineage_id, r.node_name ORDER BY d.id DESC, r.id DESC
                   ) AS newest
            FROM deployment_results r JOIN deployments d ON d.id = r.deployment_id
        ) ranked
        WHERE newest = 1
        """
    )


def downgrade() -> None:
    op.drop_index("ix_deployment_last_results_result_id", table_name="deployment_last_results")
    op.drop_table("deployment_last_results")
