"""What a strict client would say about a certificate of the fleet: path validation without fetching
(a phone never fetches a missing intermediate), lint, and whether it covers the names it must.

``version_health`` judges a stored version, its leaf and chain as a node will serve them;
``served_problems`` adds to a node's endpoint report (``check.check`` already verified and linted
what the node serves) the node's names that the served leaf does not cover. ``Health`` is the one
verdict the CLI and the console show for a lineage and for a node.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography import x509

from certfleet.check import EndpointReport
from certfleet.errors import CertfleetError
from certfleet.lint import lint
from certfleet.names import Coverage, coverage
from certfleet.problems import EXPIRING_DAYS, Problem, ProblemCode, Severity, worst
from certfleet.trust import TrustStore
from certfleet.verify import verify_chain

__all__ = ["Health", "VersionHealth", "health_of", "served_problems", "unique_problems", "version_health"]

_REISSUE = "request a new certificate that covers every node's names"


class Health(StrEnum):
    GOOD = "good"  # a strict client accepts it and nothing needs a look
    WARN = "warn"  # it works, with warnings (expiring soon, an older version served...)
    BAD = "bad"  # a strict client refuses it, or the node cannot be reached
    NONE = "none"  # nothing to judge: no certificate yet, or a node without a probe endpoint


def health_of(problems: Iterable[Problem], *, valid: bool = True) -> Health:
    """BAD when not ``valid`` or a problem is an error, WARN when one is a warning, else GOOD."""
    found = worst(problems)
    if not valid or found is Severity.ERROR:
        return Health.BAD
    return Health.WARN if found is Severity.WARNING else Health.GOOD


def unique_problems(problems: Iterable[Problem]) -> tuple[Problem, ...]:
    """``problems`` without repeats of the same code about the same subject (verification and lint
    both see an expiry, say), first one kept."""
    seen: set[tuple[ProblemCode, str | None]] = set()
    out: list[Problem] = []
    for problem in problems:
        key = (problem.code, problem.subject)
        if key not in seen:
            seen.add(key)
            out.append(problem)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class VersionHealth:
    """A stored chain as a strict client judges it, and the names it must cover."""

    valid: bool  # path validation to a trusted root, for the leaf's own name, without fetching
    problems: tuple[Problem, ...]  # path validation, lint, and names not covered
    coverage: Coverage | None  # None when no names are required (or they cannot be read)

    @property
    def health(self) -> Health:
        return health_of(self.problems, valid=self.valid)

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "health": self.health.value,
            "coverage": self.coverage.to_dict() if self.coverage is not None else None,
            "problems": [p.to_dict() for p in self.problems],
        }


def _missing(leaf: x509.Certificate, names: Sequence[str]) -> tuple[Coverage | None, list[Problem]]:
    if not names:
        return None, []
    try:
        found = coverage(leaf, names)
    except CertfleetError:  # a name that no longer reads as one: nothing to say about it here
        return None, []
    problems = [
        Problem(ProblemCode.NAME_MISMATCH, Severity.ERROR, missing.reason, _REISSUE, missing.name)
        for missing in found.missing
    ]
    return found, problems


def version_health(
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    *,
    trust: TrustStore,
    now: dt.datetime,
    required: Sequence[str] = (),
    expiring_days: int = EXPIRING_DAYS,
) -> VersionHealth:
    """Would a strict client accept ``leaf`` served with ``chain`` (intermediates), and does the
    leaf cover every ``required`` name?"""
    verification = verify_chain(leaf, chain, trust, at=now)
    found = unique_problems(
        [*verification.problems, *lint((leaf, *chain), now=now, expiring_days=expiring_days, trust=trust)]
    )
    cov, missing = _missing(leaf, required)
    return VersionHealth(verification.valid, (*found, *missing), cov)


def served_problems(report: EndpointReport, names: Sequence[str]) -> tuple[Problem, ...]:
    """The names of a node that the leaf it serves does not cover. The name the endpoint was
    checked for is left out: its verification already said whether it is covered."""
    if not report.probe.ok or not report.probe.chain:
        return ()
    others = [n for n in names if n != report.name]
    return tuple(_missing(report.probe.chain[0], others)[1])
