"""The autopilot's tables: the migration matches the models, goes down and up, and a fresh store has them."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import certfleet.autopilot._tables
from certfleet.store import Base
from certfleet.store._engine import Database

TABLES = {"renewal_states", "alert_destinations", "alert_states", "alert_log", "autopilot_settings"}


def _tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}


def test_the_migration_matches_the_models_and_goes_down_and_up(tmp_path: Path) -> None:
    assert certfleet.autopilot._tables.RenewalStateRow.__tablename__ in TABLES
    db = Database(f"sqlite:///{tmp_path / 'm.db'}", timeout=5)
    db.upgrade()
    assert _tables(db) >= TABLES

    def mine(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        table = getattr(obj, "table", obj)
        return getattr(table, "name", name) in TABLES

    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"include_object": mine}), Base.metadata)
    assert diff == []
    db.downgrade("0003_acme")
    assert not _tables(db) & TABLES
    db.upgrade()
    assert _tables(db) >= TABLES
    db.dispose()
