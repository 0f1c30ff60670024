"""Deploys started from the console, and any deploy followed from it.

A deploy runs in a thread and event loop of its own, so that a page follows its per-node progress
while it runs, whatever serves the requests. Its progress is the store's
(:meth:`certfleet.store.Store.deployment_progress`): a deploy recorded in the history is followed
by its deployment id, from any console process sharing the store, and so is one run by
``certfleet deploy`` or by the autopilot. What only this process holds is the thread, and a dry
run (it records nothing): a dry run, or a deploy stopped before it was recorded, is followed here
by a random id, on this console only. A job deploys the active version, rolls back to an earlier
one, or only plans a deploy (a dry run: every node's steps checked, nothing changed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from certfleet.clock import Clock
from certfleet.console.services.audit import Actor, Audit
from certfleet.errors import CertfleetError, NotFoundError
from certfleet.fleet.deploy import DeployOptions, NodeOutcome, ProgressEvent, Step
from certfleet.fleet.rollout import Rollout, prepare_deploy, prepare_rollback
from certfleet.jobs.deployments import DeployRoute, enqueue_deploy, enqueue_rollback, route_deploy, run_enqueued
from certfleet.store import DeploymentProgress, DeploymentRecord, DeploymentState, Store

__all__ = ["DeployJob", "JobKind", "JobState", "JobView", "Jobs", "start_job"]

log = logging.getLogger("certfleet.console")

MAX_JOBS = 100  # the jobs this console keeps in memory (its threads, its dry runs)
RECORDED_WAIT = 30.0  # seconds a request waits for a deploy to be recorded, to answer with its id
QUEUED_WAIT = 600.0  # seconds a deploy as jobs is followed before its page names the zones not served
_STEPS = [s.value for s in Step if s not in (Step.VERIFY, Step.ROLLBACK)]


class JobState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"


class JobKind(StrEnum):
    DEPLOY = "deploy"
    DRY_RUN = "dry-run"  # the steps each node would take; nothing changed, nothing recorded
    ROLLBACK = "rollback"  # an earlier version; to every node, it becomes the active one


@dataclass(frozen=True, slots=True)
class JobView:
    """What a job's page and the API show: a deploy and how far each node is."""

    id: str
    kind: JobKind
    lineage: str
    version: int
    fingerprint: str
    actor: str
    state: JobState
    ok: bool
    started_at: dt.datetime
    finished_at: dt.datetime | None
    nodes: tuple[dict[str, Any], ...]
    activates: bool = False
    error: str = ""
    deployment: int | None = None

    @property
    def done(self) -> bool:
        return self.state != JobState.RUNNING

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "activates": self.activates,
            "lineage": self.lineage,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "actor": self.actor,
            "state": self.state.value,
            "ok": self.ok,
            "error": self.error,
            "deployment": self.deployment,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "steps": list(_STEPS),
            "nodes": [dict(n) for n in self.nodes],
        }

    @classmethod
    def of(cls, progress: DeploymentProgress, *, activates: bool = False, error: str = "") -> JobView:
        """A deployment as the store has it, as it runs or ran."""
        record = progress.deployment
        return cls._of_record(record, tuple(n.to_dict() for n in progress.nodes), activates=activates, error=error)

    @classmethod
    def of_record(cls, record: DeploymentRecord) -> JobView:
        """A deployment from the history, without its steps (the list of recent deploys)."""
        return cls._of_record(record, ())

    @classmethod
    def _of_record(
        cls, record: DeploymentRecord, nodes: tuple[dict[str, Any], ...], *, activates: bool = False, error: str = ""
    ) -> JobView:
        running = record.state is DeploymentState.RUNNING
        if error:
            state = JobState.ERROR
        elif running:
            state = JobState.RUNNING
        else:
            state = JobState.DONE if record.state is DeploymentState.FINISHED else JobState.ERROR
            if state is JobState.ERROR:
                error = "the deploy was interrupted: some nodes may be left unproven"
        return cls(
            id=str(record.id),
            kind=JobKind.ROLLBACK if record.rollback else JobKind.DEPLOY,
            lineage=record.lineage,
            version=record.version,
            fingerprint=record.fingerprint or "",
            actor=record.actor,
            state=state,
            ok=not error and record.ok,
            started_at=record.started_at,
            finished_at=None if running else record.finished_at,
            nodes=nodes,
            activates=activates,
            error=error,
            deployment=record.id,
        )


@dataclass
class NodeProgress:
    node: str
    steps: list[str] = field(default_factory=list)
    outcome: NodeOutcome | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "steps": list(self.steps),
            "current": None if self.outcome is not None or not self.steps else self.steps[-1],
            "done": self.outcome is not None,
            "outcome": self.outcome.to_dict() if self.outcome is not None else None,
        }


