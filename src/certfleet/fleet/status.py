"""What each lineage's nodes really serve, and what happened to them: ``status`` and ``history``.

A node whose last deployment did not end well (interrupted, failed, rolled back) is also asked
what it has live (:mod:`certfleet.fleet.live`): after a killed deploy its ``live`` may point at a
version that was never tested, reloaded or probed there, and only the node can tell.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from certfleet.certinfo import fingerprint
from certfleet.endpoint import Endpoint
from certfleet.fleet.live import LiveState, read_live, version_of_folder
from certfleet.fleet.model import NodeSpec, Outcome
from certfleet.problems import Problem, ProblemCode, Severity
from certfleet.store import DeploymentRecord, DeploymentState, LineageRecord, Store, VersionRecord, VersionState

__all__ = [
    "EXPIRING_DAYS",
    "HistoryReport",
    "LineageStatus",
    "NodeStatus",
    "Serving",
    "StatusReport",
    "history",
    "serving_of",
    "status",
]

EXPIRING_DAYS = 30
_PROBE_CONCURRENCY = 16


class Serving(StrEnum):
    ACTIVE = "active"  # the node serves the lineage's active version
    OLDER = "older"  # an earlier version of the lineage
    OTHER = "other"  # a certificate the lineage never had
    UNREACHABLE = "unreachable"  # the probe found no TLS endpoint
    NOT_PROBED = "not-probed"  # the node names no probe endpoint, or probing was left out


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node: str
    probe: str | None
    serving: Serving
    served_fingerprint: str | None = None
    served_version: int | None = None
    last_outcome: Outcome | None = None
    last_version: int | None = None
    last_failed_step: str | None = None
    last_deployed_at: dt.datetime | None = None
    problems: tuple[Problem, ...] = ()
    last_deployment: int | None = None
    last_state: DeploymentState | None = None  # of the last deployment: interrupted means never finished
    live: LiveState | None = None  # read from the node when its last deployment did not end well
    live_versions: tuple[int | None, ...] = ()  # the lineage's version each target's live holds
    live_proven: bool | None = None  # False: live points at a version no deploy proved on this node

    @property
    def interrupted(self) -> bool:
        return self.last_outcome is Outcome.INTERRUPTED

    @property
    def ok(self) -> bool:
        settled = not self.interrupted and self.live_proven is not False
        return settled and self.serving in (Serving.ACTIVE, Serving.NOT_PROBED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "probe": self.probe,
            "serving": self.serving.value,
            "served_fingerprint": self.served_fingerprint,
            "served_version": self.served_version,
            "last_deployment": None
            if self.last_outcome is None
            else {
                "id": self.last_deployment,
                "state": self.last_state.value if self.last_state else None,
                "outcome": self.last_outcome.value,
                "version": self.last_version,
                "failed_step": self.last_failed_step,
                "finished_at": self.last_deployed_at.isoformat() if self.last_deployed_at else None,
            },
            "live": None
            if self.live is None
            else {**self.live.to_dict(), "versions": list(self.live_versions), "proven": self.live_proven},
            "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
        }


@dataclass(frozen=True, slots=True)
class LineageStatus:
    name: str
    active: VersionRecord | None
    days_left: int | None
    pending: int  # versions waiting for the CA
    nodes: tuple[NodeStatus, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return all(n.ok for n in self.nodes) and not any(p.severity is Severity.ERROR for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        active = self.active
        return {
            "lineage": self.name,
            "active": None
            if active is None
            else {
                "version": active.number,
                "fingerprint": active.fingerprint,
                "names": list(active.names),
                "not_after": active.not_after.isoformat() if active.not_after else None,
                "days_left": self.days_left,
            },
            "pending": self.pending,
            "nodes": [n.to_dict() for n in self.nodes],
            "problems": [p.to_dict() for p in self.problems],
            "ok": self.ok,
        }


@dataclass(frozen=True, slots=True)
class StatusReport:
    checked_at: dt.datetime
    probed: bool
    lineages: tuple[LineageStatus, ...]

    @property
    def ok(self) -> bool:
        return all(lin.ok for lin in self.lineages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at.isoformat(),
            "probed": self.probed,
            "ok": self.ok,
            "lineages": [lin.to_dict() for lin in self.lineages],
        }


async def _probe_all(nodes: Sequence[NodeSpec], timeout: float) -> dict[str, Any]:
    from certfleet.probe import probe

    gate = asyncio.Semaphore(_PROBE_CONCURRENCY)

    async def one(target: Endpoint) -> tuple[str, Any]:
        async with gate:
            served = await probe(target.host, target.port, server_name=target.server_name, timeout=timeout)
            return target.label or "", served

    pairs = await asyncio.gather(*(one(e) for e in map(NodeSpec.endpoint, nodes) if e is not None))
    return dict(pairs)


def serving_of(served: str | None, active: str | None, versions: Collection[str | None]) -> Serving:
    """Which of a lineage's versions a node serves, from the fingerprint of the leaf a probe saw
    there (None: the probe got no certificate) and those of the lineage's versions."""
    if served is None:
        return Serving.UNREACHABLE
    if served == active:
        return Serving.ACTIVE
    return Serving.OLDER if served in versions else Serving.OTHER


