"""Alembic environment for the store: run by ``Store`` in code, with the connection it passes."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from certfleet.store._models import Base

config = context.config
target_metadata = Base.metadata


def _run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    # the ``alembic`` command line, for writing new revisions: sqlalchemy.url from its options
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url, or run migrations through certfleet.store")
    engine = create_engine(url)
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


_run()
