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


def test_the_metrics_say_each_lineages_next_renewal_last_outcome_and_the_alerts_sent(tmp_path: Path) -> None:
    import datetime as dt

    from prometheus_client import CollectorRegistry, generate_latest

    from certfleet.autopilot.alerts import Alerts, Condition, Event, Scope
    from certfleet.autopilot.ledger import Ledger, Outcome
    from certfleet.autopilot.schedule import families
    from certfleet.metrics import Snapshot
    from certfleet.store import Store

    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)

    class Sink:
        def send(self, url: str, title: str, body: str) -> str | None:
            return None

    with Store.init(tmp_path / "home") as store:
        store.put_lineage("web")
        store.put_lineage("shop")
        ledger = Ledger(store)
        ledger.plan("web", at + dt.timedelta(days=2), "third-left")
        ledger.record("web", Outcome.FAILED, at=at, error="the CA did not answer")
        ledger.record("web", Outcome.FAILED, at=at, error="the CA did not answer")
        alerts = Alerts(store, notifier=Sink(), clock=lambda: at)
        alerts.add("json://127.0.0.1:9/hook")
        alerts.dispatch([Condition(Event.RENEWAL_FAILED, "web", "renewal of web failed", "…")], Scope())
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Snapshot(families(store)))
        text = generate_latest(registry).decode()
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    web, shop = (("lineage", "web"),), (("lineage", "shop"),)
    stamp = (at + dt.timedelta(days=2)).timestamp()
    assert samples["certfleet_lineage_next_renewal_timestamp_seconds", (*web, ("reason", "third-left"))] == stamp
    assert samples["certfleet_lineage_last_renewal_success", web] == 0.0
    assert samples["certfleet_lineage_last_renewal_timestamp_seconds", web] == at.timestamp()
    assert samples["certfleet_lineage_last_renewal_info", (*web, ("outcome", "failed"))] == 1.0
    assert samples["certfleet_lineage_renewal_failures", web] == 2.0
    assert samples["certfleet_lineage_renewal_failures", shop] == 0.0
    assert samples["certfleet_alerts_sent_total", (("event", "renewal-failed"), ("kind", "alert"))] == 1.0