def _expiry_problems(active: VersionRecord | None, now: dt.datetime) -> list[Problem]:
    if active is None or active.not_after is None:
        return []
    days = (active.not_after - now).days
    if active.not_after <= now:
        return [
            Problem(
                ProblemCode.EXPIRED,
                Severity.ERROR,
                f"the active certificate expired on {active.not_after:%Y-%m-%d}",
                f"renew: `certfleet request {active.lineage}`, then import and deploy",
                active.fingerprint,
            )
        ]
    if days < EXPIRING_DAYS:
        return [
            Problem(
                ProblemCode.EXPIRING_SOON,
                Severity.WARNING,
                f"the active certificate expires in {days} days ({active.not_after:%Y-%m-%d})",
                f"renew: `certfleet request {active.lineage}`, then import and deploy",
                active.fingerprint,
            )
        ]
    return []


async def status(
    store: Store,
    *,
    now: dt.datetime,
    lineage: str | None = None,
    probe: bool = True,
    timeout: float = 5.0,
) -> StatusReport:
    """Per lineage: the active version and days left; per node: the last deployment and, probed
    live, which version it really serves."""
    records = [store.lineage(lineage)] if lineage is not None else store.lineages()
    members = {r.name: store.nodes(r.name) for r in records}
    unique = {n.name: n for nodes in members.values() for n in nodes}
    lasts = {r.name: store.last_results(r.name) for r in records}
    unsettled = {
        name: unique[name]
        for last in lasts.values()
        for name, (_, result) in last.items()
        if name in unique and result.outcome in _UNSETTLED
    }
    probing = _probe_all(list(unique.values()), timeout) if probe else _nothing()
    reading = read_live(list(unsettled.values()), timeout=max(timeout, 5.0) * 3) if probe else _nothing()
    probed, lives = await asyncio.gather(probing, reading)
    out: list[LineageStatus] = []
    for record in records:
        versions = store.versions(record.name)
        by_fp = {v.fingerprint: v for v in versions if v.fingerprint}
        numbers = {fp: v.number for fp, v in by_fp.items() if fp}
        active = record.active
        last = lasts[record.name]
        proven = _proven(store, record.name)
        nodes: list[NodeStatus] = []
        for node in members[record.name]:
            dep_result = last.get(node.name)
            dep: DeploymentRecord | None = dep_result[0] if dep_result else None
            result = dep_result[1] if dep_result else None
            serving, served_fp, served_version = Serving.NOT_PROBED, None, None
            problems: tuple[Problem, ...] = ()
            seen = probed.get(node.name)
            if seen is not None:
                problems = tuple(dataclasses.replace(p, message=f"{node.name}: {p.message}") for p in seen.problems)
                served_fp = fingerprint(seen.chain[0]) if seen.ok and seen.chain else None
                serving = serving_of(served_fp, active.fingerprint if active is not None else None, by_fp)
                match = by_fp.get(served_fp) if served_fp is not None else None
                served_version = match.number if match else None
                if serving not in (Serving.ACTIVE, Serving.UNREACHABLE):
                    problems += (_serving_problem(record.name, node, serving, served_version, active),)
            live = lives.get(node.name)
            live_versions: tuple[int | None, ...] = ()
            live_proven: bool | None = None
            if live is not None and live.error is None:
                live_versions = tuple(version_of_folder(t, numbers) for t in live.targets)
                live_proven = all(
                    t is None or v in proven.get(node.name, ())
                    for t, v in zip(live.targets, live_versions, strict=True)
                )
            status_of_node = NodeStatus(
                node=node.name,
                probe=node.probe,
                serving=serving,
                served_fingerprint=served_fp,
                served_version=served_version,
                last_outcome=result.outcome if result else None,
                last_version=dep.version if dep else None,
                last_failed_step=result.failed_step if result else None,
                last_deployed_at=result.finished_at if result else None,
                problems=problems,
                last_deployment=dep.id if dep else None,
                last_state=dep.state if dep else None,
                live=live,
                live_versions=live_versions,
                live_proven=live_proven,
            )
            nodes.append(
                dataclasses.replace(status_of_node, problems=problems + _settle_problems(record.name, status_of_node))
            )
        out.append(
            LineageStatus(
                name=record.name,
                active=active,
                days_left=active.days_left(now) if active is not None else None,
                pending=sum(v.state is VersionState.PENDING for v in versions),
                nodes=tuple(nodes),
                problems=tuple(_expiry_problems(active, now)),
            )
        )
    return StatusReport(checked_at=now, probed=probe, lineages=tuple(out))


