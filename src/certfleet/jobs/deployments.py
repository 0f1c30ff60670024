"""A deploy as jobs: the deployment recorded with one job per node, the jobs of nodes in no zone
run by the process that asked (unless it only queues them), the others followed until the
workers of their zones have done them.

:func:`route_deploy` decides, for every caller alike (``certfleet deploy``, the console's deploy,
the autopilot's deploy step): on a PostgreSQL store a deploy goes through the queue when a chosen
node has a zone, or when asked to (``--queue``); otherwise the caller deploys every node itself
(:mod:`certfleet.fleet.rollout`), which is the same engine on the same nodes without the queue in
between. On SQLite every deploy runs in the process that asked: one machine holds the store and
its keys, and zones have no meaning there. :func:`run_queued` then queues, runs the nodes of no
zone here and follows the rest; :meth:`QueuedDeploy.as_result` gives the outcome in the form of a
deploy run here, the nodes no worker served counted as failed, naming their zone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from certfleet.errors import InputError
from certfleet.fleet.deploy import DeployOptions, DeployReport, NodeOutcome, Prober, Step
from certfleet.fleet.model import NodeSpec, Outcome
from certfleet.jobs.worker import JobEvent, Worker, WorkerOptions
from certfleet.store import DeploymentRecord, JobRecord, JobState, Store

if TYPE_CHECKING:
    from certfleet.fleet.rollout import DeployResult

__all__ = [
    "DeployRoute",
    "QueuedDeploy",
    "enqueue_deploy",
    "enqueue_rollback",
    "follow",
    "route_deploy",
    "run_enqueued",
    "run_queued",
]


@dataclass(frozen=True, slots=True)
class DeployRoute:
    """Where a deploy of ``nodes`` runs: through the queue (``queued``), or all in the process
    that asks. ``zones``: the zones of the nodes chosen (on SQLite they are noted and ignored)."""

    lineage: str
    nodes: tuple[NodeSpec, ...]
    zones: tuple[str, ...]
    queued: bool
    shared: bool  # the store is on PostgreSQL

    @property
    def ignored_zones(self) -> tuple[str, ...]:
        """Zones that have no meaning here (a SQLite store): every node is deployed by the caller."""
        return () if self.shared else self.zones


def route_deploy(
    store: Store, lineage: str, names: Sequence[str] = (), *, queue: bool = False, here: str | None = None
) -> DeployRoute:
    """Decide where a deploy of ``names`` (every node of the lineage when none) runs. ``queue``
    asks for jobs whatever the zones; it needs a store shared on PostgreSQL. ``here``: the zone
    of the process that asks (a worker of that zone running a renewal), whose nodes it deploys
    itself; by default the process is in no zone."""
    from certfleet.fleet.rollout import select_nodes

    shared = not store.url.startswith("sqlite")
    if queue and not shared:
        raise InputError(
            "a queued deploy needs a store shared on PostgreSQL",
            hint="on a SQLite store every deploy runs in the process that asks for it",
        )
    chosen = tuple(select_nodes(store, lineage, names))
    zones_of = store.node_zones()
    zones = tuple(sorted({z for n in chosen if (z := zones_of.get(n.name))}))
    elsewhere = any(zones_of.get(n.name) != here for n in chosen)
    return DeployRoute(lineage, chosen, zones, queued=shared and (queue or elsewhere), shared=shared)


@dataclass(frozen=True, slots=True)
class QueuedDeploy:
    """A deployment run as jobs: its record as it stands, its jobs, and the zones whose jobs no
    worker took before the wait ran out (empty when every job ended)."""

    lineage: str
    version: int
    deployment: DeploymentRecord
    jobs: tuple[JobRecord, ...]
    waiting: tuple[str, ...] = ()
    queued_only: bool = False  # --queue: the deploy only queued the jobs and did not wait
    rollback: bool = False  # a rollback to an earlier version
    activates: bool = False  # a rollback of every node: the version became the active one

    @property
    def done(self) -> bool:
        return all(j.state not in JobState.OPEN for j in self.jobs)

    @property
    def ok(self) -> bool:
        return self.done and self.deployment.ok

    @property
    def error(self) -> str | None:
        """Why the deploy is not over: the zones no worker served in time (None when it is)."""
        if self.queued_only or not self.waiting:
            return None
        return f"no worker finished the jobs of {', '.join(self.waiting)} in time"

    def as_result(self, *, fingerprint: str = "", versions: dict[str, int] | None = None) -> DeployResult:
        """The deploy as one run here reports it: each node's recorded outcome; a node whose job
        no worker ended is ``failed``, its message naming the zone whose worker it waits for."""
        from certfleet.fleet.rollout import DeployResult

        jobs = {j.node: j for j in self.jobs}
        nodes = []
        for r in self.deployment.results:
            job = jobs.get(r.node)
            if job is not None and job.state in JobState.OPEN:
                zone = job.zone or "(no zone)"
                message = f"no worker of zone {zone} deployed it in time (its job {job.id} stays {job.state})"
                nodes.append(NodeOutcome(r.node, Outcome.FAILED, message=message))
                continue
            message, _, output = r.output.partition("\n")
            step = next((s for s in Step if s.value == r.failed_step), None)
            took = (r.finished_at - r.started_at).total_seconds()
            outcome = NodeOutcome(r.node, r.outcome, step=step, message=message, output=output, duration=took)
            nodes.append(
                dataclasses.replace(
                    outcome, served=r.served_fingerprint, started_at=r.started_at, finished_at=r.finished_at
                )
            )
        d = self.deployment
        report = DeployReport(
            fingerprint or d.fingerprint or "", f"v{self.version}", tuple(nodes), d.started_at,
            d.finished_at or d.started_at,
        )  # fmt: skip
        return DeployResult(
            self.lineage, self.version, report, recorded=d.id, deployment=d.id, versions=dict(versions or {}),
            rollback=self.rollback, activates=self.activates,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "version": self.version,
            "deployment": self.deployment.id,
            "state": self.deployment.state.value,
            "ok": self.ok,
            "done": self.done,
            "queued_only": self.queued_only,
            "rollback": self.rollback,
            "activates": self.activates,
            "waiting_zones": list(self.waiting),
            "nodes": [r.to_dict() for r in self.deployment.results],
            "jobs": [j.to_dict() for j in self.jobs],
        }


def enqueue_deploy(store: Store, lineage: str, nodes: Sequence[NodeSpec]) -> tuple[int, int]:
    """Record a deployment of the lineage's active version to ``nodes`` as jobs: (its id, the
    version). Taken under the lineage's deploy lock, which is let go at once: the workers hold
    each node's lock instead."""
    from certfleet.fleet.rollout import settled_nodes

    record = store.lineage(lineage)
    if record.active is None:
        raise InputError(
            f"lineage {lineage} has no certificate yet",
            hint=f"`certfleet request {lineage}`, then `certfleet import {lineage}` what the CA sends",
        )
    with store.deploy_lock(lineage):
        store.mark_interrupted(lineage)
        settled = settled_nodes(store, lineage, record.active.number)
        deployment = store.enqueue_deployment(lineage, record.active.number, [n.name for n in nodes], settled=settled)
    return deployment, record.active.number


