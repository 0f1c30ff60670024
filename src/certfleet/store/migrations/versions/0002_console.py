"""The console: accounts, sessions, setup and API tokens, login backoff, client deployment.

Revision ID: 0002_console
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from certfleet.store._models import UTCDateTime

revision = "0002_console"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_login_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_console_accounts"),
        sa.UniqueConstraint("username", name="uq_console_accounts_username"),
    )
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("address", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_console_sessions"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["console_accounts.id"],
            name="fk_console_sessions_account_id_console_accounts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_console_sessions_account_id", "console_sessions", ["account_id"])
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    op.create_table(
        "console_setup_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_console_setup_tokens"),
    )
    op.create_table(
        "console_api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_console_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_console_api_tokens_token_hash"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["console_accounts.id"],
            name="fk_console_api_tokens_account_id_console_accounts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_console_api_tokens_account_id", "console_api_tokens", ["account_id"])
    op.create_table(
        "console_login_failures",
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_at", UTCDateTime(), nullable=False),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_console_login_failures"),
    )
    op.create_table(
        "console_client_profiles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("hostname", sa.String(300), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("link_hours", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_console_client_profiles"),
        sa.UniqueConstraint("name", name="uq_console_client_profiles_name"),
    )
    op.create_table(
        "console_client_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_console_client_users"),
        sa.UniqueConstraint("profile_id", "username", name="uq_console_client_users_profile_username"),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["console_client_profiles.id"],
            name="fk_console_client_users_profile_id_console_client_profiles",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_console_client_users_profile_id", "console_client_users", ["profile_id"])
    op.create_table(
        "console_client_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("used_from", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_console_client_links"),
        sa.UniqueConstraint("token_hash", name="uq_console_client_links_token_hash"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["console_client_users.id"],
            name="fk_console_client_links_user_id_console_client_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_console_client_links_user_id", "console_client_links", ["user_id"])


def downgrade() -> None:
    op.drop_table("console_client_links")
    op.drop_table("console_client_users")
    op.drop_table("console_client_profiles")
    op.drop_table("console_login_failures")
    op.drop_table("console_api_tokens")
    op.drop_table("console_setup_tokens")
    op.drop_table("console_sessions")
    op.drop_table("console_accounts")
