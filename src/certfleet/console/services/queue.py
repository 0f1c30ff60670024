"""The store's job queue as the console shows it: what ``certfleet jobs`` lists (deploys of single
nodes, probes, checks, renewal passes; queued, running under a worker's lease, done, failed), a
page at a time, and each zone's open jobs counted.

An account kept to some lineages sees the jobs of those lineages only: never a probe or a check
(of no lineage) nor a renewal pass of every lineage. Every job is read from the store; what a job
did is said in one line the way the command line says it (a pass: :func:`certfleet.jobs.renewals.describe`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from certfleet.clock import Clock
from certfleet.console.services.audit import Actor
from certfleet.console.services.jobs import QUEUED_WAIT
from certfleet.console.services.status import PAGE_SIZE, Page
from certfleet.errors import NotFoundError
from certfleet.jobs.renewals import RENEW, describe
from certfleet.store import DEPLOY, JobRecord, JobState, Store, ZoneJobs

__all__ = ["JobFilter", "JobLine", "Queue", "ZoneLoad", "age_text", "outcome_line"]

MAX_LINE = 300  # characters of a job's outcome shown in its row


def _first_problem(result: Mapping[str, Any]) -> str:
    if result.get("problem"):  # a probe job's summary
        return str(result["problem"])
    problems = result.get("problems")  # a check job's result: what the endpoint served
    if isinstance(problems, list) and problems and isinstance(problems[0], Mapping):
        return str(problems[0].get("message", ""))
    return ""


def outcome_line(job: JobRecord) -> str:
    """What a job did, in one line: a deploy its node's outcome; a probe or a check ok or failed,
    and the first problem; a renewal pass what ``certfleet jobs`` says of it. Empty while open."""
    result = job.result or {}
    if job.kind == RENEW:
        line = describe(job.result) or ("forced" if job.payload.get("force") else "")
    elif job.kind == DEPLOY:
        line = str(result.get("outcome") or "")
        if line and result.get("step"):
            line += f" at {result['step']}"
        if result.get("duplicate"):
            line += " (recorded already)"
    elif "ok" in result:
        problem = _first_problem(result)
        line = ("ok" if result["ok"] else "failed") + (f": {problem}" if problem else "")
    elif result.get("error"):
        line = f"failed: {result['error']}"
    else:
        line = str(result.get("outcome") or "")
    line = " ".join(line.split())
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def age_text(seconds: float) -> str:
    """A wait as the pages say it: 45s, 12m, 3h, 2d."""
    whole = max(int(seconds), 0)
    if whole < 120:
        return f"{whole}s"
    if whole < 7200:
        return f"{whole // 60}m"
    return f"{whole // 3600}h" if whole < 172800 else f"{whole // 86400}d"


@dataclass(frozen=True, slots=True)
class JobLine:
    """One job as a row of the page and an object of the API."""

    job: JobRecord
    outcome: str

    @property
    def lineage(self) -> str:
        """The lineage; ``all`` for a pass over every lineage."""
        return self.job.lineage or ("all" if self.job.kind == RENEW else "")

    @property
    def holder(self) -> str | None:
        """The worker that holds a running job."""
        return self.job.lease_owner if self.job.state == JobState.RUNNING else None

    @property
    def until(self) -> dt.datetime | None:
        return self.job.lease_until if self.job.state == JobState.RUNNING else None

    @property
    def deploy_page(self) -> str | None:
        return f"/deploy/jobs/{self.job.deployment}" if self.job.deployment is not None else None

    def to_dict(self) -> dict[str, Any]:
        data = self.job.to_dict()
        if self.job.kind == RENEW:  # what it renews (the lineage or all, forced or not), as `certfleet jobs --json`
            data["payload"] = self.job.payload
        data.update({"summary": self.outcome, "deploy_page": self.deploy_page})
        return data


@dataclass(frozen=True, slots=True)
class ZoneLoad:
    """A zone's open jobs, and how long the oldest queued one has waited (seconds)."""

    counts: ZoneJobs
    waited: float | None

    @property
    def zone(self) -> str | None:
        return self.counts.zone

    @property
    def age(self) -> str:
        return age_text(self.waited) if self.waited is not None else ""

    @property
    def stale(self) -> bool:
        """Its oldest queued job waited longer than a deploy follows a zone's jobs: likely no worker serves it."""
        return self.waited is not None and self.waited > QUEUED_WAIT

    def to_dict(self) -> dict[str, Any]:
        return {**self.counts.to_dict(), "oldest_queued_seconds": self.waited, "stale": self.stale}


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What the page and the API are asked for: open jobs only, the jobs of one deployment."""

    open_only: bool = False
    deployment: int | None = None

    @property
    def states(self) -> tuple[str, ...]:
        return JobState.OPEN if self.open_only else ()

    def query(self, number: int | None = None) -> dict[str, str]:
        """The page's query string for this filter (and page ``number``)."""
        out = {"open": "1"} if self.open_only else {}
        if self.deployment is not None:
            out["deployment"] = str(self.deployment)
        if number is not None:
            out["page"] = str(number)
        return out


class Queue:
    """Reads of the job queue, kept to the lineages of the account that asks."""

    def __init__(self, store: Store, *, clock: Clock) -> None:
        self._store, self._clock = store, clock

    def page(self, actor: Actor, wanted: JobFilter, number: int, size: int = PAGE_SIZE) -> Page[JobLine]:
        """Page ``number`` of the jobs, newest first (past the last page: the last page)."""
        total = self._store.count_jobs(deployment=wanted.deployment, states=wanted.states, lineages=actor.lineages)
        pages = max(1, -(-total // size))
        number = max(1, min(number, pages))
        start = (number - 1) * size
        found = self._store.jobs(
            deployment=wanted.deployment, states=wanted.states, limit=size, offset=start, lineages=actor.lineages
        )
        shown = tuple(JobLine(j, outcome_line(j)) for j in found)
        return Page(shown, number, pages, total, start + 1 if shown else 0, start + len(shown))

    def newest(self, actor: Actor, wanted: JobFilter, limit: int) -> list[JobLine]:
        found = self._store.jobs(
            deployment=wanted.deployment, states=wanted.states, limit=limit, lineages=actor.lineages
        )
        return [JobLine(j, outcome_line(j)) for j in found]

    def get(self, actor: Actor, job_id: int) -> JobLine:
        """One job; one the account may not see does not exist for it."""
        job = self._store.job(job_id)
        if actor.lineages is not None and job.lineage not in actor.lineages:
            raise NotFoundError(f"no job {job_id}")
        return JobLine(job, outcome_line(job))

    def zones(self, actor: Actor) -> list[ZoneLoad]:
        """Each zone with open jobs: queued, running, and how long its oldest queued job has waited
        (a zone whose queued jobs grow old is one no worker serves)."""
        now = self._clock()
        return [
            ZoneLoad(c, max(0.0, (now - c.oldest_queued).total_seconds()) if c.oldest_queued else None)
            for c in self._store.job_counts(lineages=actor.lineages)
        ]
