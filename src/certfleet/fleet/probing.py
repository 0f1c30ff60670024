"""Where each node is probed, and who checks its endpoint: what ``status``, ``check --nodes`` and
``watch --nodes`` probe.

A node is probed at its probe endpoint, asked for its first DNS name (:func:`probe_targets`). The
endpoints are checked as ``certfleet check`` checks them (:func:`default_checker`: the chain as served,
verified without fetching, and linted); a :data:`Checker` answers in the order it was asked, so
the console can put a short cache in front of it, and :func:`reusing` answers from a round of
``watch`` that checked them already.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from certfleet.check import CheckReport, EndpointReport, check
from certfleet.endpoint import Endpoint
from certfleet.errors import CertfleetError
from certfleet.fleet.model import NodeSpec
from certfleet.probe import StartTLS
from certfleet.trust import TrustStore

__all__ = [
    "PROBE_CONCURRENCY",
    "Checked",
    "Checker",
    "ProbeTargets",
    "default_checker",
    "no_checks",
    "probe_readable",
    "probe_targets",
    "reusing",
]

PROBE_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class Checked:
    """An endpoint's report and when it was made (a cache may hand out an earlier one)."""

    report: EndpointReport
    at: dt.datetime


# Checks endpoints and answers in the same order: ``check.check`` by default; the console adds a
# short cache in front of it.
Checker = Callable[[Sequence[Endpoint]], Awaitable[Sequence[Checked]]]


@dataclass(frozen=True, slots=True)
class ProbeTargets:
    endpoints: Mapping[str, Endpoint]  # node name -> where it is probed
    skipped: tuple[str, ...]  # nodes without a probe endpoint


def probe_targets(nodes: Iterable[NodeSpec], *, starttls: StartTLS | None = None) -> ProbeTargets:
    """Where each node is probed (its probe endpoint, asked for its first DNS name), once per node:
    what ``status``, ``check --nodes`` and ``watch --nodes`` check."""
    endpoints: dict[str, Endpoint] = {}
    skipped: list[str] = []
    for node in nodes:
        if node.name in endpoints or node.name in skipped:
            continue
        endpoint = node.endpoint(starttls)
        if endpoint is None:
            skipped.append(node.name)
        else:
            endpoints[node.name] = endpoint
    return ProbeTargets(endpoints, tuple(skipped))


def probe_readable(node: NodeSpec) -> bool:
    """Whether the node's probe still parses: one the store holds was checked when it was set; one
    that no longer parses is not probed."""
    try:
        node.endpoint()
    except CertfleetError:
        return False
    return True


def default_checker(trust: TrustStore, now: dt.datetime, timeout: float, expiring_days: int) -> Checker:
    """:func:`certfleet.check.check` with these settings, as a :data:`Checker`."""

    async def run(endpoints: Sequence[Endpoint]) -> list[Checked]:
        report = await check(
            endpoints,
            trust=trust,
            timeout=timeout,
            now=now,
            expiring_days=expiring_days,
            concurrency=PROBE_CONCURRENCY,
        )
        return [Checked(r, report.checked_at) for r in report.endpoints]

    return run


def reusing(report: CheckReport, fallback: Checker) -> Checker:
    """A checker that answers from ``report`` (a round of ``watch`` that checked the nodes' endpoints
    already) and asks ``fallback`` only for an endpoint the report lacks."""
    known: dict[tuple[str, int, str | None], EndpointReport] = {}
    for found in report.endpoints:
        known.setdefault((found.target.host, found.target.port, found.target.name), found)

    async def run(endpoints: Sequence[Endpoint]) -> list[Checked]:
        keys = [(e.host, e.port, e.name) for e in endpoints]
        missing = [e for e, k in zip(endpoints, keys, strict=True) if k not in known]
        extra: dict[tuple[str, int, str | None], Checked] = {}
        if missing:
            extra = dict(zip([(e.host, e.port, e.name) for e in missing], await fallback(missing), strict=True))
        return [Checked(known[k], report.checked_at) if k in known else extra[k] for k in keys]

    return run


async def no_checks() -> Sequence[Checked]:
    """What checking no endpoint answers."""
    return ()
