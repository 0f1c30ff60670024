"""What a job's handler is given and what it answers (:mod:`certfleet.jobs.runner` runs them):
in a module of its own, so that the handlers, which :func:`certfleet.jobs.runner.handler_for`
imports, need not import the runner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from certfleet.fleet.deploy import DeployOptions
from certfleet.store import JobRecord, Store

__all__ = ["Handler", "JobContext", "JobDone"]


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
