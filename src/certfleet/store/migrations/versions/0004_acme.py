"""Issuing: issuers (ACME accounts, the manual CA), each lineage's issuers in order and policy,
which issuer made each version, revocations.

Revision ID: 0004_acme
Revises: 0003_lifecycle
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from certfleet.store._models import UTCDateTime

revision = "0004_acme"
down_revision = "0003_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "issuers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("directory_url", sa.String(1024), nullable=True),
        sa.Column("account_url", sa.String(1024), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("contact", sa.JSON(), nullable=False),
        sa.Column("eab_kid", sa.String(256), nullable=True),
        sa.Column("profile", sa.String(64), nullable=True),
        sa.Column("ca_bundle_pem", sa.Text(), nullable=True),
        sa.Column("caa_identities", sa.JSON(), nullable=False),
        sa.Column("terms_of_service", sa.String(1024), nullable=True),
        sa.Column("key_spec", sa.String(16), nullable=True),
        sa.Column("key_thumbprint", sa.String(64), nullable=True),
        sa.Column("key_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("next_key_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("key_changed_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_issuers"),
        sa.UniqueConstraint("name", name="uq_issuers_name"),
    )
    op.create_table(
        "lineage_issuers",
        sa.Column("lineage_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("issuer_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lineage_id"], ["lineages.id"], name="fk_lineage_issuers_lineage_id_lineages", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["issuer_id"], ["issuers.id"], name="fk_lineage_issuers_issuer_id_issuers", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("lineage_id", "position", name="pk_lineage_issuers"),
    )
    op.create_index("ix_lineage_issuers_issuer_id", "lineage_issuers", ["issuer_id"])
    op.create_table(
        "lineage_policies",
        sa.Column("lineage_id", sa.Integer(), nullable=False),
        sa.Column("solvers", sa.JSON(), nullable=False),
        sa.Column("profile", sa.String(64), nullable=True),
        sa.Column("preferred_chain", sa.String(256), nullable=True),
        sa.Column("reuse_key", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lineage_id"], ["lineages.id"], name="fk_lineage_policies_lineage_id_lineages", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("lineage_id", name="pk_lineage_policies"),
    )
    op.create_table(
        "issuances",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("issuer_name", sa.String(64), nullable=False),
        sa.Column("order_url", sa.String(1024), nullable=True),
        sa.Column("tried", sa.JSON(), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"], ["versions.id"], name="fk_issuances_version_id_versions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("version_id", name="pk_issuances"),
    )
    op.create_table(
        "revocations",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("issuer_name", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"], ["versions.id"], name="fk_revocations_version_id_versions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("version_id", name="pk_revocations"),
    )


def downgrade() -> None:
    op.drop_table("revocations")
    op.drop_table("issuances")
    op.drop_table("lineage_policies")
    op.drop_index("ix_lineage_issuers_issuer_id", table_name="lineage_issuers")
    op.drop_table("lineage_issuers")
    op.drop_table("issuers")
