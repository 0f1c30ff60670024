"""Migrations 0002_console and 0007_access (the last of the chain 0001 → 0002 → 0003_lifecycle →
0004_acme → 0005_last_results → 0006_autopilot → 0007_access): together they create exactly the
console's models, go down and up again, and 0007 keeps what was there (accounts become admins,
nothing cascades away)."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import certfleet.console.models
from certfleet.store import Base, Store
from certfleet.store._engine import Database
from conftest import PKI

CONSOLE_TABLES = {
    "console_accounts",
    "console_sessions",
    "console_setup_tokens",
    "console_api_tokens",
    "console_login_failures",
    "console_client_profiles",
    "console_client_users",
    "console_client_links",
    "console_pending_imports",
    "console_reveals",
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
        assert store.schema_revision() == store._db.heads()  # 0002_console and every later one
        assert _tables(store._db) >= CONSOLE_TABLES
        with store.session() as s:
            assert s.get(certfleet.console.models.AccountRow, 1) is None


def test_access_migration_keeps_accounts_sessions_and_tokens_and_redacts_old_output(tmp_path: Path, pki: PKI) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}", timeout=5)
    db.upgrade("0002_console")
    now = "2026-01-01 00:00:00"
    leaked = "uid=0(root)\n" + pki.leaf.key_pem().decode() + "exit 1"
    rows = [
        ("console_accounts", "id, username, password_hash, is_admin, created_at", (1, "admin", "x", 1, now)),
        ("console_sessions", "token_hash, account_id, csrf_token, created_at, last_seen_at, expires_at",
         ("a" * 64, 1, "c", now, now, now)),
        ("console_api_tokens", "id, name, token_hash, account_id, created_at", (1, "ci", "b" * 64, 1, now)),
        ("console_login_failures", "key, failures, last_at", ("account:admin", 9, now)),
        ("lineages", "id, name, key_spec, names, created_at, updated_at", (1, "web", "ec:p256", "[]", now, now)),
        ("versions", "id, lineage_id, number, state, key_spec, public_key_id, key_sealed, names, created_at",
         (1, 1, 1, "issued", "ec:p256", "x", b"\0", "[]", now)),
        ("nodes", "id, name, names, transport, options, created_at, updated_at",
         (1, "main", "[]", "local", "{}", now, now)),
        ("deployments", "id, lineage_id, version_id, actor, started_at, finished_at", (1, 1, 1, "me", now, now)),
        ("deployment_results", "id, deployment_id, node_name, outcome, output, started_at, finished_at",
         (1, 1, "main", "failed", leaked, now, now)),
    ]  # fmt: skip
    with db.engine.begin() as conn:
        for table, columns, values in rows:
            marks = ", ".join("?" * len(values))
            conn.exec_driver_sql(f"INSERT INTO {table} ({columns}) VALUES ({marks})", values)  # noqa: S608 (the test's own names)
    db.upgrade("0007_access")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT role, lineages FROM console_accounts").all() == [("admin", None)]
        assert conn.exec_driver_sql("SELECT count(*) FROM console_sessions").scalar() == 1  # nothing cascaded away
        role, expires = conn.exec_driver_sql("SELECT role, expires_at FROM console_api_tokens").one()
        assert role == "admin" and expires > now
        assert conn.exec_driver_sql("SELECT count(*) FROM console_login_failures").scalar() == 0
        assert conn.exec_driver_sql("SELECT version FROM nodes").scalar() == 1
        [output] = conn.exec_driver_sql("SELECT output FROM deployment_results").scalars()
    assert output.startswith("uid=0(root)") and "PRIVATE KEY" not in output
    db.upgrade()  # and every later migration on top of it
    assert db.current() == db.heads()
    db.downgrade("0006_autopilot")  # the access migration alone, on top of main's chain
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT is_admin FROM console_accounts").scalar() == 1
    db.upgrade()
    db.downgrade("0002_console")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT is_admin FROM console_accounts").scalar() == 1
        assert conn.exec_driver_sql("SELECT count(*) FROM console_api_tokens").scalar() == 1
    db.dispose()