def enqueue_rollback(
    store: Store, lineage: str, nodes: Sequence[NodeSpec], *, to: int | None = None, activates: bool = False
) -> tuple[int, int]:
    """Record a rollback to the version before the active one (or ``to``) as jobs, as
    :func:`enqueue_deploy` records a deploy: (its id, the version). With ``activates`` (every
    node of the lineage) the version becomes the active one at once, as a rollback run here does."""
    from certfleet.fleet.rollout import previous_version, settled_nodes
    from certfleet.store import AuditAction

    version = previous_version(store, lineage, to)
    with store.deploy_lock(lineage):
        store.mark_interrupted(lineage)
        before = store.lineage(lineage).active
        settled = settled_nodes(store, lineage, version.number)
        deployment = store.enqueue_deployment(
            lineage, version.number, [n.name for n in nodes], rollback=True, settled=settled
        )
        detail = {
            "lineage": lineage,
            "version": version.number,
            "from": before.number if before is not None else None,
            "nodes": [n.name for n in nodes],
            "activates": activates,
        }
        store.audit(AuditAction.ROLLBACK, detail)
        if activates:
            store.activate(lineage, version.number, withdraw=True)
    return deployment, version.number


def _deployment(store: Store, lineage: str, deployment: int) -> DeploymentRecord:
    """That one deployment (two queries), not the lineage's recent history with every result."""
    record = store.deployment_progress(deployment).deployment
    if record.lineage != lineage:
        raise InputError(f"no deployment {deployment} of lineage {lineage}")
    return record


