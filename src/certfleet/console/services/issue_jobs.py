"""Issues started from the console ("issue now", and its preflight alone), each in its own thread
and event loop like a deploy (:mod:`certfleet.console.services.jobs`), so that a page can follow
each name's authorization (pending, valid, invalid) while the CA checks them. The issuing is the
library's :func:`certfleet.acme.issue.issue` and :func:`~certfleet.acme.issue.dry_run`, the same
calls as ``certfleet issue`` and ``certfleet issue --dry-run``."""

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

from certfleet.acme.issue import IssueEvent, IssueResult, dry_run, issue, plan_issue
from certfleet.acme.lookup import DnsSettings
from certfleet.acme.preflight import PreflightReport
from certfleet.clock import Clock
from certfleet.console.services.audit import Actor, Audit
from certfleet.console.services.autopilot import taken_pass_lock
from certfleet.console.services.jobs import JobState
from certfleet.errors import CertfleetError, ConflictError, NotFoundError
from certfleet.store import Store

__all__ = ["IssueJob", "IssueJobKind", "IssueJobs", "NameState"]

log = logging.getLogger("certfleet.console")

MAX_JOBS = 100
MAX_LOG = 500


class IssueJobKind(StrEnum):
    ISSUE = "issue"
    PREFLIGHT = "preflight"  # only the checks: nothing ordered, nothing stored


class NameState(StrEnum):
    WAITING = "waiting"  # not asked yet
    PENDING = "pending"  # the proof is in place (or being put), the CA has not said yet
    VALID = "valid"
    INVALID = "invalid"  # the CA could not verify it
    STOPPED = "stopped"  # the order ended before the CA said


