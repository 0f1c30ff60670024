"""Watch: check a fleet round after round and keep Prometheus metrics of the latest round.

Each round is one :func:`certfleet.check.check` over the targets (re-read every round, so nodes
added to the store are picked up), bounded by the interval so rounds never overlap. A round that
cannot start (the store is locked, say) is reported and the next one tries again; the metrics of
the last good round stay served meanwhile. When the targets are the store's nodes, each round also
builds the fleet's status from the round's report (:func:`certfleet.fleet.status.status`, probing
nothing twice), and the metrics carry its lineage and node families, as the console's do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from certfleet.check import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, CheckReport, check
from certfleet.endpoint import Endpoint
from certfleet.errors import CertfleetError
from certfleet.metrics import CheckMetrics
from certfleet.problems import EXPIRING_DAYS
from certfleet.trust import TrustStore

if TYPE_CHECKING:
    from certfleet.fleet.status import StatusReport

__all__ = ["DEFAULT_INTERVAL", "MIN_INTERVAL", "Watcher"]

DEFAULT_INTERVAL = 300.0
MIN_INTERVAL = 1.0  # below this a fleet would be hammered, not watched

TargetSource = Callable[[], Sequence[Endpoint]]
# the fleet's status from a round's report (``fleet.status.status`` with ``reusing(report, ...)``)
StatusSource = Callable[[CheckReport], Awaitable["StatusReport"]]


@dataclass
class Watcher:
    """Rounds of checks over ``targets`` (a list, or a function that returns the current list)."""

    targets: Sequence[Endpoint] | TargetSource
    trust: TrustStore
    metrics: CheckMetrics
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    concurrency: int = DEFAULT_CONCURRENCY
    expiring_days: int = EXPIRING_DAYS
    on_round: Callable[[CheckReport], None] | None = None
    on_error: Callable[[CertfleetError], None] | None = None
    status: StatusSource | None = None  # the store's nodes are watched: their lineages' status too

    def __post_init__(self) -> None:
        if self.interval < MIN_INTERVAL:
            raise ValueError(f"interval must be at least {MIN_INTERVAL:g} s")

    def _current_targets(self) -> Sequence[Endpoint]:
        return self.targets() if callable(self.targets) else self.targets

    async def round(self) -> CheckReport:
        """One round: check every target, then publish the report as metrics."""
        report = await check(
            self._current_targets(),
            trust=self.trust,
            timeout=self.timeout,
            concurrency=self.concurrency,
            # a round never runs into the next one
            deadline=max(self.interval, self.timeout),
            expiring_days=self.expiring_days,
        )
        self.metrics.update(report, await self.status(report) if self.status is not None else None)
        if self.on_round is not None:
            self.on_round(report)
        return report

    async def run(self, rounds: int | None = None) -> CheckReport | None:
        """Round after round, one every ``interval`` seconds (``rounds`` None: until cancelled).

        Returns the last report (None when no round succeeded).
        """
        last: CheckReport | None = None
        done = 0
        while rounds is None or done < rounds:
            started = time.monotonic()
            try:
                last = await self.round()
            except CertfleetError as exc:
                if self.on_error is None:
                    raise
                self.on_error(exc)
            done += 1
            if rounds is not None and done >= rounds:
                break
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        return last
