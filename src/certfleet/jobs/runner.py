"""The jobs of the kinds other than deploy (a node's deploy is :mod:`certfleet.jobs.worker`'s own):
what each kind does, how a worker runs one, and how the process that asked follows it.

Each kind has a handler (:func:`handler_for`): an async function given the worker's context and
the job, answering with a :class:`JobDone` (ok, and a JSON result of at most 64 KiB that the
store keeps with the job). A handler raising :class:`certfleet.errors.CertfleetError` fails the
job with that one line. The result is written with the job's end, fenced by its lease's token
(:meth:`certfleet.store.Store.finish_job`): a worker that lost the lease writes nothing.

The same handler runs a job in the process that asked (:func:`run_inline`) where no queue is
needed: on a SQLite store, one machine's, every job runs there.

The kinds: ``probe`` (a node's probe endpoint, recorded for ``status``: :mod:`certfleet.jobs.probes`),
``check`` (an endpoint named by ``certfleet check --zone``: :mod:`certfleet.jobs.endpoint_jobs`)
and ``renew`` (an autopilot pass: :mod:`certfleet.jobs.renewals`).
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from certfleet.clock import utc_now
from certfleet.fleet.deploy import DeployOptions
from certfleet.jobs.context import Handler, JobContext, JobDone
from certfleet.store import JobRecord, JobState, Store

__all__ = ["Handler", "JobContext", "JobDone", "follow_jobs", "handler_for", "run_handler", "run_inline"]


# each kind's handler, ``module:function``, imported when first asked for
_HANDLERS = {
    "probe": "certfleet.jobs.probes:probe_handler",
    "check": "certfleet.jobs.endpoint_jobs:check_handler",
    "renew": "certfleet.jobs.renewals:run_renew",
}


def handler_for(kind: str) -> Handler | None:
    """The handler of a kind of job; None for a kind this certfleet does not know (the job fails,
    saying so: a newer certfleet queued it)."""
    where = _HANDLERS.get(kind)
    return _load(where) if where is not None else None


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
