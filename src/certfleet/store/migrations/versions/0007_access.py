"""Console access: roles and lineage scopes for accounts and API tokens, token expiry and parents,
a version on each node (edits made on an older view are refused), and deploy output kept only
redacted.

Every existing account becomes an admin (it was the one kind there was); existing tokens keep
their account's role and expire 90 days from now. The login counters start over, and the output
of earlier deployments is redacted as new output is.

Revision ID: 0007_access
Revises: 0006_autopilot
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

from certfleet.redact import clean
from certfleet.store._models import UTCDateTime

revision = "0007_access"
down_revision = "0006_autopilot"
branch_labels = None
depends_on = None

_TOKEN_DAYS = 90
_MAX_OUTPUT = 64 * 1024


def upgrade() -> None:
    # plain ALTER TABLE ADD/DROP COLUMN: console_accounts and nodes are what other tables' ON
    # DELETE CASCADE keys point at, so SQLite's copy-and-rename would empty those tables
    op.add_column("console_accounts", sa.Column("role", sa.String(16), nullable=False, server_default="viewer"))
    op.add_column("console_accounts", sa.Column("lineages", sa.JSON(), nullable=True))
    op.execute(sa.text("UPDATE console_accounts SET role = 'admin'"))
    op.drop_column("console_accounts", "is_admin")

    op.add_column("nodes", sa.Column("version", sa.Integer(), nullable=False, server_default="1"))

    # nothing points at console_api_tokens: its copy is safe, and it makes the new columns NOT NULL
    with op.batch_alter_table("console_api_tokens") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=True))
        batch.add_column(sa.Column("lineages", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("expires_at", UTCDateTime(), nullable=True))
    tokens = sa.table("console_api_tokens", sa.column("role", sa.String), sa.column("expires_at", UTCDateTime()))
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=_TOKEN_DAYS)
    op.execute(tokens.update().values(role="admin", expires_at=expires))
    with op.batch_alter_table("console_api_tokens") as batch:
        batch.alter_column("role", existing_type=sa.String(16), nullable=False)
        batch.alter_column("expires_at", existing_type=UTCDateTime(), nullable=False)
        batch.create_index("ix_console_api_tokens_parent_id", ["parent_id"])

    op.execute(sa.text("DELETE FROM console_login_failures"))

    results = sa.table("deployment_results", sa.column("id", sa.Integer), sa.column("output", sa.Text))
    conn = op.get_bind()
    for row_id, output in conn.execute(sa.select(results.c.id, results.c.output)).all():
        kept = clean(output or "", _MAX_OUTPUT)
        if kept != output:
            conn.execute(results.update().where(results.c.id == row_id).values(output=kept))


def downgrade() -> None:
    with op.batch_alter_table("console_api_tokens") as batch:
        batch.drop_index("ix_console_api_tokens_parent_id")
        batch.drop_column("expires_at")
        batch.drop_column("parent_id")
        batch.drop_column("lineages")
        batch.drop_column("role")
    op.drop_column("nodes", "version")
    op.add_column("console_accounts", sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.execute(sa.text("UPDATE console_accounts SET is_admin = (role = 'admin')"))
    op.drop_column("console_accounts", "lineages")
    op.drop_column("console_accounts", "role")
