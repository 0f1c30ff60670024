"""The autopilot's schedule: each lineage's next renewal and why, and what the last pass did.

:func:`standing` and :func:`facts_for` gather what :func:`certfleet.renewal.plan_renewal` is made
of from the store (the pass plans with them); :func:`planned` makes every lineage's plan at
``now`` from what is stored alone (the CA's renewal window as the last pass asked for it; nothing
is fetched), for a schedule view; :func:`schedule` is the renewal state the last pass left and
:func:`families` the metrics made of it (in :mod:`certfleet.metrics`' vocabulary), which
``/metrics`` and ``certfleet renew --metrics-file`` export.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import Metric

from certfleet.acme.model import AccountStatus, IssuerRecord
from certfleet.autopilot.alerts import Alerts
from certfleet.autopilot.ledger import Ledger, RenewalState
from certfleet.metrics import autopilot_metrics
from certfleet.renewal import (
    MANUAL_DAYS,
    Issuing,
    RenewalFacts,
    RenewalPlan,
    RenewalWindow,
    jitter_for,
    plan_renewal,
)
from certfleet.store import Store, VersionRecord, VersionState

__all__ = ["ScheduleEntry", "Standing", "facts_for", "families", "planned", "schedule", "standing"]


def _issuing(issuers: Sequence[IssuerRecord]) -> tuple[Issuing, IssuerRecord | None]:
    usable = [i for i in issuers if not (i.is_acme and i.status is AccountStatus.DEACTIVATED)]
    if not usable:
        return Issuing.NONE, None
    return (Issuing.ACME if usable[0].is_acme else Issuing.MANUAL), usable[0]


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a lineage stands: how it is issued (its first usable issuer), its active version,
    and whether its last certificate was revoked (with no active one left)."""

    lineage: str
    issuing: Issuing
    first: IssuerRecord | None
    active: VersionRecord | None
    revoked: bool


def standing(store: Store, name: str) -> Standing:
    record = store.lineage(name)
    issuing, first = _issuing([store.issuer(i) for i in store.policy(name).issuers])
    active = record.active
    issued = [v for v in store.versions(name) if v.state is VersionState.ISSUED]
    revoked_numbers = {r.version for r in store.revocations(name)}
    revoked = active is None and bool(issued) and issued[-1].number in revoked_numbers
    return Standing(name, issuing, first, active, revoked)


def facts_for(
    where: Standing, state: RenewalState, *, window: RenewalWindow | None, manual_days: int = MANUAL_DAYS
) -> RenewalFacts:
    """The facts of a lineage's plan: its standing, its failures, the CA's ``window``."""
    active = where.active
    return RenewalFacts(
        lineage=where.lineage,
        issuing=where.issuing,
        not_before=active.not_before if active is not None else None,
        not_after=active.not_after if active is not None else None,
        revoked=where.revoked,
        window=window,
        failures=state.failures,
        last_failure=state.last_attempt_at if state.failures else None,
        retry_after=state.retry_after,
        manual_days=manual_days,
        jitter=jitter_for(where.lineage, active.fingerprint if active is not None else None),
    )


def cached_window(where: Standing, state: RenewalState) -> RenewalWindow | None:
    """The CA's renewal window for the active certificate, as the last pass asked for it."""
    active, ari = where.active, state.ari
    if where.issuing is not Issuing.ACME or active is None or ari is None or ari.fingerprint != active.fingerprint:
        return None
    return ari.window


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """One lineage in the schedule: its plan at the time asked, and what the last pass did."""

    lineage: str
    plan: RenewalPlan
    state: RenewalState
    issuer: str | None  # the first usable issuer's name
    active: int | None  # the active version's number

    @property
    def next_at(self) -> dt.datetime | None:
        """When a pass will act (None: never, a lineage with no issuer)."""
        return self.plan.next_attempt

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "issuer": self.issuer,
            "active": self.active,
            "next_renewal_at": _iso(self.next_at),
            "reason": self.plan.reason.value,
            "due": self.plan.due,
            "detail": self.plan.detail,
            "plan": self.plan.to_dict(),
            "last": self.state.to_dict(),
        }


def planned(
    store: Store, *, now: dt.datetime, lineages: Sequence[str] = (), manual_days: int = MANUAL_DAYS
) -> list[ScheduleEntry]:
    """Each lineage's plan at ``now`` (of ``lineages``, or of every lineage, by name), from the
    store alone: the CA's renewal window is the one the last pass got (a lineage no pass has
    asked yet is planned by its lifetime until one does)."""
    ledger = Ledger(store)
    states = {s.lineage: s for s in ledger.states()}
    wanted = set(lineages)
    entries = []
    for name, state in states.items():
        if wanted and name not in wanted:
            continue
        where = standing(store, name)
        plan = plan_renewal(
            facts_for(where, state, window=cached_window(where, state), manual_days=manual_days), now=now
        )
        entries.append(
            ScheduleEntry(
                name,
                plan,
                state,
                where.first.name if where.first is not None else None,
                where.active.number if where.active is not None else None,
            )
        )
    return entries


def schedule(store: Store) -> list[RenewalState]:
    """Every lineage's renewal state, by name (a lineage no pass has seen yet has an empty one)."""
    return Ledger(store).states()


def families(store: Store) -> list[Metric]:
    """The autopilot's metric families, read from the store at scrape time."""
    return autopilot_metrics(schedule(store), Alerts(store).sent_counts())