@dataclass
class DeployJob:
    """A deploy this console runs: its thread's view. Once the deploy is recorded (``deployment_id``)
    the store's progress is what is shown; until then, and for a dry run, this."""

    id: str
    lineage: str
    version: int
    fingerprint: str
    actor: str
    account_id: int
    started_at: dt.datetime
    nodes: dict[str, NodeProgress]
    kind: JobKind = JobKind.DEPLOY
    activates: bool = False  # a rollback to every node: the version becomes the active one
    state: JobState = JobState.RUNNING
    error: str = ""
    deployment_id: int | None = None
    finished_at: dt.datetime | None = None
    waiting: str = ""  # a deploy as jobs: the zones no worker served in time
    recorded: threading.Event = field(default_factory=threading.Event, repr=False)  # the id is known, or never
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def done(self) -> bool:
        return self.state != JobState.RUNNING

    def on_progress(self, event: ProgressEvent) -> None:
        with self._lock:
            progress = self.nodes[event.node]
            if event.step is not None:
                progress.steps.append(event.step.value)
            else:
                progress.outcome = event.outcome

    def view(self) -> JobView:
        with self._lock:
            nodes = tuple(p.to_dict() for p in self.nodes.values())
            ok = self.state == JobState.DONE and all(
                p.outcome is not None and p.outcome.ok for p in self.nodes.values()
            )
        return JobView(
            id=self.id,
            kind=self.kind,
            lineage=self.lineage,
            version=self.version,
            fingerprint=self.fingerprint,
            actor=self.actor,
            state=self.state,
            ok=ok,
            started_at=self.started_at,
            finished_at=self.finished_at,
            nodes=nodes,
            activates=self.activates,
            error=self.error,
            deployment=self.deployment_id,
        )


def start_job(rollout: Rollout, *, kind: JobKind, job_id: str, account_id: int, clock: Clock) -> DeployJob:
    """Run ``rollout`` (checked and locked by the library already) in a thread of its own; the
    job's ``recorded`` is set once the deploy is in the history (its ``deployment_id``), or ends."""
    job = DeployJob(
        id=job_id,
        lineage=rollout.lineage,
        version=rollout.version.number,
        fingerprint=rollout.version.fingerprint or "",
        actor=rollout.store.actor,
        account_id=account_id,
        started_at=clock(),
        nodes={n.name: NodeProgress(n.name) for n in rollout.nodes},
        kind=kind,
        activates=rollout.activates,
    )
    lineage = rollout.lineage

    def progress(event: ProgressEvent) -> None:
        if not job.recorded.is_set():  # the first step: the deploy is recorded by now
            job.deployment_id = rollout.deployment
            job.recorded.set()
        job.on_progress(event)

    def run() -> None:
        try:
            with rollout:
                result = asyncio.run(rollout.run(progress=progress))
                job.deployment_id = result.deployment
            job.state = JobState.DONE
        except CertfleetError as exc:
            job.error, job.state = str(exc), JobState.ERROR
        except Exception as exc:  # reported on the page; the console stays up
            log.exception("deploy of %s failed", lineage)
            job.error, job.state = f"{type(exc).__name__}: {exc}", JobState.ERROR
        finally:
            if job.deployment_id is None:
                job.deployment_id = rollout.deployment
            job.finished_at = clock()
            job.recorded.set()

    try:
        threading.Thread(target=run, name=f"certfleet-{kind.value}-{job_id}", daemon=True).start()
    except BaseException:
        rollout.release()
        raise
    return job


