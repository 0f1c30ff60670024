"""A deploy as jobs: the deployment recorded with one job per node, the jobs of nodes in no zone
run by the process that asked (unless it only queues them), the others followed until the
workers of their zones have done them.

``certfleet deploy`` comes here on a PostgreSQL store when a chosen node has a zone, or with
``--queue``; otherwise it deploys every node itself (:mod:`certfleet.fleet.rollout`), which is the
same engine on the same nodes without the queue in between. On SQLite every deploy runs in the
process that asked: one machine holds the store and its keys, and zones have no meaning there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from certfleet.errors import InputError
from certfleet.fleet.deploy import DeployOptions, Prober
from certfleet.fleet.model import NodeSpec
from certfleet.jobs.worker import JobEvent, Worker, WorkerOptions
from certfleet.store import DeploymentRecord, JobRecord, JobState, Store

__all__ = ["QueuedDeploy", "enqueue_deploy", "follow", "run_queued"]


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

    @property
    def done(self) -> bool:
        return all(j.state not in JobState.OPEN for j in self.jobs)

    @property
    def ok(self) -> bool:
        return self.done and self.deployment.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "version": self.version,
            "deployment": self.deployment.id,
            "state": self.deployment.state.value,
            "ok": self.ok,
            "done": self.done,
            "queued_only": self.queued_only,
            "waiting_zones": list(self.waiting),
            "nodes": [r.to_dict() for r in self.deployment.results],
            "jobs": [j.to_dict() for j in self.jobs],
        }


def enqueue_deploy(store: Store, lineage: str, nodes: Sequence[NodeSpec]) -> tuple[int, int]:
    """Record a deployment of the lineage's active version to ``nodes`` as jobs: (its id, the
    version). Taken under the lineage's deploy lock, which is let go at once: the workers hold
    each node's lock instead."""
    record = store.lineage(lineage)
    if record.active is None:
        raise InputError(
            f"lineage {lineage} has no certificate yet",
            hint=f"`certfleet request {lineage}`, then `certfleet import {lineage}` what the CA sends",
        )
    with store.deploy_lock(lineage):
        store.mark_interrupted(lineage)
        deployment = store.enqueue_deployment(lineage, record.active.number, [n.name for n in nodes])
    return deployment, record.active.number


def _deployment(store: Store, lineage: str, deployment: int) -> DeploymentRecord:
    for d in store.deployments(lineage, limit=200):
        if d.id == deployment:
            return d
    raise InputError(f"no deployment {deployment} of lineage {lineage}")


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
) -> QueuedDeploy:
    """Queue the deploy; with ``inline``, run the jobs of nodes in no zone here, then follow the
    others for up to ``wait`` seconds. Without, return at once with the jobs queued."""
    deployment, version = await asyncio.to_thread(enqueue_deploy, store, lineage, nodes)
    if not inline:
        jobs = await asyncio.to_thread(store.jobs, deployment=deployment, limit=100_000)
        record = await asyncio.to_thread(_deployment, store, lineage, deployment)
        return QueuedDeploy(lineage, version, record, tuple(sorted(jobs, key=lambda j: j.id)), queued_only=True)
    worker = Worker(
        store,
        WorkerOptions(
            zone=None,
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
