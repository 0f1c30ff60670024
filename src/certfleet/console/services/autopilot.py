"""The autopilot as the console shows and drives it: each lineage's next renewal and why, "renew
now" (the same pass as ``certfleet renew --lineage L --force``, in a thread of its own, its
progress followed on a page), the alert destinations (only ever shown masked), a test message to
one of them, and the alerts sent.

Every call is the library's (:mod:`certfleet.autopilot`), the same as the CLI's; changes are made
in the name of the console account, so the audit trail says who renewed or added a destination.
"""

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

from certfleet.acme.issue import IssueEvent
from certfleet.autopilot.alerts import Alerts, AlertSettings, Delivery, Destination, OpenAlert, SentRecord, parse_events
from certfleet.autopilot.lock import PassBusy, PassLock, pass_lock
from certfleet.autopilot.renew import LineageRun, RenewReport, renew
from certfleet.autopilot.schedule import ScheduleEntry, planned
from certfleet.clock import Clock
from certfleet.console.services.audit import Actor, Audit
from certfleet.errors import CertfleetError, ConflictError, NotFoundError
from certfleet.store import Store

__all__ = ["Autopilot", "RenewJob", "RenewState", "TestResult", "taken_pass_lock"]

log = logging.getLogger("certfleet.console")

MAX_KEPT = 100  # finished renewals and test results kept for their pages


class RenewState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"



def taken_pass_lock(store: Store) -> PassLock:
    """The autopilot's pass lock, taken for something that must not run beside a pass (a
    renewal, an issue); :class:`ConflictError` at once while a pass runs, whoever started it."""
    lock = pass_lock(store)
    try:
        lock.acquire()
    except PassBusy as exc:
        raise ConflictError(
            "an autopilot pass is running already" + (f" ({exc.holder})" if exc.holder else ""),
            hint="it renews every due lineage; try again when it has ended",
        ) from exc
    return lock

@dataclass
class RenewJob:
    """One "renew now" pass over one lineage, and how far it is."""

    id: str
    lineage: str
    actor: str
    account_id: int
    started_at: dt.datetime
    state: RenewState = RenewState.RUNNING
    steps: list[str] = field(default_factory=list)  # what the pass said as it went
    report: RenewReport | None = None
    error: str = ""
    hint: str = ""
    finished_at: dt.datetime | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def done(self) -> bool:
        return self.state is not RenewState.RUNNING

    @property
    def run(self) -> LineageRun | None:
        """What the pass did for the lineage (None while it runs, or when it stopped before)."""
        report = self.report
        return next((r for r in report.lineages if r.lineage == self.lineage), None) if report is not None else None

    @property
    def ok(self) -> bool:
        return self.state is RenewState.DONE and self.report is not None and self.report.ok and not self.report.busy

    def on_event(self, event: IssueEvent) -> None:
        words = " ".join(p for p in (event.step, event.name or "", event.detail) if p)
        with self._lock:
            self.steps.append(words[:500])

    def on_run(self, run: LineageRun) -> None:
        with self._lock:
            self.steps.append(f"{run.lineage}: {run.action.value}: {run.summary}"[:1000])

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            steps = list(self.steps)
        run = self.run
        return {
            "id": self.id,
            "lineage": self.lineage,
            "actor": self.actor,
            "state": self.state.value,
            "ok": self.ok,
            "error": self.error or None,
            "hint": self.hint or None,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "steps": steps,
            "run": run.to_dict() if run is not None else None,
            "report": self.report.to_dict() if self.report is not None else None,
        }


@dataclass(frozen=True, slots=True)
class TestResult:
    """Where a test message got, kept for the page the test button leads to."""

    id: str
    account_id: int
    at: dt.datetime
    deliveries: tuple[Delivery, ...]

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.deliveries)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "at": self.at.isoformat(), "deliveries": [d.to_dict() for d in self.deliveries]}


