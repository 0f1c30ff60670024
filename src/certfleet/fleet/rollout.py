"""A lineage's version deployed from the store: which version, to which of its nodes, one deploy
of a lineage at a time, and every node's result kept in the history.

The faces (CLI and console) go through here; :func:`certfleet.fleet.deploy.deploy` is the engine
underneath, which knows nothing of the store::

    with prepare_deploy(store, "web", ["gw1"]) as rollout:  # checked, and the lineage locked
        result = await rollout.run(progress=show)          # deployed, recorded, unlocked

A rollback deploys the issued version before the active one (or ``to``). For the whole lineage
it also makes that version the active one and withdraws the one it replaces, so that neither the
next ``deploy`` nor an import installs the withdrawn certificate again; for some nodes only, the
active version stays as it is.

Every deploy is in the history before it touches a node: recorded as running with all its
nodes, each node's result written as it finishes (in a thread of its own, so a slow store never
holds up a node), the whole marked finished at the end, or interrupted when it was stopped. A
process killed half way leaves it running, which reads as interrupted once the process is gone.
When the last write fails, every node's result goes to a recovery file
(:mod:`certfleet.fleet.recovery`) and the result says where.

The lock is the store's (``store.deploy_lock``): an ``flock`` under the store's home on SQLite, a
PostgreSQL advisory lock when the store is shared; taken without waiting, never left stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from certfleet.clock import Clock, utc_now
from certfleet.errors import CertfleetError, InputError
from certfleet.fleet.deploy import DeployOptions, DeployReport, NodeOutcome, Prober, ProgressEvent, deploy
from certfleet.fleet.model import NodeSpec, Outcome
from certfleet.fleet.recovery import write_recovery
from certfleet.store import AuditAction, DeploymentState, NodeResult, Store, VersionRecord, VersionState
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
    "settled_nodes",
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
    # the lineage's versions by leaf fingerprint: which one each node serves and has live
    versions: Mapping[str, int] = field(default_factory=dict)
    deployment: int | None = None  # its id in the history, also when the last write failed
    record_error: CertfleetError | None = None  # the last write failed: the nodes' results are in...
    recovery: Path | None = None  # ...this file, which the next command records

    def version_of(self, fingerprint: str | None) -> int | None:
        """The lineage's version whose leaf has ``fingerprint`` (a full one, or a version folder's
        16-digit start)."""
        if not fingerprint:
            return None
        return next((n for fp, n in self.versions.items() if fp.startswith(fingerprint[:16])), None)

    def to_dict(self) -> dict[str, Any]:
        report = self.report.to_dict()
        for node, out in zip(self.report.nodes, report["nodes"], strict=True):
            out["served_version"] = self.version_of(node.served)
            out["live_versions"] = None if node.live is None else [self.version_of(v) for v in node.live]
        return {
            "lineage": self.lineage,
            "version": self.version,
            "rollback": self.rollback,
            "activates": self.activates,
            "active": self.active,
            "deployment": self.recorded,
            "record_error": str(self.record_error) if self.record_error is not None else None,
            "recovery_file": str(self.recovery) if self.recovery is not None else None,
            **report,
        }


def node_result(outcome: NodeOutcome, *, clock: Clock = utc_now) -> NodeResult:
    """One node's outcome as the history keeps it: the message and the node's output together
    (an outcome the engine did not date is dated by ``clock``)."""
    now = clock()
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
        self.deployment: int | None = None  # its id in the history, once recorded as running
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
        self,
        *,
        progress: Callable[[ProgressEvent], None] | None = None,
        prober: Prober | None = None,
        stop: asyncio.Event | None = None,
        clock: Clock = utc_now,
    ) -> DeployResult:
        """Deploy the version to the nodes (never raising for a failing node), record every node's
        result, and let go of the lineage. Setting ``stop`` ends it early: each node finishes or
        undoes its step, and the deployment is recorded as interrupted. ``clock`` dates the deploy
        (see :func:`deploy`)."""
        try:
            if self.options.dry_run:
                return await self._dry_run(progress, prober, clock)
            return await self._run(progress, prober, stop, clock)
        finally:
            self.release()

    async def _dry_run(
        self, progress: Callable[[ProgressEvent], None] | None, prober: Prober | None, clock: Clock
    ) -> DeployResult:
        number = self.version.number
        material = self.store.material(self.lineage, number)
        report = await deploy(material, self.nodes, options=self.options, progress=progress, prober=prober, clock=clock)
        active = self.store.lineage(self.lineage).active
        return self._result(report, None, active.number if active is not None else None)

    async def _run(
        self,
        progress: Callable[[ProgressEvent], None] | None,
        prober: Prober | None,
        stop: asyncio.Event | None,
        clock: Clock,
    ) -> DeployResult:
        store, number = self.store, self.version.number
        store.check_no_open_jobs(self.lineage)  # workers deploy the lineage's queued jobs now
        store.mark_interrupted(self.lineage)  # we hold the lock: any deploy recorded as running died
        settled = _settled(store, self.lineage, number)
        material = store.material(self.lineage, number)
        deployment = store.start_deployment(
            self.lineage, number, [n.name for n in self.nodes], started_at=clock(), rollback=self.rollback
        )
        self.deployment = deployment
        if self.rollback:
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
                store.activate(self.lineage, number, withdraw=True)
        recorder = _Recorder(store, deployment)

        def on_progress(event: ProgressEvent) -> None:
            if event.step is not None:
                recorder.step(event.node, event.step.value)
            elif event.outcome is not None:
                recorder.node_done(event.outcome)
            if progress is not None:
                progress(event)

        try:
            report = await deploy(
                material,
                self.nodes,
                options=self.options,
                progress=on_progress,
                prober=prober,
                stop=stop,
                settled=settled,
                clock=clock,
            )
        finally:
            await recorder.drain()
        state = DeploymentState.INTERRUPTED if report.stopped else DeploymentState.FINISHED
        results = [node_result(n, clock=clock) for n in report.nodes]
        try:
            store.finish_deployment(deployment, results, state=state, finished_at=report.finished_at)
            active = store.lineage(self.lineage).active
        except CertfleetError as exc:
            recovery = write_recovery(
                store,
                deployment=deployment,
                lineage=self.lineage,
                version=number,
                state=state,
                results=results,
                finished_at=report.finished_at,
            )
            return dataclasses.replace(
                self._result(report, None, None), deployment=deployment, record_error=exc, recovery=recovery
            )
        return self._result(report, deployment, active.number if active is not None else None)

    def _result(self, report: DeployReport, recorded: int | None, active: int | None) -> DeployResult:
        try:
            versions = {v.fingerprint: v.number for v in self.store.versions(self.lineage) if v.fingerprint}
        except CertfleetError:  # the store is failing: the report is still worth printing
            versions = {self.version.fingerprint: self.version.number} if self.version.fingerprint else {}
        return DeployResult(
            lineage=self.lineage,
            version=self.version.number,
            report=report,
            recorded=recorded,
            rollback=self.rollback,
            activates=self.activates,
            active=active,
            versions=versions,
            deployment=recorded,
        )


def settled_nodes(store: Store, lineage: str, number: int) -> set[str]:
    """The nodes whose latest result in the history is version ``number`` deployed or verified
    (a worker resuming a deployment hands them to the engine as settled)."""
    return _settled(store, lineage, number)


def _settled(store: Store, lineage: str, number: int) -> set[str]:
    """The nodes whose latest result in the history is this version deployed or verified."""
    return {
        node
        for node, (dep, result) in store.last_results(lineage).items()
        if dep.version == number and result.outcome in (Outcome.OK, Outcome.UNCHANGED)
    }


class _Recorder:
    """Writes each node's progress and result to the store as they come, in order, in a thread of
    its own: a store that is slow (busy, on a slow disk) never holds up the nodes. Both are
    batched: the results that arrived while a write ran go together in the next one, and so do
    the steps begun (and the nodes done), so a thousand nodes finishing close together take a few
    writes, not a thousand. A result whose write fails is left to the last write, which carries
    every result."""

    def __init__(self, store: Store, deployment: int) -> None:
        self.store = store
        self.deployment = deployment
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="certfleet-record")
        self._pending: list[asyncio.Future[None]] = []
        self._mutex = threading.Lock()
        self._steps: dict[str, list[str]] = {}
        self._done: set[str] = set()
        self._dirty: set[str] = set()  # not empty: a write of the progress is waiting in the pool
        self._results: list[NodeResult] = []  # not empty: a write of these is waiting in the pool

    def step(self, node: str, step: str) -> None:
        with self._mutex:
            self._steps.setdefault(node, []).append(step)
            waiting = bool(self._dirty)  # it takes this step too
            self._dirty.add(node)
        if not waiting:
            self._submit(self._write_progress)

    def node_done(self, outcome: NodeOutcome) -> None:
        with self._mutex:
            waiting = bool(self._results)  # it takes this result too
            self._results.append(node_result(outcome))
        if not waiting:
            self._submit(self._write)

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        loop = asyncio.get_running_loop()
        self._pending.append(loop.run_in_executor(self._pool, fn, *args))

    def _write_progress(self) -> None:
        with self._mutex:
            batch = {node: tuple(self._steps.get(node, ())) for node in self._dirty}
            done = {node for node in batch if node in self._done}
            self._dirty.clear()
        with contextlib.suppress(CertfleetError):
            self.store.record_progress(self.deployment, batch, done=done)

    def _write(self) -> None:
        with self._mutex:
            results, self._results = self._results, []
        try:
            self.store.record_nodes(self.deployment, results)
        except CertfleetError:
            return
        with self._mutex:  # a node is done once its result is in: said with the next progress
            names = {r.node for r in results}
            self._done |= names
            waiting = bool(self._dirty)
            self._dirty |= names
        if not waiting:
            self._write_progress()

    async def drain(self) -> None:
        try:
            await asyncio.gather(*self._pending, return_exceptions=True)
        finally:
            self._pool.shutdown(wait=False)


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