class Jobs:
    """The deploys this console runs (their threads; the last hundred finished kept), and every
    recorded deploy read from the store by its deployment id."""

    def __init__(self, audit: Audit, *, clock: Clock) -> None:
        self._audit = audit
        self._clock = clock
        self._jobs: dict[str, DeployJob] = {}
        self._lock = threading.Lock()

    def start(self, actor: Actor, lineage: str, nodes: Sequence[str], *, dry_run: bool = False) -> JobView:
        """Deploy the active version of ``lineage`` to ``nodes`` (all its nodes when none), recorded
        in the name of ``actor``; refused at once when another deploy of the lineage runs. A dry run
        plans each node's steps and changes nothing."""
        store = self._audit.store_for(actor)
        if not dry_run:
            route = route_deploy(store, lineage, nodes)
            if route.queued:  # PostgreSQL, nodes in zones: their zones' workers deploy them
                return self._queued(actor, store, route)
        rollout = prepare_deploy(store, lineage, nodes, options=DeployOptions(dry_run=True) if dry_run else None)
        return self._run(actor, rollout, JobKind.DRY_RUN if dry_run else JobKind.DEPLOY)

    def _queued(
        self,
        actor: Actor,
        store: Store,
        route: DeployRoute,
        *,
        rollback: bool = False,
        to: int | None = None,
        activates: bool = False,
    ) -> JobView:
        """A deploy (or rollback) as jobs (:mod:`certfleet.jobs.deployments`): queued at once, so
        the answer names its deployment; the nodes of no zone are deployed by a thread of this
        console, the others by their zones' workers, and every console follows them in the store."""
        if rollback:
            deployment, version = enqueue_rollback(store, route.lineage, route.nodes, to=to, activates=activates)
        else:
            deployment, version = enqueue_deploy(store, route.lineage, route.nodes)
        found = [v for v in store.versions(route.lineage) if v.number == version]
        job = DeployJob(
            id=secrets.token_urlsafe(12),
            lineage=route.lineage,
            version=version,
            fingerprint=(found[0].fingerprint or "") if found else "",
            actor=store.actor,
            account_id=actor.account_id,
            started_at=self._clock(),
            nodes={n.name: NodeProgress(n.name) for n in route.nodes},
            kind=JobKind.ROLLBACK if rollback else JobKind.DEPLOY,
            activates=activates,
            deployment_id=deployment,
        )
        job.recorded.set()

        def run() -> None:
            try:
                result = asyncio.run(
                    run_enqueued(store, route.lineage, version, deployment, options=DeployOptions(), wait=QUEUED_WAIT)
                )
                job.waiting = result.error or ""
                job.state = JobState.DONE
            except CertfleetError as exc:
                job.error, job.state = str(exc), JobState.ERROR
            except Exception as exc:  # reported on the page; the console stays up
                log.exception("deploy of %s failed", route.lineage)
                job.error, job.state = f"{type(exc).__name__}: {exc}", JobState.ERROR
            finally:
                job.finished_at = self._clock()

        threading.Thread(target=run, name=f"certfleet-deploy-{job.id}", daemon=True).start()
        self._keep(job)
        return self._view(job)

    def rollback(self, actor: Actor, lineage: str, nodes: Sequence[str], *, to: int | None = None) -> JobView:
        """Deploy the version before the active one (or ``to``) to ``nodes``; with none named, to
        every node of the lineage, and that version becomes the active one."""
        store = self._audit.store_for(actor)
        route = route_deploy(store, lineage, nodes)
        if route.queued:  # PostgreSQL, nodes in zones: their zones' workers roll them back
            return self._queued(actor, store, route, rollback=True, to=to, activates=not nodes)
        rollout = prepare_rollback(store, lineage, nodes, to=to)
        return self._run(actor, rollout, JobKind.ROLLBACK)

    def _run(self, actor: Actor, rollout: Rollout, kind: JobKind) -> JobView:
        job = start_job(
            rollout, kind=kind, job_id=secrets.token_urlsafe(12), account_id=actor.account_id, clock=self._clock
        )
        self._keep(job)
        if kind is not JobKind.DRY_RUN:
            # answer with the deployment's id, which any console can follow; a store too busy to
            # record it in time leaves the random id, followed here
            job.recorded.wait(RECORDED_WAIT)
        return self._view(job)

    def _keep(self, job: DeployJob) -> None:
        with self._lock:
            self._jobs[job.id] = job
            finished = sorted((j for j in self._jobs.values() if j.done), key=lambda j: j.started_at)
            for old in finished[: max(0, len(self._jobs) - MAX_JOBS)]:
                del self._jobs[old.id]

    def _view(self, job: DeployJob) -> JobView:
        if job.deployment_id is None:
            return job.view()
        try:
            return self.deployment(job.deployment_id, activates=job.activates, error=job.error, waiting=job.waiting)
        except CertfleetError:  # the store is failing: this thread's view still says something
            return job.view()

    def deployment(
        self, deployment: int, *, activates: bool | None = None, error: str = "", waiting: str = ""
    ) -> JobView:
        """A recorded deploy as it runs or ran, whichever process runs it. A deploy run as jobs
        shows each node's zone and job; ``waiting`` (no worker served a zone in time) is its error
        while the deployment is not over."""
        store = self._audit.store
        progress = store.deployment_progress(deployment)
        if activates is None:  # another process's rollback: to every node it made its version active
            record = progress.deployment
            active = store.lineage(record.lineage).active if record.rollback else None
            activates = active is not None and active.number == record.version and not progress.running
        if not error and progress.running:
            error = waiting
        view = JobView.of(progress, activates=activates, error=error)
        jobs = {j.node: j for j in store.jobs(deployment=deployment, limit=100_000)}
        if not jobs:
            return view
        nodes = []
        for n in view.nodes:
            job = jobs.get(str(n["node"]))
            if job is not None:
                n = {**n, "zone": job.zone, "job": {"id": job.id, "state": job.state, "worker": job.lease_owner}}
            nodes.append(n)
        return dataclasses.replace(view, nodes=tuple(nodes))

    def get(self, job_id: str) -> JobView:
        """A job by its id: a deployment's id (any console's, any process's), or the random id of
        a job of this console that was never recorded (a dry run)."""
        if job_id.isdigit() and len(job_id) < 19:
            with self._lock:
                mine = next((j for j in self._jobs.values() if j.deployment_id == int(job_id)), None)
            if mine is not None:
                return self._view(mine)
            try:
                return self.deployment(int(job_id))
            except NotFoundError:
                pass
        else:
            with self._lock:
                job = self._jobs.get(job_id)
            if job is not None:
                return self._view(job)
        raise NotFoundError("no such deploy", hint="the deploy page lists the recent ones")

    def recent(self, limit: int = 10) -> list[JobView]:
        """The newest first: the store's deployments, and this console's dry runs."""
        views = [JobView.of_record(d) for d in self._audit.store.deployments(limit=limit)]
        with self._lock:
            views += [j.view() for j in self._jobs.values() if j.deployment_id is None]
        return sorted(views, key=lambda v: v.started_at, reverse=True)[:limit]
