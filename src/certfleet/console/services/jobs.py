"""Deploys started from the console: each runs in its own thread and event loop, so a page can
follow its per-node progress while it runs, whatever serves the requests. ``Jobs`` keeps the
recent ones for their pages. A job deploys the active version, rolls back to an earlier one, or
only plans a deploy (a dry run: every node's steps checked, nothing changed, nothing recorded)."""

from __future__ import annotations

import asyncio
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

__all__ = ["DeployJob", "JobKind", "JobState", "Jobs", "start_job"]

log = logging.getLogger("certfleet.console")

MAX_JOBS = 100


@dataclass
class NodeProgress:
    node: str
    steps: list[str] = field(default_factory=list)
    outcome: NodeOutcome | None = None

    @property
    def current(self) -> str | None:
        return None if self.outcome is not None or not self.steps else self.steps[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "steps": list(self.steps),
            "current": self.current,
            "done": self.outcome is not None,
            "outcome": self.outcome.to_dict() if self.outcome is not None else None,
        }


class JobState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"


class JobKind(StrEnum):
    DEPLOY = "deploy"
    DRY_RUN = "dry-run"  # the steps each node would take; nothing changed, nothing recorded
    ROLLBACK = "rollback"  # an earlier version; to every node, it becomes the active one


@dataclass
class DeployJob:
    """One version of a lineage on its way to chosen nodes, and how far each node is."""

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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def done(self) -> bool:
        return self.state != JobState.RUNNING

    @property
    def ok(self) -> bool:
        return self.state == JobState.DONE and all(p.outcome is not None and p.outcome.ok for p in self.nodes.values())

    def on_progress(self, event: ProgressEvent) -> None:
        with self._lock:
            progress = self.nodes[event.node]
            if event.step is not None:
                progress.steps.append(event.step.value)
            else:
                progress.outcome = event.outcome

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
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
                "deployment": self.deployment_id,
                "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "steps": [s.value for s in Step if s not in (Step.VERIFY, Step.ROLLBACK)],
                "nodes": [p.to_dict() for p in self.nodes.values()],
            }


def start_job(rollout: Rollout, *, kind: JobKind, job_id: str, account_id: int, clock: Clock) -> DeployJob:
    """Run ``rollout`` (checked and locked by the library already) in a thread of its own."""
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

    def run() -> None:
        try:
            with rollout:
                job.deployment_id = asyncio.run(rollout.run(progress=job.on_progress)).recorded
            job.state = JobState.DONE
        except CertfleetError as exc:
            job.error, job.state = str(exc), JobState.ERROR
        except Exception as exc:  # reported on the page; the console stays up
            log.exception("deploy of %s failed", lineage)
            job.error, job.state = f"{type(exc).__name__}: {exc}", JobState.ERROR
        finally:
            job.finished_at = clock()

    try:
        threading.Thread(target=run, name=f"certfleet-{kind.value}-{job_id}", daemon=True).start()
    except BaseException:
        rollout.release()
        raise
    return job


class Jobs:
    """The deploys started from this console, the last hundred finished ones kept for their pages."""

    def __init__(self, audit: Audit, *, clock: Clock) -> None:
        self._audit = audit
        self._clock = clock
        self._jobs: dict[str, DeployJob] = {}
        self._lock = threading.Lock()

    def start(self, actor: Actor, lineage: str, nodes: Sequence[str], *, dry_run: bool = False) -> DeployJob:
        """Deploy the active version of ``lineage`` to ``nodes`` (all its nodes when none), recorded
        in the name of ``actor``; refused at once when another deploy of the lineage runs. A dry run
        plans each node's steps and changes nothing."""
        store = self._audit.store_for(actor)
        rollout = prepare_deploy(store, lineage, nodes, options=DeployOptions(dry_run=True) if dry_run else None)
        return self._run(actor, rollout, JobKind.DRY_RUN if dry_run else JobKind.DEPLOY)

    def rollback(self, actor: Actor, lineage: str, nodes: Sequence[str], *, to: int | None = None) -> DeployJob:
        """Deploy the version before the active one (or ``to``) to ``nodes``; with none named, to
        every node of the lineage, and that version becomes the active one."""
        rollout = prepare_rollback(self._audit.store_for(actor), lineage, nodes, to=to)
        return self._run(actor, rollout, JobKind.ROLLBACK)

    def _run(self, actor: Actor, rollout: Rollout, kind: JobKind) -> DeployJob:
        job = start_job(
            rollout, kind=kind, job_id=secrets.token_urlsafe(12), account_id=actor.account_id, clock=self._clock
        )
        with self._lock:
            self._jobs[job.id] = job
            finished = sorted((j for j in self._jobs.values() if j.done), key=lambda j: j.started_at)
            for old in finished[: max(0, len(self._jobs) - MAX_JOBS)]:
                del self._jobs[old.id]
        return job

    def get(self, job_id: str) -> DeployJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError("no such deploy", hint="deploys are listed on the deploy page while the console runs")
        return job

    def recent(self, limit: int = 10) -> list[DeployJob]:
        """The newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.started_at, reverse=True)[:limit]