def _serving_problem(
    lineage: str, node: NodeSpec, serving: Serving, version: int | None, active: VersionRecord | None
) -> Problem:
    if serving is Serving.OLDER:
        what = f"version {version}, not the active version {active.number if active else '-'}"
    else:
        what = "a certificate that is not one of this lineage's versions"
    return Problem(
        ProblemCode.SERVES_OTHER_CERTIFICATE,
        Severity.ERROR,
        f"{node.name} serves {what}",
        f"deploy the active version: `certfleet deploy {lineage}`",
        node.name,
    )


# the last result of a node that may have left it half way: its live files are read back
_UNSETTLED = frozenset({Outcome.INTERRUPTED, Outcome.FAILED, Outcome.ROLLED_BACK})


async def _nothing() -> dict[str, Any]:
    return {}


def _proven(store: Store, lineage: str) -> dict[str, set[int]]:
    """By node: the versions a deploy proved there (deployed or verified, to the end)."""
    out: dict[str, set[int]] = {}
    for dep in store.deployments(lineage, limit=500):
        for r in dep.results:
            if r.outcome in (Outcome.OK, Outcome.UNCHANGED):
                out.setdefault(r.node, set()).add(dep.version)
    return out


def _live_text(n: NodeStatus) -> str:
    if n.live is None:
        return "not read"
    if n.live.error is not None:
        return f"cannot be read ({n.live.error})"
    shown = [
        "nothing" if t is None else f"version {v}" if v is not None else f"{t} (not a version of the lineage)"
        for t, v in zip(n.live.targets, n.live_versions, strict=True)
    ]
    return ", ".join(dict.fromkeys(shown)) or "no target"


def _unproven(n: NodeStatus) -> str:
    return ", which no deploy proved on this node" if n.live_proven is False else ""


def _settle_problems(lineage: str, n: NodeStatus) -> tuple[Problem, ...]:
    """What a deploy that never finished, or a live pointer nobody proved, leaves to do."""
    out: list[Problem] = []
    if n.served_version is not None:
        serves = f"the node serves version {n.served_version}"
    elif n.serving is Serving.NOT_PROBED:
        serves = "what it serves is not probed"
    elif n.serving is Serving.UNREACHABLE:
        serves = "its endpoint does not answer"
    else:
        serves = "the node serves a certificate that is not one of the lineage's versions"
    if n.interrupted:
        out.append(
            Problem(
                ProblemCode.INTERRUPTED,
                Severity.ERROR,
                f"{n.node}: deployment #{n.last_deployment} of version {n.last_version} never finished here; "
                f"live points at {_live_text(n)}{_unproven(n)}; {serves}",
                f"finish it with `certfleet deploy {lineage}`, or go back with `certfleet rollback {lineage}`",
                n.node,
            )
        )
    elif n.live_proven is False:
        out.append(
            Problem(
                ProblemCode.UNPROVEN,
                Severity.ERROR,
                f"{n.node}: live points at {_live_text(n)}{_unproven(n)}; {serves}",
                f"`certfleet deploy {lineage}` tests, reloads and probes the active version there",
                n.node,
            )
        )
    return tuple(out)


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
