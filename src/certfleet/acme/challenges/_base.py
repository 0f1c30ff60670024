"""What a challenge solver is: it puts a proof where the CA looks for a name (a file on the node
that serves the name, a TXT record in the name's zone), waits until it is there, and removes it.

A solver is made from a lineage's :class:`~certfleet.acme.model.SolverRule` (``TYPE:SPEC``) and a
:class:`SolverContext`. The registry maps ``http-01`` and ``dns-01:METHOD`` to the class; adding a
solver is one new module and one line in :data:`SOLVERS`.
"""

from __future__ import annotations

import asyncio
import importlib
import stat
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from certfleet.acme.lookup import DnsSettings, wait_for_txt
from certfleet.acme.model import ChallengeType, SolverRule
from certfleet.errors import InputError
from certfleet.fleet.model import NodeSpec

__all__ = [
    "SOLVERS",
    "Check",
    "DnsSolver",
    "Solver",
    "SolverContext",
    "Task",
    "make_solver",
    "read_secret_settings",
    "solver_key",
]


@dataclass(frozen=True, slots=True)
class Task:
    """One name to prove with one challenge."""

    name: str  # as in the certificate: "*.example.com", "example.com"
    kind: ChallengeType
    token: str = ""  # http-01: the file's name
    value: str = ""  # http-01: the file's content (the key authorization); dns-01: the TXT value

    @property
    def domain(self) -> str:
        return self.name.removeprefix("*.")

    @property
    def record(self) -> str:
        """dns-01: where the TXT record goes."""
        return f"_acme-challenge.{self.domain}"

    @property
    def path(self) -> str:
        """http-01: the URL path the CA fetches."""
        return f"/.well-known/acme-challenge/{self.token}"


@dataclass(frozen=True, slots=True)
class Check:
    """One verdict of a preflight: ``subject`` (a name, or a solver) and what was found."""

    subject: str
    what: str  # "caa", "http-01", "dns-01", "solver"
    ok: bool
    message: str
    warning: bool = False  # not a refusal: a doubt the user should read

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "check": self.what,
            "ok": self.ok,
            "warning": self.warning,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class SolverContext:
    """What solvers may use: the nodes (by name), the lineage's members, DNS, time limits."""

    nodes: Mapping[str, NodeSpec]
    members: tuple[str, ...] = ()  # the lineage's nodes, the ones that serve its names
    dns: DnsSettings = field(default_factory=DnsSettings)
    command_timeout: float = 60.0


class Solver(ABC):
    """Proves names with one challenge type through one means (a webroot, a DNS API...)."""

    kind: ClassVar[ChallengeType]

    def __init__(self, spec: str, context: SolverContext) -> None:
        self.spec = spec
        self.context = context

    @property
    def label(self) -> str:
        """How reports name this solver: ``http-01`` or ``dns-01:rfc2136:/etc/certfleet/tsig.ini``."""
        return f"{self.kind.value}:{self.spec}" if self.spec else self.kind.value

    def validate(self, names: Sequence[str]) -> None:
        """Refuse, before any order, names this solver cannot prove (raises :class:`InputError`)."""
        del names  # every name is fine unless a solver says otherwise

    def where(self, name: str) -> str:
        """Where the proof for ``name`` goes, in words."""
        return self.label

    async def check(self, names: Sequence[str]) -> list[Check]:
        """Preflight: whether this solver can work for ``names`` (credentials, reachability)."""
        return []

    @abstractmethod
    async def present(self, tasks: Sequence[Task]) -> None:
        """Put every proof in place and return once the CA can see them."""

    @abstractmethod
    async def cleanup(self, tasks: Sequence[Task]) -> list[str]:
        """Remove every proof; never raises: what could not be removed is returned, in words."""


class DnsSolver(Solver):
    """dns-01 through some way of changing a zone: add the TXT records, wait until every
    authoritative server of the zone answers them, remove them afterwards."""

    kind = ChallengeType.DNS01
    method: ClassVar[str]

    @property
    def label(self) -> str:
        return f"dns-01:{self.method}:{self.spec}" if self.spec else f"dns-01:{self.method}"

    @abstractmethod
    async def add(self, records: Mapping[str, Sequence[str]]) -> None:
        """Add TXT ``values`` at each record name (beside any there: a wildcard and its apex share one)."""

    @abstractmethod
    async def remove(self, records: Mapping[str, Sequence[str]]) -> None:
        """Remove those TXT values."""

    @staticmethod
    def _records(tasks: Sequence[Task]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for t in tasks:
            out.setdefault(t.record, []).append(t.value)
        return out

    async def present(self, tasks: Sequence[Task]) -> None:
        records = self._records(tasks)
        await self.add(records)
        await wait_for_txt({k: set(v) for k, v in records.items()}, self.context.dns)

    async def cleanup(self, tasks: Sequence[Task]) -> list[str]:
        try:
            await self.remove(self._records(tasks))
        except Exception as exc:  # cleanup reports, it never hides the issuing's own outcome
            return [f"{self.label}: could not remove the TXT records: {exc}"]
        return []


# "TYPE" or "TYPE:METHOD" -> "module:Class"; imported on first use
SOLVERS: Mapping[str, str] = {
    "http-01": "certfleet.acme.challenges.webroot:WebrootSolver",
    "http-01:standalone": "certfleet.acme.challenges.standalone:StandaloneSolver",
    "dns-01:rfc2136": "certfleet.acme.challenges.rfc2136:Rfc2136Solver",
    "dns-01:lexicon": "certfleet.acme.challenges.lexicon_dns:LexiconSolver",
    "dns-01:hook": "certfleet.acme.challenges.hook:HookSolver",
}


def solver_key(rule: SolverRule) -> str:
    """``TYPE:METHOD`` of the registry; ``http-01`` alone (a node's webroot) for ``http-01:NODE``."""
    method = rule.spec.partition(":")[0].strip().lower()
    key = f"{rule.challenge.value}:{method}"
    return key if key in SOLVERS or rule.challenge is ChallengeType.DNS01 else rule.challenge.value


def make_solver(rule: SolverRule, context: SolverContext) -> Solver:
    key = solver_key(rule)
    where = SOLVERS.get(key)
    if where is None:
        known = ", ".join(k for k in SOLVERS if k.startswith("dns-01:"))
        raise InputError(f"unknown solver {rule.challenge.value}:{rule.spec[:40]}", hint=f"dns-01 solvers: {known}")
    module, _, name = where.partition(":")
    cls: type[Solver] = getattr(importlib.import_module(module), name)
    spec = rule.spec if key == rule.challenge.value else rule.spec.partition(":")[2]
    return cls(spec.strip(), context)


async def gather_cleanups(pairs: Sequence[tuple[Solver, Sequence[Task]]]) -> list[str]:
    """Every solver's cleanup, at once; what each could not remove."""
    results = await asyncio.gather(*(solver.cleanup(tasks) for solver, tasks in pairs))
    return [line for lines in results for line in lines]


def read_secret_settings(path: str, what: str) -> dict[str, str]:
    """The ``KEY = VALUE`` lines of the credentials file ``path`` (keys lower-cased; ``#``, ``;``
    and ``[section]`` lines skipped), refused when others may read the file. ``what`` names the
    credentials in errors ("the RFC 2136 credentials")."""
    file = Path(path).expanduser()
    try:
        info = file.stat()
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"{what} {path} are readable by others", hint=f"chmod 600 {path}")
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, eq, value = line.partition("=")
        if not eq:
            raise InputError(f"{path}: {line[:60]!r} is not KEY = VALUE")
        values[key.strip().lower()] = value.strip().strip('"')
    return values
