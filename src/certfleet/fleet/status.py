"""What each lineage's nodes really serve, and how their last deployment left them: ``status``.

``status`` is the one fleet status: the CLI's ``status``, the console's dashboard, its API and its
``/metrics`` all read it. Each node's probe endpoint is checked as ``certfleet check`` checks it
(:mod:`certfleet.fleet.probing`: the chain as served, verified without fetching, and linted), so a
node that serves the active leaf without its intermediate is reported as a strict client sees it.
What happened to a lineage over time is :mod:`certfleet.fleet.history`.

A node whose last deployment did not end well (interrupted, failed, rolled back) is also asked
what it has live (:mod:`certfleet.fleet.live`): after a killed deploy its ``live`` may point at a
version that was never tested, reloaded or probed there, and only the node can tell.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from certfleet.certinfo import CertInfo
from certfleet.check import DEFAULT_TIMEOUT, CheckReport, EndpointReport
from certfleet.findings import expiring_problem, validity_problem
from certfleet.fleet.health import (
    Health,
    VersionHealth,
    health_of,
    served_problems,
    unique_problems,
    version_health,
)
from certfleet.fleet.live import LiveState, read_live, version_of_folder
from certfleet.fleet.model import NodeSpec, Outcome
from certfleet.fleet.nodes import lineage_names
from certfleet.fleet.probing import (
    Checked,
    Checker,
    default_checker,
    no_checks,
    probe_readable,
    probe_targets,
    reusing,
)
from certfleet.problems import EXPIRING_DAYS, Problem, ProblemCode, Severity, worst
from certfleet.store import (
    DeploymentRecord,
    DeploymentState,
    LineageRecord,
    NodeResult,
    Store,
    VersionRecord,
    VersionState,
)
from certfleet.trust import TrustStore

__all__ = [
    "EXPIRING_DAYS",
    "LineageStatus",
    "NodeStatus",
    "Serving",
    "StatusReport",
    "serving_of",
    "status",
]


class Serving(StrEnum):
    ACTIVE = "active"  # the node serves the lineage's active version
    OLDER = "older"  # an earlier version of the lineage
    OTHER = "other"  # a certificate the lineage never had
    UNREACHABLE = "unreachable"  # the probe found no TLS endpoint
    NOT_PROBED = "not-probed"  # the node names no probe endpoint, or probing was left out


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node of a lineage: what it serves now, as a strict client judges it, and its last deployment."""

    node: str
    lineage: str
    probe: str | None
    serving: Serving
    served_fingerprint: str | None = None
    served_version: int | None = None
    report: EndpointReport | None = None  # the endpoint as ``certfleet check`` reports it; None: not probed
    checked_at: dt.datetime | None = None
    last: NodeResult | None = None  # the node's result in the lineage's last deployment to it
    last_version: int | None = None
    problems: tuple[Problem, ...] = ()  # the endpoint's, names the served leaf misses, an older version served
    last_deployment: int | None = None
    last_state: DeploymentState | None = None  # of the last deployment: interrupted means never finished
    live: LiveState | None = None  # read from the node when its last deployment did not end well
    live_versions: tuple[int | None, ...] = ()  # the lineage's version each target's live holds
    live_proven: bool | None = None  # False: live points at a version no deploy proved on this node
    # a node in a zone (shared store): the worker of its zone whose recorded probe this is ("" when
    # none probed it yet); None: probed from here
    probed_by: str | None = None

    @property
    def served(self) -> CertInfo | None:
        return self.report.chain[0] if self.report is not None and self.report.chain else None

    @property
    def last_outcome(self) -> Outcome | None:
        return self.last.outcome if self.last is not None else None

    @property
    def last_failed_step(self) -> str | None:
        return self.last.failed_step if self.last is not None else None

    @property
    def last_deployed_at(self) -> dt.datetime | None:
        return self.last.finished_at if self.last is not None else None

    @property
    def interrupted(self) -> bool:
        return self.last_outcome is Outcome.INTERRUPTED

    @property
    def settled(self) -> bool:
        """No deploy was left half way here, and live points at nothing a deploy did not prove."""
        return not self.interrupted and self.live_proven is not False

    @property
    def health(self) -> Health:
        if not self.settled:
            return Health.BAD
        if self.serving is Serving.NOT_PROBED:
            return Health.NONE
        if self.report is None or not self.report.ok:  # down, or a strict client refuses what it serves
            return Health.BAD
        return health_of(self.problems)  # an older version or another certificate served is an error

    @property
    def ok(self) -> bool:
        """Settled, and serves the active version and a strict client accepts it (or is not probed)."""
        return self.health is not Health.BAD

    def to_dict(self) -> dict[str, Any]:
        served = self.served
        return {
            "node": self.node,
            "lineage": self.lineage,
            "probe": self.probe,
            "serving": self.serving.value,
            "health": self.health.value,
            "ok": self.ok,
            "served_fingerprint": self.served_fingerprint,
            "served_version": self.served_version,
            "served": served.to_dict() if served is not None else None,
            "check": self.report.to_dict() if self.report is not None else None,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "probed_by": self.probed_by,
            "last_deployment": None
            if self.last is None
            else {
                **self.last.to_dict(),
                "id": self.last_deployment,
                "state": self.last_state.value if self.last_state else None,
                "version": self.last_version,
            },
            "live": None
            if self.live is None
            else {**self.live.to_dict(), "versions": list(self.live_versions), "proven": self.live_proven},
            "problems": [p.to_dict() for p in self.problems],
        }