@dataclass
class IssueJob:
    """One lineage's issue, and how far each of its names is."""

    id: str
    lineage: str
    kind: IssueJobKind
    actor: str
    account_id: int
    started_at: dt.datetime
    names: dict[str, NameState]
    issuer: str | None = None  # the issuer being tried now
    state: JobState = JobState.RUNNING
    error: str = ""
    hint: str = ""
    steps: list[str] = field(default_factory=list)
    result: IssueResult | None = None
    report: PreflightReport | None = None
    finished_at: dt.datetime | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def done(self) -> bool:
        return self.state != JobState.RUNNING

    @property
    def ok(self) -> bool:
        if self.state != JobState.DONE:
            return False
        if self.kind is IssueJobKind.PREFLIGHT:
            return self.report is not None and self.report.ok
        return self.result is not None and self.result.ok

    @property
    def version(self) -> int | None:
        imported = self.result.imported if self.result is not None else None
        return imported.version.number if imported is not None and imported.version is not None else None

    def on_event(self, event: IssueEvent) -> None:
        with self._lock:
            line = " ".join(p for p in (event.issuer and f"{event.issuer}:", event.name, event.step, event.detail) if p)
            if len(self.steps) < MAX_LOG:
                self.steps.append(line)
            if event.issuer and event.step == "order":
                if event.issuer != self.issuer:  # the next issuer starts afresh
                    self.names = dict.fromkeys(self.names, NameState.WAITING)
                self.issuer = event.issuer
            if event.name in self.names:
                if event.step in ("present", "answer"):
                    self.names[event.name] = NameState.PENDING
                elif event.step == "valid":
                    self.names[event.name] = NameState.VALID
            if event.step == "failed":
                for name, state in self.names.items():
                    if state is NameState.PENDING:
                        named = f" {name} " in f" {event.detail} "
                        self.names[name] = NameState.INVALID if named else NameState.STOPPED

    def settle(self, reused: tuple[str, ...] | list[str]) -> None:
        """At the end: names the CA had validated already are valid; any still pending stopped."""
        with self._lock:
            for name in reused:
                if name in self.names:
                    self.names[name] = NameState.VALID
            for name, state in self.names.items():
                if state is NameState.PENDING:
                    self.names[name] = NameState.STOPPED

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            names = [{"name": n, "state": s.value} for n, s in self.names.items()]
            steps = list(self.steps)
        report = self.report or (self.result.preflight if self.result is not None else None)
        return {
            "id": self.id,
            "kind": self.kind.value,
            "lineage": self.lineage,
            "actor": self.actor,
            "state": self.state.value,
            "ok": self.ok,
            "error": self.error,
            "hint": self.hint,
            "issuer": self.result.issuer if self.result is not None else self.issuer,
            "version": self.version,
            "names": names,
            "steps": steps,
            "preflight": report.to_dict() if report is not None else None,
            "result": self.result.to_dict() if self.result is not None else None,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


class IssueJobs:
    """The issues started from this console, the last hundred finished ones kept for their pages."""

    def __init__(self, audit: Audit, *, clock: Clock) -> None:
        self._audit = audit
        self._clock = clock
        self._jobs: dict[str, IssueJob] = {}
        self._lock = threading.Lock()

    def start(self, actor: Actor, lineage: str, *, preflight_only: bool = False) -> IssueJob:
        """Issue ``lineage`` from its issuers in order (or only run the preflight), in a thread;
        what no CA could issue (no issuer, a wildcard without dns-01...) is refused at once."""
        store = self._audit.store_for(actor)
        dns = DnsSettings.from_env()
        the_plan = plan_issue(store, lineage, dns=dns)
        kind = IssueJobKind.PREFLIGHT if preflight_only else IssueJobKind.ISSUE
        # an issue and an autopilot pass (which may issue the same lineage) never run at once,
        # whoever started the pass: the issue holds the pass lock while it runs
        lock = taken_pass_lock(store) if kind is IssueJobKind.ISSUE else None
        try:
            job = self._register(store, actor, lineage, kind, the_plan.names)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

        def run() -> None:
            try:
                if kind is IssueJobKind.PREFLIGHT:
                    job.report = asyncio.run(dry_run(store, lineage, dns=dns))
                else:
                    job.result = asyncio.run(issue(store, lineage, progress=job.on_event, dns=dns))
                    job.settle(job.result.reused)
                job.state = JobState.DONE
            except CertfleetError as exc:
                job.error, job.hint, job.state = str(exc), exc.hint or "", JobState.ERROR
            except Exception as exc:  # reported on the page; the console stays up
                log.exception("issue of %s failed", lineage)
                job.error, job.state = f"{type(exc).__name__}: {exc}", JobState.ERROR
            finally:
                job.settle(())
                job.finished_at = self._clock()
                if lock is not None:
                    lock.release()

        try:
            threading.Thread(target=run, name=f"certfleet-{kind.value}-{job.id}", daemon=True).start()
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return job

    def _register(self, store: Store, actor: Actor, lineage: str, kind: IssueJobKind, names: Sequence[str]) -> IssueJob:
        with self._lock:
            running = [j for j in self._jobs.values() if j.lineage == lineage and not j.done]
            if any(j.kind is IssueJobKind.ISSUE for j in running) and kind is IssueJobKind.ISSUE:
                raise ConflictError(f"an issue of {lineage} is running already", hint="wait for it on its page")
            job = IssueJob(
                id=secrets.token_urlsafe(12),
                lineage=lineage,
                kind=kind,
                actor=store.actor,
                account_id=actor.account_id,
                started_at=self._clock(),
                names=dict.fromkeys(names, NameState.WAITING),
            )
            self._jobs[job.id] = job
            finished = sorted((j for j in self._jobs.values() if j.done), key=lambda j: j.started_at)
            for old in finished[: max(0, len(self._jobs) - MAX_JOBS)]:
                del self._jobs[old.id]
        return job

    def get(self, job_id: str) -> IssueJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError("no such issue", hint="issues are listed on the lineage's page while the console runs")
        return job

    def recent(self, lineage: str, limit: int = 10) -> list[IssueJob]:
        """The newest first."""
        with self._lock:
            mine = [j for j in self._jobs.values() if j.lineage == lineage]
        return sorted(mine, key=lambda j: j.started_at, reverse=True)[:limit]
