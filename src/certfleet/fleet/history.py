"""What happened to a lineage: its versions and its deployments, node by node (``certfleet
history``). What its nodes serve now is :mod:`certfleet.fleet.status`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from certfleet.store import DeploymentRecord, LineageRecord, Store, VersionRecord

__all__ = ["HistoryReport", "history"]


@dataclass(frozen=True, slots=True)
class HistoryReport:
    lineage: LineageRecord
    versions: tuple[VersionRecord, ...]
    deployments: tuple[DeploymentRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage.name,
            "active": self.lineage.active.number if self.lineage.active else None,
            "versions": [v.to_dict() for v in self.versions],
            "deployments": [d.to_dict() for d in self.deployments],
        }


def history(store: Store, lineage: str, *, limit: int = 50) -> HistoryReport:
    """The versions of ``lineage`` (oldest first) and its deployments (newest first)."""
    record = store.lineage(lineage)
    return HistoryReport(record, tuple(store.versions(lineage)), tuple(store.deployments(lineage, limit=limit)))
