"""What a pass reports: for each lineage what it did and why (:class:`LineageRun`, with its
plan), and the whole pass (:class:`RenewReport`: the runs, the conditions found, the alerts
sent); and how a pass is set up (:class:`RenewSettings`). Frozen values with ``to_dict()``: the
CLI's ``--json`` and the console render them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from certfleet.acme.issue import IssueResult
from certfleet.autopilot.alerts import AlertSent, Condition
from certfleet.fleet.deploy import DeployOptions
from certfleet.fleet.rollout import DeployResult
from certfleet.renewal import MANUAL_DAYS, RenewalPlan

__all__ = ["Action", "LineageRun", "RenewReport", "RenewSettings"]


class Action(StrEnum):
    """What a pass did for one lineage."""

    NOTHING = "nothing"  # not due
    WAITING = "waiting"  # due, but waiting: after a failure, or for a manual certificate to be bought
    ISSUED = "issued"  # issued and deployed (the deploy says how each node went)
    DEPLOYED = "deployed"  # the active version carried to the nodes that lacked it
    REQUESTED = "requested"  # a manual lineage: a new key and CSR made
    FAILED = "failed"  # the renewal failed; nothing live changed
    SKIPPED = "skipped"  # another deploy of the lineage was running
    WOULD_ISSUE = "would-issue"  # dry runs
    WOULD_REQUEST = "would-request"
    WOULD_DEPLOY = "would-deploy"


@dataclass(frozen=True, slots=True)
class RenewSettings:
    manual_days: int = MANUAL_DAYS  # a manual lineage's reminder, days before it expires
    preflight: bool = True  # the ACME preflight before each order (CAA, http-01 reachability, DNS credentials)
    probe: bool = True  # probe every node after the pass (older or revoked certificates served)
    deploy: DeployOptions = field(default_factory=DeployOptions)


@dataclass(frozen=True, slots=True)
class LineageRun:
    """What a pass did for one lineage, and why."""

    lineage: str
    plan: RenewalPlan
    action: Action
    summary: str
    version: int | None = None
    issued: IssueResult | None = None
    deployed: DeployResult | None = None
    error: str | None = None
    hint: str | None = None
    owed: tuple[str, ...] = ()  # nodes that lack the active version after the pass

    @property
    def ok(self) -> bool:
        if self.action is Action.FAILED:
            return False
        return self.deployed is None or self.deployed.report.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "action": self.action.value,
            "ok": self.ok,
            "summary": self.summary,
            "version": self.version,
            "error": self.error,
            "hint": self.hint,
            "owed": list(self.owed),
            "plan": self.plan.to_dict(),
            "issue": self.issued.to_dict() if self.issued is not None else None,
            "deploy": self.deployed.to_dict() if self.deployed is not None else None,
        }


@dataclass(frozen=True, slots=True)
class RenewReport:
    started_at: dt.datetime
    finished_at: dt.datetime
    dry_run: bool = False
    forced: bool = False
    lineages: tuple[LineageRun, ...] = ()
    conditions: tuple[Condition, ...] = ()
    alerts: tuple[AlertSent, ...] = ()
    busy: str | None = None  # another pass held the lock: this one did nothing

    @property
    def ok(self) -> bool:
        return all(run.ok for run in self.lineages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "busy": self.busy,
            "dry_run": self.dry_run,
            "forced": self.forced,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "lineages": [run.to_dict() for run in self.lineages],
            "conditions": [c.to_dict() for c in self.conditions],
            "alerts": [a.to_dict() for a in self.alerts],
        }