@dataclass(frozen=True, slots=True)
class LineageStatus:
    record: LineageRecord
    required: tuple[str, ...]  # every name the lineage's certificate must cover
    chain: VersionHealth | None  # the active version as a strict client judges it; None: no certificate
    days_left: int | None
    waiting: tuple[VersionRecord, ...]  # versions waiting for the CA, oldest first
    nodes: tuple[NodeStatus, ...]
    problems: tuple[Problem, ...]  # the active version's expiry

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def active(self) -> VersionRecord | None:
        return self.record.active

    @property
    def pending(self) -> int:
        return len(self.waiting)

    @property
    def ok(self) -> bool:
        """Every node is ok and the active version has neither expired nor not begun.

        The stored chain's own verdict (``chain``) is not counted: nodes that serve it are
        verified as served, so a chain a client refuses makes them fail.
        """
        return all(n.ok for n in self.nodes) and worst(self.problems) is not Severity.ERROR

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        """The lineage's problems and those of its active chain, each once."""
        return unique_problems((*self.problems, *(self.chain.problems if self.chain is not None else ())))

    @property
    def health(self) -> Health:
        if self.chain is None:
            return Health.NONE
        return health_of(self.all_problems, valid=self.chain.valid)

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
            "required_names": list(self.required),
            "health": self.health.value,
            "chain": self.chain.to_dict() if self.chain is not None else None,
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


def serving_of(served: str | None, active: str | None, versions: Collection[str | None]) -> Serving:
    """Which of a lineage's versions a node serves, from the fingerprint of the leaf a probe saw
    there (None: the probe got no certificate) and those of the lineage's versions."""
    if served is None:
        return Serving.UNREACHABLE
    if served == active:
        return Serving.ACTIVE
    return Serving.OLDER if served in versions else Serving.OTHER


def _expiry_problems(active: VersionRecord | None, now: dt.datetime, expiring_days: int) -> tuple[Problem, ...]:
    if active is None or active.leaf is None:
        return ()
    found = validity_problem(active.leaf, now) or expiring_problem(active.leaf, now, expiring_days)
    if found is None:
        return ()
    return (dataclasses.replace(found, hint=f"renew: `certfleet request {active.lineage}`, then import and deploy"),)


async def status(
    store: Store,
    *,
    now: dt.datetime,
    lineage: str | None = None,
    probe: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    trust: TrustStore | None = None,
    expiring_days: int = EXPIRING_DAYS,
    checker: Checker | None = None,
    reuse: CheckReport | None = None,
) -> StatusReport:
    """Per lineage: the active version, days left and its chain as a strict client judges it; per
    node: the last deployment and, probed live and checked as ``certfleet check`` does, which
    version it really serves and whether a strict client accepts it.

    ``trust`` defaults to Mozilla's roots and the store's anchors; ``checker`` to
    :func:`certfleet.check.check` with ``timeout``, ``trust`` and ``now``. An endpoint that
    ``reuse`` (a check of the same endpoints, as a round of ``watch --nodes`` made) reports is not
    probed again.
    """
    if trust is None:  # what fleet.lineage.trust_for gives, without loading what imports need
        trust = TrustStore.mozilla_plus([a.cert for a in store.trust_anchors()])
    records = [store.lineage(lineage)] if lineage is not None else store.lineages()
    members = {r.name: store.nodes(r.name) for r in records}
    lasts = {r.name: store.last_results(r.name) for r in records}
    unique = {n.name: n for nodes in members.values() for n in nodes}
    unsettled = [
        unique[name]
        for last in lasts.values()
        for name, (_, result) in last.items()
        if name in unique and result.outcome in _UNSETTLED
    ]
    checked: dict[str, Checked] = {}
    lives: dict[str, LiveState] = {}
    by_worker: dict[str, str] = {}
    if probe:
        targets = probe_targets(n for n in unique.values() if probe_readable(n))
        run = checker or default_checker(trust, now, timeout, expiring_days)
        if reuse is not None:
            run = reusing(reuse, run)
        # on a shared store a node in a zone is probed by its zone's worker, not from here
        from certfleet.jobs.probes import zone_probed

        zoned = zone_probed(store, targets.endpoints, trust=trust, now=now, expiring_days=expiring_days)
        names = [n for n in targets.endpoints if n not in zoned]
        checking = run([targets.endpoints[n] for n in names]) if names else no_checks()
        reports, lives = await asyncio.gather(checking, read_live(unsettled, timeout=max(timeout, 5.0) * 3))
        checked = dict(zip(names, reports, strict=True))
        for name, (seen, at, by) in zoned.items():
            if seen is not None and at is not None:
                checked[name] = Checked(seen, at)
            by_worker[name] = by
    out = [
        _lineage_status(
            store,
            record,
            members[record.name],
            checked,
            last=lasts[record.name],
            lives=lives,
            trust=trust,
            now=now,
            expiring_days=expiring_days,
            by_worker=by_worker,
        )
        for record in records
    ]
    return StatusReport(checked_at=now, probed=probe, lineages=tuple(out))


