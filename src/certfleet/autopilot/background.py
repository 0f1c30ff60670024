"""The autopilot inside ``certfleet serve``: a pass at start, then one every ``interval``, in a
daemon thread of the console's process (the embedded default: one machine, SQLite, nothing
else to run).

Each pass opens the store on its own (its own engine and connections) and runs
:func:`certfleet.autopilot.renew.renew` on its own event loop, so the console's requests are
never held up by a deploy; a pass started meanwhile by a timer's ``certfleet renew`` is seen
through the pass lock, and whichever comes second stops. A pass that raises is logged and the
next one runs as planned.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from pathlib import Path
from typing import Self

from certfleet.autopilot.renew import Action, RenewReport, RenewSettings, renew
from certfleet.clock import Clock, utc_now
from certfleet.errors import CertfleetError
from certfleet.store import Store

__all__ = ["DEFAULT_INTERVAL", "Autopilot"]

DEFAULT_INTERVAL = dt.timedelta(minutes=15)
log = logging.getLogger("certfleet.autopilot")


class Autopilot:
    """Passes over the store in ``home``, in a daemon thread, until :meth:`stop`."""

    def __init__(
        self,
        home: Path,
        *,
        interval: dt.timedelta = DEFAULT_INTERVAL,
        settings: RenewSettings | None = None,
        clock: Clock = utc_now,
    ) -> None:
        if interval <= dt.timedelta(0):
            raise ValueError("the interval must be positive")
        self.home = home
        self.interval = interval
        self.settings = settings or RenewSettings()
        self.clock = clock
        self.last: RenewReport | None = None
        self.passes = 0
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

    def run_once(self) -> RenewReport | None:
        """One pass now, logged; None when it could not run."""
        try:
            with Store.open(self.home, actor="certfleet-autopilot") as store:
                report = asyncio.run(renew(store, settings=self.settings, clock=self.clock))
        except CertfleetError as exc:
            log.warning("autopilot pass failed: %s", exc)
            return None
        except Exception:  # the console must outlive any surprise of a pass
            log.exception("autopilot pass failed")
            return None
        self.last = report
        self.passes += 1
        if report.busy:
            log.info("autopilot: %s", report.busy)
        for run in report.lineages:
            if run.action not in (Action.NOTHING, Action.WAITING):
                log.info("autopilot: %s: %s: %s", run.lineage, run.action.value, run.summary)
        for sent in report.alerts:
            log.info("autopilot: %s sent: %s", sent.kind.value, sent.title)
        return report
