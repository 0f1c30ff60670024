"""The autopilot's schedule as the last pass left it: each lineage's next renewal and why, its last
outcome, and the alerts sent; what ``/metrics`` and ``certfleet renew --metrics-file`` export (in
:mod:`certfleet.metrics`' vocabulary) and what a schedule view shows."""

from __future__ import annotations

from prometheus_client.core import Metric

from certfleet.autopilot.alerts import Alerts
from certfleet.autopilot.ledger import Ledger, RenewalState
from certfleet.metrics import autopilot_metrics
from certfleet.store import Store

__all__ = ["families", "schedule"]


def schedule(store: Store) -> list[RenewalState]:
    """Every lineage's renewal state, by name (a lineage no pass has seen yet has an empty one)."""
    return Ledger(store).states()


def families(store: Store) -> list[Metric]:
    """The autopilot's metric families, read from the store at scrape time."""
    return autopilot_metrics(schedule(store), Alerts(store).sent_counts())