def _lineage_status(
    store: Store,
    record: LineageRecord,
    nodes: Sequence[NodeSpec],
    checked: Mapping[str, Checked],
    *,
    last: Mapping[str, tuple[DeploymentRecord, NodeResult]],
    lives: Mapping[str, LiveState],
    trust: TrustStore,
    now: dt.datetime,
    expiring_days: int,
    by_worker: Mapping[str, str] | None = None,
) -> LineageStatus:
    by_worker = by_worker or {}
    versions = store.versions(record.name)
    by_fp = {v.fingerprint: v for v in versions if v.fingerprint}
    active = record.active
    required = lineage_names(record, nodes)
    chain = None
    if active is not None and active.leaf is not None:
        chain = version_health(
            active.leaf, active.chain, trust=trust, now=now, required=required, expiring_days=expiring_days
        )
    numbers = {fp: v.number for fp, v in by_fp.items()}
    live_versions = {
        n.name: tuple(version_of_folder(t, numbers) for t in live.targets)
        for n in nodes
        if (live := lives.get(n.name)) is not None and live.error is None
    }
    # only a version live on a node is asked about: whether a deploy ever proved it there
    wanted = {
        name: {v for t, v in zip(lives[name].targets, found, strict=True) if t is not None and v is not None}
        for name, found in live_versions.items()
    }
    proven = store.proven(record.name, wanted) if any(wanted.values()) else {}
    fingerprint = active.fingerprint if active is not None else None
    return LineageStatus(
        record=record,
        required=required,
        chain=chain,
        days_left=active.days_left(now) if active is not None else None,
        waiting=tuple(v for v in versions if v.state is VersionState.PENDING),
        nodes=tuple(
            _node_status(
                node,
                record,
                checked.get(node.name),
                by_fp,
                last=last.get(node.name),
                live=lives.get(node.name),
                live_versions=live_versions.get(node.name, ()),
                proven=proven.get(node.name, set()),
                probed_by=by_worker.get(node.name),
                active_fingerprint=fingerprint,
            )
            for node in nodes
        ),
        problems=_expiry_problems(active, now, expiring_days),
    )


def _node_status(
    node: NodeSpec,
    record: LineageRecord,
    seen: Checked | None,
    versions: Mapping[str, VersionRecord],
    *,
    last: tuple[DeploymentRecord, NodeResult] | None,
    live: LiveState | None,
    live_versions: tuple[int | None, ...],
    proven: Collection[int],
    probed_by: str | None,
    active_fingerprint: str | None,
) -> NodeStatus:
    deployment, result = last if last is not None else (None, None)
    live_proven: bool | None = None
    if live is not None and live.error is None:
        live_proven = all(t is None or v in proven for t, v in zip(live.targets, live_versions, strict=True))
    serving, served_fp, match, report = Serving.NOT_PROBED, None, None, None
    found: tuple[Problem, ...] = ()
    if seen is not None:
        report = seen.report
        served_fp = report.chain[0].sha256 if report.probe.ok and report.chain else None
        serving = serving_of(served_fp, active_fingerprint, versions)
        match = versions.get(served_fp) if served_fp is not None else None
        found = tuple(
            dataclasses.replace(p, message=f"{node.name}: {p.message}")
            for p in (*report.problems, *served_problems(report, node.names))
        )
        if serving in (Serving.OLDER, Serving.OTHER):
            found += (_serving_problem(record.name, node, serving, match.number if match else None, record.active),)
    out = NodeStatus(
        node=node.name,
        lineage=record.name,
        probe=node.probe,
        serving=serving,
        served_fingerprint=served_fp,
        served_version=match.number if match else None,
        report=report,
        checked_at=seen.at if seen is not None else None,
        last=result,
        last_version=deployment.version if deployment is not None else None,
        problems=found,
        last_deployment=deployment.id if deployment is not None else None,
        last_state=deployment.state if deployment is not None else None,
        live=live,
        live_versions=live_versions if live is not None else (),
        live_proven=live_proven,
        probed_by=probed_by,
    )
    settle = _settle_problems(record.name, out)
    return dataclasses.replace(out, problems=found + settle) if settle else out


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
