"""The autopilot: each lineage's renewal state, alert destinations, alert states, alerts sent,
settings.

Revision ID: 0006_autopilot
Revises: 0005_last_results
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from certfleet.store._models import UTCDateTime

revision = "0006_autopilot"
down_revision = "0005_last_results"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "renewal_states",
        sa.Column("lineage_id", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_outcome", sa.String(16), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_success_at", UTCDateTime(), nullable=True),
        sa.Column("last_version", sa.Integer(), nullable=True),
        sa.Column("retry_after", UTCDateTime(), nullable=True),
        sa.Column("next_renewal_at", UTCDateTime(), nullable=True),
        sa.Column("next_reason", sa.String(32), nullable=True),
        sa.Column("ari_fingerprint", sa.String(64), nullable=True),
        sa.Column("ari_cert_id", sa.String(256), nullable=True),
        sa.Column("ari_start", UTCDateTime(), nullable=True),
        sa.Column("ari_end", UTCDateTime(), nullable=True),
        sa.Column("ari_explanation", sa.String(1024), nullable=True),
        sa.Column("ari_ask_again", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lineage_id"], ["lineages.id"], name="fk_renewal_states_lineage_id_lineages", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("lineage_id", name="pk_renewal_states"),
    )
    op.create_table(
        "alert_destinations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("shown", sa.String(1024), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_destinations"),
    )
    op.create_table(
        "alert_states",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("lineage", sa.String(64), nullable=True),
        sa.Column("node", sa.String(64), nullable=True),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_sent_at", UTCDateTime(), nullable=True),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_states"),
        sa.UniqueConstraint("key", name="uq_alert_states_key"),
    )
    op.create_table(
        "alert_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_log"),
    )
    op.create_table(
        "autopilot_settings",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_autopilot_settings"),
    )


def downgrade() -> None:
    op.drop_table("autopilot_settings")
    op.drop_table("alert_log")
    op.drop_table("alert_states")
    op.drop_table("alert_destinations")
    op.drop_table("renewal_states")
