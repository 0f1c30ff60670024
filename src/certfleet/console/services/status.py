"""The fleet's status as the console shows it: :func:`certfleet.fleet.status.status` with a short
cache of probe results in front of ``check``, shared by the dashboard, the API and ``/metrics``; and
the client profiles' hosts a phone would refuse."""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from certfleet.check import check
from certfleet.clock import Clock
from certfleet.console.roles import LineageScope
from certfleet.console.services.clients import ClientProfile, Clients
from certfleet.console.settings import ConsoleSettings
from certfleet.endpoint import Endpoint, parse_endpoint
from certfleet.errors import CertfleetError
from certfleet.fleet.probing import PROBE_CONCURRENCY, Checked
from certfleet.fleet.status import LineageStatus, NodeStatus, StatusReport, status
from certfleet.problems import Problem, ProblemCode, Severity
from certfleet.store import Store
from certfleet.trust import TrustStore

__all__ = [
    "PAGE_SIZE",
    "ClientWarning",
    "NodeCounts",
    "Page",
    "ProbeCache",
    "Status",
    "lineage_json",
    "node_counts",
    "page_number",
    "page_of",
]

log = logging.getLogger("certfleet.console")

_Key = tuple[str, str | None, str | None, str | None]
T = TypeVar("T")

PAGE_SIZE = 100  # nodes on one page of the dashboard and of the node list


