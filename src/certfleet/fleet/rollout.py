"""A lineage's version deployed from the store: which version, to which of its nodes, one deploy
of a lineage at a time, and every node's result kept in the history.

The faces (CLI and console) go through here; :func:`certfleet.fleet.deploy.deploy` is the engine
underneath, which knows nothing of the store::

    with prepare_deploy(store, "web", ["gw1"]) as rollout:  # checked, and the lineage locked
        result = await rollout.run(progress=show)          # deployed, recorded, unlocked

A rollback deploys the issued version before the active one (or ``to``). For the whole lineage
it also makes that version the active one, so that the next ``deploy`` does not install the
withdrawn certificate again; for some nodes only, the active version stays as it is.

The lock is the store's (``store.deploy_lock``): an ``flock`` under the store's home on SQLite, a
PostgreSQL advisory lock when the store is shared; taken without waiting, never left stale.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from certfleet.errors import InputError
from certfleet.fleet.deploy import DeployOptions, DeployReport, NodeOutcome, Prober, ProgressEvent, deploy
from certfleet.fleet.model import NodeSpec
from certfleet.store import AuditAction, NodeResult, Store, VersionRecord, VersionState
from certfleet.store import FileDeployLock as LineageLock

__all__ = [
    "DeployResult",
    "LineageLock",
    "Rollout",
    "node_result",
    "prepare_deploy",
    "prepare_rollback",
    "previous_version",
    "select_nodes",
]


@dataclass(frozen=True, slots=True)
class DeployResult:
    """A deploy (or rollback) of one version of a lineage: the engine's report, where the history
    keeps it, and the lineage's active version afterwards."""

    lineage: str
    version: int
    report: DeployReport
    recorded: int | None  # the deployment's id in the history; None for a dry run
    rollback: bool = False
    activates: bool = False  # a rollback of the whole lineage: ``version`` becomes the active one
    active: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "version": self.version,
            "rollback": self.rollback,
            "activates": self.activates,
            "active": self.active,
            "deployment": self.recorded,
            **self.report.to_dict(),
        }


def node_result(outcome: NodeOutcome) -> NodeResult:
    """One node's outcome as the history keeps it: the message and the node's output together."""
    now = dt.datetime.now(dt.UTC)
    return NodeResult(
        node=outcome.node,
        outcome=outcome.outcome,
        started_at=outcome.started_at or now,
        finished_at=outcome.finished_at or now,
        failed_step=outcome.step.value if outcome.step is not None else None,
        output="\n".join(part for part in (outcome.message, outcome.output) if part),
        served_fingerprint=outcome.served,
    )


def select_nodes(store: Store, lineage: str, wanted: Sequence[str] = ()) -> list[NodeSpec]:
    """The lineage's nodes named in ``wanted`` (in that order), or all of them when none is named."""
    members = store.nodes(lineage)
    if not members:
        raise InputError(
            f"lineage {lineage} has no nodes",
            hint=f"add one: certfleet node add NAME --name DNS --target KIND:PATH --lineage {lineage}",
        )
    if not wanted:
        return members
    by_name = {n.name: n for n in members}
    unknown = [w for w in dict.fromkeys(wanted) if w not in by_name]
    if unknown:
        raise InputError(
            f"not a node of {lineage}: {', '.join(unknown)}",
            hint=f"its nodes: {', '.join(sorted(by_name))}",
        )
    return [by_name[w] for w in dict.fromkeys(wanted)]


def previous_version(store: Store, lineage: str, to: int | None = None) -> VersionRecord:
    """The issued version a rollback goes back to: ``to``, or the last one before the active one."""
    issued = [v for v in store.versions(lineage) if v.state is VersionState.ISSUED]
    if to is not None:
        for v in issued:
            if v.number == to:
                return v
        raise InputError(
            f"lineage {lineage} has no issued version {to}",
            hint=f"its issued versions: {', '.join(str(v.number) for v in issued) or 'none'}",
        )
    active = next((v for v in issued if v.active), None)
    if active is None:
        raise InputError(f"lineage {lineage} has no active certificate to roll back from")
    earlier = [v for v in issued if v.number < active.number]
    if not earlier:
        raise InputError(
            f"lineage {lineage} has no version before version {active.number}",
            hint=f"`certfleet history {lineage}` lists its versions",
        )
    return earlier[-1]


