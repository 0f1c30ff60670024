"""The autopilot inside ``certfleet serve``: a pass at start, then one every ``interval``, in a
daemon thread of the console's process.

Each pass is a ``renew`` job (:mod:`certfleet.jobs.renewals`: the same handler a worker runs).
On a store shared on PostgreSQL it is queued first (unique: while one is open, that one is the
pass), then taken by its id and run here unless a ``certfleet worker`` of no zone, or another
console sharing the store, took it first: two consoles due at once run one pass. On SQLite (one
machine, nothing else to run) the job runs here without the queue (:func:`run_inline`).

Each pass opens the store on its own (its own engine and connections) and runs on its own event
loop, so the console's requests are never held up by a deploy; a pass started meanwhile by a
timer's ``certfleet renew`` is seen through the pass lock, and whichever comes second stops. A
pass that raises is logged and the next one runs as planned.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from certfleet.autopilot.report import RenewSettings
from certfleet.clock import utc_now
from certfleet.errors import CertfleetError
from certfleet.store import Store

__all__ = ["DEFAULT_INTERVAL", "Autopilot"]

DEFAULT_INTERVAL = dt.timedelta(minutes=15)
ACTOR = "certfleet-autopilot"
KEEP_ENDED = dt.timedelta(days=30)  # how long the ended renew jobs stay listed (`certfleet jobs`)
log = logging.getLogger("certfleet.autopilot")


class Autopilot:
    """Passes over the store in ``home``, in a daemon thread, until :meth:`stop`."""

    def __init__(
        self,
        home: Path,
        *,
        interval: dt.timedelta = DEFAULT_INTERVAL,
        settings: RenewSettings | None = None,
        lease: float = 30.0,
    ) -> None:
        if interval <= dt.timedelta(0):
            raise ValueError("the interval must be positive")
        self.home = home
        self.interval = interval
        self.settings = settings or RenewSettings()
        self.lease = lease
        self.last: dict[str, Any] | None = None  # the summary of the last pass run here
        self.passes = 0  # passes run here (a pass another process took is not one)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="certfleet-autopilot", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the loop to end and wait for a pass in progress (up to ``timeout`` seconds)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval.total_seconds())

    def _payload(self) -> dict[str, Any]:
        from certfleet.jobs.renewals import renew_payload
        from certfleet.renewal import MANUAL_DAYS

        s = self.settings
        days = s.manual_days if s.manual_days != MANUAL_DAYS else None
        return renew_payload(None, preflight=s.preflight, probe=s.probe, manual_days=days)

    def run_once(self) -> dict[str, Any] | None:
        """One pass now, logged: its summary (the ``renew`` job's result); None when it could not
        run, or when another process took the queued pass."""
        try:
            with Store.open(self.home, actor=ACTOR) as store:
                run = self._inline(store) if store.url.startswith("sqlite") else self._queued(store)
                summary = asyncio.run(run)
        except CertfleetError as exc:
            log.warning("autopilot pass failed: %s", exc)
            return None
        except Exception:  # the console must outlive any surprise of a pass
            log.exception("autopilot pass failed")
            return None
        if summary is None:
            return None
        self.last = summary
        self.passes += 1
        _log_summary(summary)
        return summary

    async def _inline(self, store: Store) -> dict[str, Any] | None:
        from certfleet.jobs.renewals import RENEW
        from certfleet.jobs.runner import run_inline

        done = await run_inline(store, RENEW, payload=self._payload(), options=self.settings.deploy, by=ACTOR)
        return dict(done.result)

    async def _queued(self, store: Store) -> dict[str, Any] | None:
        """Queue the pass (or find the one open), and run it here unless someone took it."""
        from certfleet.jobs.renewals import RENEW
        from certfleet.jobs.worker import Worker, WorkerOptions

        job = await asyncio.to_thread(store.enqueue_job, RENEW, payload=self._payload(), unique=True)
        options = WorkerOptions(
            zone=None, lease=self.lease, once=True, job=job.id, kinds=frozenset({RENEW}), deploy=self.settings.deploy
        )
        with contextlib.suppress(CertfleetError):  # the ended passes a month old are forgotten
            await asyncio.to_thread(store.prune_jobs, {RENEW}, before=utc_now() - KEEP_ENDED)
        if not await Worker(store, options).run():
            taken = await asyncio.to_thread(store.job, job.id)
            log.info("autopilot: renew job %d is %s (%s): not run here", job.id, taken.state, taken.lease_owner or "-")
            return None
        ended = await asyncio.to_thread(store.job, job.id)
        return ended.result or {}


def _log_summary(summary: Mapping[str, Any]) -> None:
    if summary.get("busy"):
        log.info("autopilot: %s", summary["busy"])
        return
    if "counts" not in summary:
        log.warning("autopilot pass failed: %s", summary.get("error") or "no result")
        return
    for entry in summary.get("lineages") or []:
        if entry.get("action") not in ("nothing", "waiting"):
            log.info("autopilot: %s: %s: %s", entry.get("lineage"), entry.get("action"), entry.get("summary"))
    if summary.get("alerts_sent"):
        log.info("autopilot: %d alert(s) sent", summary["alerts_sent"])