class ProbeCache:
    """Endpoint reports reused for ``ttl`` seconds: the checker ``fleet.status.status`` is given,
    with ``check.check`` behind it."""

    def __init__(
        self, *, ttl: float, timeout: float, expiring_days: int, clock: Clock, trust: Callable[[], TrustStore]
    ) -> None:
        self._ttl, self._timeout, self._expiring_days = ttl, timeout, expiring_days
        self._clock, self._trust = clock, trust
        self._hits: dict[_Key, tuple[float, Checked]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(target: Endpoint) -> _Key:
        return (str(target), target.name, target.label, target.starttls.value if target.starttls else None)

    async def check(self, targets: Sequence[Endpoint], *, refresh: bool = False) -> list[Checked]:
        """Each target as a strict client judges it; checked again when its report is older than the ttl."""
        keys = [self._key(t) for t in targets]
        started = time.monotonic()
        with self._lock:
            todo = [
                t
                for t, k in zip(targets, keys, strict=True)
                if refresh or k not in self._hits or started - self._hits[k][0] > self._ttl
            ]
        if todo:
            report = await check(
                todo,
                trust=self._trust(),
                timeout=self._timeout,
                now=self._clock(),
                expiring_days=self._expiring_days,
                concurrency=PROBE_CONCURRENCY,
            )
            done = time.monotonic()
            with self._lock:
                for stale in [k for k, (at, _) in self._hits.items() if done - at > self._ttl]:
                    del self._hits[stale]
                for target, found in zip(todo, report.endpoints, strict=True):
                    self._hits[self._key(target)] = (done, Checked(found, report.checked_at))
        with self._lock:
            return [self._hits[k][1] for k in keys]


@dataclass(frozen=True, slots=True)
class ClientWarning:
    """The certificate served for a client profile's host would fail a strict client."""

    profile: str
    hostname: str
    problems: tuple[Problem, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "hostname": self.hostname, "problems": [p.to_dict() for p in self.problems]}


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a long list: its ``items``, which page it is (from 1) of how many, and the
    place of its first and last item in the whole list (from 1; 0 and 0 when the list is empty)."""

    items: tuple[T, ...]
    number: int
    pages: int
    total: int
    first: int
    last: int

    @property
    def more(self) -> bool:
        return self.number < self.pages


def page_number(text: str | None) -> int:
    """A ``page`` query parameter: a whole number from 1; anything else is the first page."""
    try:
        number = int(text or "1")
    except ValueError:
        return 1
    return max(1, min(number, 10**6))


def page_of(items: Sequence[T], number: int, size: int = PAGE_SIZE) -> Page[T]:
    """Page ``number`` of ``items`` (past the last page: the last page)."""
    pages = max(1, -(-len(items) // size))
    number = max(1, min(number, pages))
    start = (number - 1) * size
    shown = tuple(items[start : start + size])
    return Page(shown, number, pages, len(items), start + 1 if shown else 0, start + len(shown))


@dataclass(frozen=True, slots=True)
class NodeCounts:
    """A lineage's nodes counted, all of them whatever page is shown: by what each serves, by
    health, and by the outcome of its last deployment (``never`` when none)."""

    total: int
    serving: tuple[tuple[str, int], ...]
    health: tuple[tuple[str, int], ...]
    last: tuple[tuple[str, int], ...]


def node_counts(nodes: Sequence[NodeStatus]) -> NodeCounts:
    def counted(values: list[str]) -> tuple[tuple[str, int], ...]:
        out: dict[str, int] = {}
        for v in values:
            out[v] = out.get(v, 0) + 1
        return tuple(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    return NodeCounts(
        total=len(nodes),
        serving=counted([n.serving.value for n in nodes]),
        health=counted([n.health.value for n in nodes]),
        last=counted([n.last.outcome.value if n.last is not None else "never" for n in nodes]),
    )


def lineage_json(lineage: LineageStatus) -> dict[str, Any]:
    """A lineage as the API gives it: the stored lineage, its active chain's verdict, and each
    node's status (the same objects as in `certfleet status --json`)."""
    chain = lineage.chain
    return {
        **lineage.record.to_dict(),
        "required_names": list(lineage.required),
        "coverage": chain.coverage.to_dict() if chain is not None and chain.coverage is not None else None,
        "chain_valid": chain.valid if chain is not None else None,
        "health": lineage.health.value,
        "days_left": lineage.days_left,
        "problems": [p.to_dict() for p in lineage.all_problems],
        "pending": [v.to_dict() for v in lineage.waiting],
        "node_status": [n.to_dict() for n in lineage.nodes],
    }


class Status:
    """The fleet's status and the client hosts' warnings, probes shared through one cache."""

    def __init__(
        self,
        store: Store,
        *,
        settings: ConsoleSettings,
        clock: Clock,
        trust: Callable[[], TrustStore],
        clients: Clients,
    ) -> None:
        self._store, self._settings, self._clock, self._trust, self._clients = store, settings, clock, trust, clients
        self.probes = ProbeCache(
            ttl=settings.probe_ttl,
            timeout=settings.probe_timeout,
            expiring_days=settings.expiring_days,
            clock=clock,
            trust=trust,
        )

    async def report(
        self, *, lineage: str | None = None, refresh: bool = False, scope: LineageScope = None
    ) -> StatusReport:
        """The fleet's status, as `certfleet status` reports it; only the lineages of ``scope``
        when the account or token is kept to some."""
        report = await status(
            self._store,
            now=self._clock(),
            lineage=lineage,
            timeout=self._settings.probe_timeout,
            trust=self._trust(),
            expiring_days=self._settings.expiring_days,
            checker=functools.partial(self.probes.check, refresh=refresh),
        )
        if scope is None:
            return report
        return dataclasses.replace(report, lineages=tuple(v for v in report.lineages if v.name in scope))

    async def client_warnings(self, *, refresh: bool = False) -> list[ClientWarning]:
        """Client profiles whose host serves a certificate a strict client (a phone) would refuse."""
        targets: list[tuple[ClientProfile, Endpoint]] = []
        for profile in self._clients.profiles():
            try:
                host = profile.host.strip("[]")
                targets.append((profile, parse_endpoint(profile.hostname, name=host, label=profile.name)))
            except CertfleetError as exc:
                log.warning("client profile %s: %s", profile.name, exc)
        checked = await self.probes.check([t for _, t in targets], refresh=refresh)
        out = []
        for (profile, _), seen in zip(targets, checked, strict=True):
            report = seen.report
            if not report.ok:
                errors = tuple(p for p in report.problems if p.severity is Severity.ERROR) or report.problems
                if not errors:
                    errors = (
                        Problem(ProblemCode.UNTRUSTED, Severity.ERROR, "the served chain does not verify", "", None),
                    )
                out.append(ClientWarning(profile.name, profile.hostname, errors))
        return out
