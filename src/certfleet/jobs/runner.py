"""The jobs of the kinds other than deploy (a node's deploy is :mod:`certfleet.jobs.worker`'s own):
what each kind does, how a worker runs one, and how the process that asked follows it.

Each kind has a handler (:func:`handler_for`): an async function given the worker's context and
the job, answering with a :class:`JobDone` (ok, and a JSON result of at most 64 KiB that the
store keeps with the job). A handler raising :class:`certfleet.errors.CertfleetError` fails the
job with that one line. The result is written with the job's end, fenced by its lease's token
(:meth:`certfleet.store.Store.finish_job`): a worker that lost the lease writes nothing.

The same handler runs a job in the process that asked (:func:`run_inline`) where no queue is
needed: on a SQLite store, one machine's, every job runs there.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from certfleet.clock import utc_now
from certfleet.fleet.deploy import DeployOptions
from certfleet.store import JobRecord, JobState, Store

__all__ = ["Handler", "JobContext", "JobDone", "follow_jobs", "handler_for", "run_handler", "run_inline"]


@dataclass(frozen=True, slots=True)
class JobDone:
    """How a job ended: ``ok`` (done) or not (failed), what it found (kept with the job), and one
    line for the worker's log."""

    ok: bool
    result: Mapping[str, Any]
    detail: str = ""


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a handler may use: the store, the worker's name and zone, the limits of its work
    (``options``: timeouts), and ``stop`` (set: finish soon, or give up)."""

    store: Store
    worker: str
    zone: str | None
    options: DeployOptions = field(default_factory=DeployOptions)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


Handler = Callable[[JobContext, JobRecord], Awaitable[JobDone]]


def handler_for(kind: str) -> Handler | None:
    """The handler of a kind of job; None for a kind this certfleet does not know (the job fails,
    saying so: a newer certfleet queued it)."""
    match kind:
        case "renew":  # an autopilot pass (jobs/renewals.py)
            return _load("certfleet.jobs.renewals:run_renew")
        case _:
            return None


def _load(where: str) -> Handler:
    """A handler named ``module:function``, imported when first asked for. By name, as the
    solvers and targets are: a handler may use what uses this package (the autopilot's pass
    deploys through the queue), which an import here would make a cycle of."""
    module, _, name = where.partition(":")
    handler: Handler = getattr(importlib.import_module(module), name)
    return handler


async def run_handler(ctx: JobContext, job: JobRecord) -> JobDone:
    """Run ``job`` with its kind's handler: never raises for the job's own failure."""
    from certfleet.errors import CertfleetError

    handler = handler_for(job.kind)
    if handler is None:
        message = f"a job of kind {job.kind} is not known to this certfleet"
        return JobDone(False, {"error": message}, message)
    try:
        return await handler(ctx, job)
    except CertfleetError as exc:
        message = str(exc)
        return JobDone(False, {"error": message[:2000]}, message)


async def run_inline(
    store: Store,
    kind: str,
    *,
    lineage: str = "",
    node: str | None = None,
    zone: str | None = None,
    payload: Mapping[str, Any] | None = None,
    options: DeployOptions | None = None,
    by: str = "",
    stop: asyncio.Event | None = None,
) -> JobDone:
    """Run a job of ``kind`` here, as a worker would, without queueing it (a SQLite store, or the
    part of the work this process can reach itself)."""
    now = utc_now()
    job = JobRecord(
        id=0, kind=kind, lineage=lineage, node=node, zone=zone, state=JobState.RUNNING, attempts=1,
        deployment=None, created_at=now, payload=dict(payload or {}), started_at=now,
    )  # fmt: skip
    ctx = JobContext(store, by or "here", zone, options or DeployOptions(), stop or asyncio.Event())
    return await run_handler(ctx, job)


async def follow_jobs(
    store: Store,
    ids: Collection[int],
    *,
    wait: float,
    poll: float = 0.5,
    stop: asyncio.Event | None = None,
    seen: Callable[[JobRecord], None] | None = None,
) -> list[JobRecord]:
    """Watch the jobs ``ids`` until each ended, ``wait`` seconds passed or ``stop`` was set: the
    jobs as they stand then (by id). ``seen`` is called with each job that ended since the last look."""
    deadline = time.monotonic() + wait
    reported: set[int] = set()
    while True:
        jobs = await asyncio.to_thread(store.jobs_by_id, ids)
        if seen is not None:
            for j in jobs:
                if j.state not in JobState.OPEN and j.id not in reported:
                    reported.add(j.id)
                    seen(j)
        if all(j.state not in JobState.OPEN for j in jobs) or time.monotonic() >= deadline:
            return jobs
        if stop is not None and stop.is_set():
            return jobs
        await asyncio.sleep(min(poll, max(0.01, deadline - time.monotonic())))