def _waiting(jobs: Sequence[JobRecord]) -> tuple[str, ...]:
    return tuple(sorted({j.zone or "(no zone)" for j in jobs if j.state in JobState.OPEN}))


async def follow(
    store: Store,
    lineage: str,
    version: int,
    deployment: int,
    *,
    wait: float,
    poll: float = 0.5,
    stop: asyncio.Event | None = None,
    seen: Callable[[JobRecord], None] | None = None,
) -> QueuedDeploy:
    """Watch the deployment's jobs until each ended, ``wait`` seconds passed or ``stop`` was set;
    ``seen`` is called with each job that ended since the last look."""
    deadline = time.monotonic() + wait
    reported: set[int] = set()
    while True:
        jobs = await asyncio.to_thread(store.jobs, deployment=deployment, limit=100_000)
        if seen is not None:
            for j in jobs:
                if j.state not in JobState.OPEN and j.id not in reported:
                    reported.add(j.id)
                    seen(j)
        open_ = [j for j in jobs if j.state in JobState.OPEN]
        if not open_ or time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            record = await asyncio.to_thread(_deployment, store, lineage, deployment)
            return QueuedDeploy(lineage, version, record, tuple(sorted(jobs, key=lambda j: j.id)), _waiting(jobs))
        await asyncio.sleep(poll)


async def run_queued(
    store: Store,
    lineage: str,
    nodes: Sequence[NodeSpec],
    *,
    options: DeployOptions,
    inline: bool = True,
    wait: float = 600.0,
    lease: float = 30.0,
    stop: asyncio.Event | None = None,
    log: Callable[[JobEvent], None] | None = None,
    prober: Prober | None = None,
    rollback: bool = False,
    to: int | None = None,
    activates: bool = False,
    here: str | None = None,
) -> QueuedDeploy:
    """Queue the deploy (``rollback``: a rollback to the version before the active one, or ``to``;
    ``activates`` it when every node goes back); with ``inline``, run the jobs of nodes in no zone
    (in zone ``here``, for a process of that zone) here, then follow the others for up to
    ``wait`` seconds. Without, return at once with the jobs queued."""
    if rollback:
        deployment, version = await asyncio.to_thread(
            functools.partial(enqueue_rollback, store, lineage, nodes, to=to, activates=activates)
        )
    else:
        deployment, version = await asyncio.to_thread(enqueue_deploy, store, lineage, nodes)
    result = await run_enqueued(
        store, lineage, version, deployment, options=options, inline=inline, wait=wait, lease=lease, stop=stop,
        log=log, prober=prober, here=here,
    )  # fmt: skip
    return dataclasses.replace(result, rollback=rollback, activates=activates)


async def run_enqueued(
    store: Store,
    lineage: str,
    version: int,
    deployment: int,
    *,
    options: DeployOptions,
    inline: bool = True,
    wait: float = 600.0,
    lease: float = 30.0,
    stop: asyncio.Event | None = None,
    log: Callable[[JobEvent], None] | None = None,
    prober: Prober | None = None,
    here: str | None = None,
) -> QueuedDeploy:
    """:func:`run_queued` for a deployment queued already (:func:`enqueue_deploy`): a caller that
    answers with the deployment's id before its nodes are done (the console) queues first."""
    if not inline:
        jobs = await asyncio.to_thread(store.jobs, deployment=deployment, limit=100_000)
        record = await asyncio.to_thread(_deployment, store, lineage, deployment)
        return QueuedDeploy(lineage, version, record, tuple(sorted(jobs, key=lambda j: j.id)), queued_only=True)
    worker = Worker(
        store,
        WorkerOptions(
            zone=here,
            lease=lease,
            once=True,
            deployment=deployment,
            batch=options.concurrency,
            deploy=options,
        ),
        log=log,
        prober=prober,
    )
    await worker.run(stop)
    return await follow(store, lineage, version, deployment, wait=wait, stop=stop)
