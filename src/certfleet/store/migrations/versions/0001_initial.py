"""The fleet: lineages, versions, nodes, targets, trust anchors, deployments, audit, settings.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from certfleet.store._models import UTCDateTime

revision = "0001_initial"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # lineages and versions refer to each other; SQLite accepts a foreign key to a table made
    # later (and cannot add one afterwards without copying the table), other backends the reverse
    sqlite = op.get_bind().dialect.name == "sqlite"
    active_fk = (
        [
            sa.ForeignKeyConstraint(
                ["active_version_id"],
                ["versions.id"],
                name="fk_lineages_active_version_id_versions",
                ondelete="SET NULL",
            )
        ]
        if sqlite
        else []
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_settings"),
    )
    op.create_table(
        "lineages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key_spec", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(1024), nullable=True),
        sa.Column("names", sa.JSON(), nullable=False),
        sa.Column("active_version_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lineages"),
        sa.UniqueConstraint("name", name="uq_lineages_name"),
        *active_fk,
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lineage_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("key_spec", sa.String(16), nullable=False),
        sa.Column("public_key_id", sa.String(64), nullable=False),
        sa.Column("key_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("names", sa.JSON(), nullable=False),
        sa.Column("csr_pem", sa.Text(), nullable=True),
        sa.Column("leaf_pem", sa.Text(), nullable=True),
        sa.Column("chain_pem", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("not_before", UTCDateTime(), nullable=True),
        sa.Column("not_after", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["lineage_id"], ["lineages.id"], name="fk_versions_lineage_id_lineages", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_versions"),
        sa.UniqueConstraint("lineage_id", "number", name="uq_versions_lineage_id_number"),
    )
    op.create_index("ix_versions_lineage_id", "versions", ["lineage_id"])
    op.create_index("ix_versions_public_key_id", "versions", ["public_key_id"])
    op.create_index("ix_versions_fingerprint", "versions", ["fingerprint"])
    if not sqlite:
        op.create_foreign_key(
            "fk_lineages_active_version_id_versions",
            "lineages",
            "versions",
            ["active_version_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("names", sa.JSON(), nullable=False),
        sa.Column("transport", sa.String(512), nullable=False),
        sa.Column("test_cmd", sa.Text(), nullable=True),
        sa.Column("reload_cmd", sa.Text(), nullable=True),
        sa.Column("probe", sa.String(300), nullable=True),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
        sa.UniqueConstraint("name", name="uq_nodes_name"),
    )
    op.create_table(
        "targets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_targets_node_id_nodes", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_targets"),
    )
    op.create_index("ix_targets_node_id", "targets", ["node_id"])
    op.create_table(
        "lineage_nodes",
        sa.Column("lineage_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lineage_id"], ["lineages.id"], name="fk_lineage_nodes_lineage_id_lineages", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_lineage_nodes_node_id_nodes", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("lineage_id", "node_id", name="pk_lineage_nodes"),
    )
    op.create_table(
        "trust_anchors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(1024), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("added_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trust_anchors"),
        sa.UniqueConstraint("fingerprint", name="uq_trust_anchors_fingerprint"),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lineage_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lineage_id"], ["lineages.id"], name="fk_deployments_lineage_id_lineages", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"], ["versions.id"], name="fk_deployments_version_id_versions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
    )
    op.create_index("ix_deployments_lineage_id", "deployments", ["lineage_id"])
    op.create_table(
        "deployment_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("node_name", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("failed_step", sa.String(32), nullable=True),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("served_fingerprint", sa.String(64), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name="fk_deployment_results_deployment_id_deployments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deployment_results"),
    )
    op.create_index("ix_deployment_results_deployment_id", "deployment_results", ["deployment_id"])
    op.create_index("ix_deployment_results_node_name", "deployment_results", ["node_name"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    for table in ("audit_log", "deployment_results", "deployments", "trust_anchors", "lineage_nodes", "targets"):
        op.drop_table(table)
    op.drop_table("nodes")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_lineages_active_version_id_versions", "lineages", type_="foreignkey")
    op.drop_table("versions")
    op.drop_table("lineages")
    op.drop_table("settings")
