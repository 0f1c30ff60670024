"""Migration 0002_console: it creates exactly the console's models, and goes down and up again."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import certfleet.console.models
from certfleet.store import Base, Store
from certfleet.store._engine import Database

CONSOLE_TABLES = {
    "console_accounts",
    "console_sessions",
    "console_setup_tokens",
    "console_api_tokens",
    "console_login_failures",
    "console_client_profiles",
    "console_client_users",
    "console_client_links",
}


def _tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}


def test_console_migration_matches_the_models_and_goes_down_and_up(tmp_path: Path) -> None:
    assert certfleet.console.models.AccountRow.__tablename__ in CONSOLE_TABLES
    db = Database(f"sqlite:///{tmp_path / 'm.db'}", timeout=5)
    db.upgrade("0001_initial")
    assert not (_tables(db) & CONSOLE_TABLES)
    db.upgrade()
    assert db.current() == db.heads()
    assert _tables(db) >= CONSOLE_TABLES

    def include(name: str | None, type_: str, parents: dict[str, str | None]) -> bool:
        if type_ == "schema":
            return True
        return (name if type_ == "table" else parents.get("table_name")) in CONSOLE_TABLES

    def mine(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        table = getattr(obj, "table", obj)
        return getattr(table, "name", name) in CONSOLE_TABLES

    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": include, "include_object": mine})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []  # the console's models and its migration describe the same schema

    db.downgrade("0001_initial")
    assert not (_tables(db) & CONSOLE_TABLES)
    assert db.current() == {"0001_initial"}
    db.upgrade()
    assert _tables(db) >= CONSOLE_TABLES
    db.dispose()


def test_a_fresh_store_has_the_console_tables(tmp_path: Path) -> None:
    with Store.init(tmp_path / "home") as store:
        assert store.schema_revision() == store._db.heads()
        with store.session() as s:
            assert s.get(certfleet.console.models.AccountRow, 1) is None