class Autopilot:
    """The schedule, renew now, and the alerts, for the console's pages and API."""

    def __init__(self, audit: Audit, *, clock: Clock) -> None:
        self._audit = audit
        self._clock = clock
        self._jobs: dict[str, RenewJob] = {}
        self._tests: dict[str, TestResult] = {}
        self._lock = threading.Lock()

    def _alerts(self, actor: Actor | None = None) -> Alerts:
        store = self._audit.store_for(actor) if actor is not None else self._audit.store
        return Alerts(store, clock=self._clock)

    # -- the schedule ---------------------------------------------------------------------------------

    def schedule(self, actor: Actor) -> list[ScheduleEntry]:
        """Each lineage ``actor`` may see: its plan now (next renewal, why) and its last outcome."""
        entries = planned(self._audit.store, now=self._clock())
        return [e for e in entries if actor.allows(e.lineage)]

    # -- renew now ----------------------------------------------------------------------------------

    def renew_now(self, actor: Actor, lineage: str) -> RenewJob:
        """The pass ``certfleet renew --lineage LINEAGE --force`` runs, in a thread of its own, in
        the name of ``actor``. Refused at once (:class:`ConflictError`) while another pass runs,
        whoever started it (a timer, ``certfleet serve``, this console)."""
        store = self._audit.store_for(actor)
        store.lineage(lineage)  # an unknown lineage is refused before anything starts
        lock = taken_pass_lock(store)
        job = RenewJob(
            id=secrets.token_urlsafe(12), lineage=lineage, actor=store.actor, account_id=actor.account_id,
            started_at=self._clock(),
        )  # fmt: skip

        def run() -> None:
            try:
                job.report = asyncio.run(
                    renew(
                        store, lineages=[lineage], force=True, clock=self._clock, progress=job.on_event,
                        on_lineage=job.on_run, lock=lock,
                    )
                )  # fmt: skip
                job.state = RenewState.DONE
            except CertfleetError as exc:
                job.error, job.hint, job.state = str(exc), exc.hint or "", RenewState.ERROR
            except Exception as exc:  # reported on the page; the console stays up
                log.exception("renewal of %s failed", lineage)
                job.error, job.state = f"{type(exc).__name__}: {exc}", RenewState.ERROR
            finally:
                lock.release()  # the pass let go of it already, unless it failed before it began
                job.finished_at = self._clock()

        try:
            threading.Thread(target=run, name=f"certfleet-renew-{job.id}", daemon=True).start()
        except BaseException:
            lock.release()
            raise
        with self._lock:
            self._jobs[job.id] = job
            _trim(self._jobs, lambda j: j.done, lambda j: j.started_at)
        return job

    def job(self, actor: Actor, job_id: str) -> RenewJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or not actor.allows(job.lineage):
            raise NotFoundError("no such renewal", hint="the schedule page lists them while the console runs")
        return job

    def recent(self, actor: Actor, limit: int = 10) -> list[RenewJob]:
        """The newest first."""
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.started_at, reverse=True)
        return [j for j in jobs if actor.allows(j.lineage)][:limit]

    # -- alerts -------------------------------------------------------------------------------------

    def destinations(self) -> list[Destination]:
        """Every destination, its URL masked as the CLI shows it."""
        return self._alerts().destinations()

    def settings(self) -> AlertSettings:
        return self._alerts().settings()

    def set_settings(
        self, actor: Actor, *, repeat_hours: float | None = None, expiry_days: Sequence[int] | None = None
    ) -> AlertSettings:
        """The repeat interval and the expiry stages, as ``certfleet alert config`` sets them
        (``expiry_days`` empty: two thirds and five sixths of the lifetime)."""
        return self._alerts(actor).set_settings(repeat_hours=repeat_hours, expiry_days=expiry_days)

    def open_alerts(self, actor: Actor) -> list[OpenAlert]:
        return [a for a in self._alerts().open_alerts() if a.lineage is None or actor.allows(a.lineage)]

    def sent(self, actor: Actor, limit: int = 50) -> list[SentRecord]:
        """The alerts sent, newest first (for an account kept to some lineages: theirs only)."""
        found = self._alerts().sent(limit)
        if actor.lineages is None:
            return found
        return [s for s in found if s.lineage is not None and actor.allows(s.lineage)]

    def add(self, actor: Actor, url: str, events: Sequence[str] = ()) -> Destination:
        """A destination (an Apprise URL, sealed in the store) for ``events`` (every event when none)."""
        return self._alerts(actor).add(url.strip(), parse_events(events))

    def remove(self, actor: Actor, destination: int) -> Destination:
        return self._alerts(actor).remove(destination)

    def destination(self, destination: int) -> Destination:
        found = next((d for d in self.destinations() if d.id == destination), None)
        if found is None:
            raise NotFoundError(f"no alert destination {destination}", hint="the alerts page lists them")
        return found

    def test(self, actor: Actor, destination: int | None = None) -> TestResult:
        """Send a test message to one destination (or every one) through Apprise; where it got."""
        deliveries = self._alerts(actor).test(destination)
        result = TestResult(secrets.token_urlsafe(12), actor.account_id, self._clock(), tuple(deliveries))
        with self._lock:
            self._tests[result.id] = result
            _trim(self._tests, lambda _: True, lambda t: t.at)
        return result

    def test_result(self, actor: Actor, result_id: str) -> TestResult | None:
        """A test's result, for the account that sent it (None: unknown, or someone else's)."""
        with self._lock:
            found = self._tests.get(result_id)
        return found if found is not None and found.account_id == actor.account_id else None


def _trim(kept: dict[str, Any], finished: Any, when: Any) -> None:
    """Forget the oldest finished entries past :data:`MAX_KEPT`."""
    old = sorted((v for v in kept.values() if finished(v)), key=when)
    for value in old[: max(0, len(kept) - MAX_KEPT)]:
        del kept[value.id]