class Rollout:
    """One version of a lineage on its way to some of its nodes. Made by :func:`prepare_deploy`
    or :func:`prepare_rollback`, which check everything and lock the lineage (a dry run changes
    nothing and takes no lock); :meth:`run` deploys, records and unlocks. Use it as a context
    manager so that the lock is let go even when :meth:`run` is never reached."""

    def __init__(
        self,
        store: Store,
        lineage: str,
        version: VersionRecord,
        nodes: Sequence[NodeSpec],
        *,
        options: DeployOptions,
        rollback: bool = False,
        activates: bool = False,
    ) -> None:
        self.store = store
        self.lineage = lineage
        self.version = version
        self.nodes = tuple(nodes)
        self.options = options
        self.rollback = rollback
        self.activates = activates
        self._lock = store.deploy_lock(lineage)
        if not options.dry_run:
            self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    async def run(
        self, *, progress: Callable[[ProgressEvent], None] | None = None, prober: Prober | None = None
    ) -> DeployResult:
        """Deploy the version to the nodes (never raising for a failing node), record every node's
        result, and let go of the lineage."""
        try:
            store, number = self.store, self.version.number
            if self.rollback and not self.options.dry_run:
                before = store.lineage(self.lineage).active
                store.audit(
                    AuditAction.ROLLBACK,
                    {
                        "lineage": self.lineage,
                        "version": number,
                        "from": before.number if before is not None else None,
                        "nodes": [n.name for n in self.nodes],
                        "activates": self.activates,
                    },
                )
                if self.activates:
                    store.activate(self.lineage, number)
            material = store.material(self.lineage, number)
            report = await deploy(material, self.nodes, options=self.options, progress=progress, prober=prober)
            recorded = None
            if not self.options.dry_run:
                results = [node_result(n) for n in report.nodes]
                recorded = store.record_deployment(self.lineage, number, results, started_at=report.started_at)
            active = store.lineage(self.lineage).active
        finally:
            self.release()
        return DeployResult(
            lineage=self.lineage,
            version=number,
            report=report,
            recorded=recorded,
            rollback=self.rollback,
            activates=self.activates,
            active=active.number if active is not None else None,
        )


def prepare_deploy(
    store: Store, lineage: str, nodes: Sequence[str] = (), *, options: DeployOptions | None = None
) -> Rollout:
    """The active version of ``lineage`` for the named nodes (every node of it when none is named).

    Raises :class:`InputError` when there is nothing to deploy or a node is not the lineage's, and
    :class:`EnvError` when another deploy of the lineage is running.
    """
    record = store.lineage(lineage)
    if record.active is None:
        raise InputError(
            f"lineage {lineage} has no certificate yet",
            hint=f"`certfleet request {lineage}`, then `certfleet import {lineage}` what the CA sends",
        )
    chosen = select_nodes(store, lineage, nodes)
    return Rollout(store, lineage, record.active, chosen, options=options or DeployOptions())


def prepare_rollback(
    store: Store,
    lineage: str,
    nodes: Sequence[str] = (),
    *,
    to: int | None = None,
    options: DeployOptions | None = None,
) -> Rollout:
    """The version before the active one (or ``to``), for the named nodes. With no node named it
    goes to every node and, when run, becomes the lineage's active version (audited)."""
    version = previous_version(store, lineage, to)
    chosen = select_nodes(store, lineage, nodes)
    return Rollout(
        store, lineage, version, chosen, options=options or DeployOptions(), rollback=True, activates=not nodes
    )
