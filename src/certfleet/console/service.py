"""What the pages and the API show and do, computed once for both: the console's use of the library.

Nothing here decides anything the library does not: names, chains, verification, probing, the
store, requests, imports and deploys are the library's; this module gathers their results into
what one page needs, keeps the short-lived state a browser flow needs (an import shown before it
is saved, a deploy in progress), and records who did what.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from cryptography import x509

from certfleet.certinfo import CertInfo, describe, fingerprint
from certfleet.check import EndpointReport, check
from certfleet.console.accounts import Accounts, Actor, ApiTokenInfo
from certfleet.console.clients import ClientLink, ClientProfile, Clients, ClientUser
from certfleet.console.pictures import ChainBox, Health, chain_svg, timeline_svg
from certfleet.endpoint import Endpoint, parse_endpoint
from certfleet.errors import CertfleetError, InputError
from certfleet.fleet.lineage import trust_with
from certfleet.fleet.model import NodeSpec
from certfleet.fleet.nodes import lineage_names
from certfleet.fleet.status import Serving, serving_of
from certfleet.lint import lint
from certfleet.names import Coverage, coverage
from certfleet.problems import Problem, ProblemCode, Severity, worst
from certfleet.store import DeploymentRecord, LineageRecord, NodeResult, Store, VersionRecord
from certfleet.trust import TrustStore
from certfleet.verify import verify_chain

if TYPE_CHECKING:
    from certfleet.console.app import ConsoleSettings
    from certfleet.console.jobs import DeployJob
    from certfleet.console.tls import TLSContexts

__all__ = [
    "ClientWarning",
    "Console",
    "ConsoleAction",
    "LineageView",
    "NodeStatus",
    "Serving",
]

log = logging.getLogger("certfleet.console")

WARN_DAYS = 30
MAX_JOBS = 100


class ConsoleAction(StrEnum):
    """What the console writes to the audit trail besides the store's own actions."""

    LOGIN = "console.login"
    LOGIN_FAILED = "console.login-failed"
    LOGOUT = "console.logout"
    ACCOUNT_CREATE = "console.account-create"
    TOKEN_CREATE = "console.token-create"  # noqa: S105 (an audit action, not a secret)
    TOKEN_REVOKE = "console.token-revoke"  # noqa: S105
    PROFILE_SAVE = "client.profile-save"
    PROFILE_REMOVE = "client.profile-remove"
    USER_ADD = "client.user-add"
    USER_REMOVE = "client.user-remove"
    LINK_CREATE = "client.link-create"
    FETCH = "client.fetch"


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node: NodeSpec
    lineage: str
    report: EndpointReport | None
    serving: Serving
    last: NodeResult | None
    checked_at: dt.datetime | None

    @property
    def served(self) -> CertInfo | None:
        return self.report.chain[0] if self.report is not None and self.report.chain else None

    @property
    def health(self) -> Health:
        if self.serving is Serving.NOT_PROBED:
            return Health.NONE
        if self.report is None or not self.report.ok:  # down, or a strict client refuses what it serves
            return Health.BAD
        if self.serving is not Serving.ACTIVE or self.report.severity is Severity.WARNING:
            return Health.WARN
        return Health.GOOD

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node.name,
            "lineage": self.lineage,
            "probe": self.node.probe,
            "serving": self.serving.value,
            "health": self.health.value,
            "served": self.served.to_dict() if self.served else None,
            "check": self.report.to_dict() if self.report is not None else None,
            "last_deployment": self.last.to_dict() if self.last is not None else None,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
        }


@dataclass(frozen=True, slots=True)
class LineageView:
    record: LineageRecord
    required: tuple[str, ...]
    coverage: Coverage | None
    problems: tuple[Problem, ...]  # of the active version: path validation, lint, names coverage
    chain_valid: bool | None
    nodes: tuple[NodeStatus, ...]
    pending: tuple[VersionRecord, ...]
    days_left: int | None

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def health(self) -> Health:
        if self.record.active is None:
            return Health.NONE
        sev = worst(self.problems)
        if not self.chain_valid or sev is Severity.ERROR:
            return Health.BAD
        return Health.WARN if sev is Severity.WARNING else Health.GOOD

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.record.to_dict(),
            "required_names": list(self.required),
            "coverage": self.coverage.to_dict() if self.coverage else None,
            "chain_valid": self.chain_valid,
            "health": self.health.value,
            "days_left": self.days_left,
            "problems": [p.to_dict() for p in self.problems],
            "pending": [v.to_dict() for v in self.pending],
            "node_status": [n.to_dict() for n in self.nodes],
        }


@dataclass(frozen=True, slots=True)
class ClientWarning:
    """The certificate served for a client profile's host would fail a strict client."""

    profile: str
    hostname: str
    problems: tuple[Problem, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "hostname": self.hostname, "problems": [p.to_dict() for p in self.problems]}


@dataclass
class _Probed:
    at: float
    checked_at: dt.datetime
    report: EndpointReport


@dataclass
class Console:
    """Everything a request needs, made once per application."""

    store: Store
    accounts: Accounts
    clients: Clients
    settings: ConsoleSettings
    clock: Callable[[], dt.datetime]
    tls: TLSContexts | None = None
    _probes: dict[tuple[str, str | None], _Probed] = field(default_factory=dict, repr=False)
    _trust: tuple[tuple[str, ...], TrustStore] | None = field(default=None, repr=False)
    jobs: dict[str, DeployJob] = field(default_factory=dict, repr=False)
    previews: dict[str, Any] = field(default_factory=dict, repr=False)

    def now(self) -> dt.datetime:
        return self.clock()

    def served_fingerprint(self) -> str | None:
        if self.tls is None:
            return None
        served = self.tls.served
        return served[0].fingerprint if served else None

    def as_actor(self, actor: Actor) -> Store:
        """The store, recording changes in the name of the console account."""
        return self.store.with_actor(f"console:{actor.audit_name}")

    def audit(self, actor: Actor, action: str, detail: dict[str, Any] | None = None) -> None:
        self.as_actor(actor).audit(action, detail or {})

    # -- changes to the console's own records, each with its audit entry ---------------------------

    def create_token(self, actor: Actor, name: str) -> tuple[str, ApiTokenInfo]:
        """A new API token for ``actor``'s account: its value (shown once) and what is kept of it."""
        token, info = self.accounts.new_api_token(actor, name)
        self.audit(actor, ConsoleAction.TOKEN_CREATE, {"token": info.name, "id": info.id})
        return token, info

    def revoke_token(self, actor: Actor, token_id: int) -> str:
        name = self.accounts.revoke_api_token(token_id)
        self.audit(actor, ConsoleAction.TOKEN_REVOKE, {"token": name, "id": token_id})
        return name

    def save_profile(
        self, actor: Actor, name: str, *, hostname: str, template: str, content_type: str, link_hours: int
    ) -> ClientProfile:
        profile = self.clients.save_profile(
            name, hostname=hostname, template=template, content_type=content_type, link_hours=link_hours
        )
        self.audit(actor, ConsoleAction.PROFILE_SAVE, {"profile": profile.name, "hostname": profile.hostname})
        return profile

    def remove_profile(self, actor: Actor, name: str) -> None:
        self.clients.remove_profile(name)
        self.audit(actor, ConsoleAction.PROFILE_REMOVE, {"profile": name})

    def add_client_user(
        self, actor: Actor, profile: str, username: str, *, display_name: str = "", email: str = ""
    ) -> ClientUser:
        user = self.clients.add_user(profile, username, display_name=display_name, email=email)
        self.audit(actor, ConsoleAction.USER_ADD, {"user": user.username, "profile": user.profile})
        return user

    def remove_client_user(self, actor: Actor, user_id: int) -> str:
        name = self.clients.remove_user(user_id)
        self.audit(actor, ConsoleAction.USER_REMOVE, {"user": name})
        return name

    def new_client_link(self, actor: Actor, user_id: int) -> ClientLink:
        """A one-time deployment link for a client user; its URL exists only in what is returned."""
        link = self.clients.new_link(user_id, created_by=actor.audit_name)
        self.audit(
            actor,
            ConsoleAction.LINK_CREATE,
            {"user": link.user, "profile": link.profile, "expires_at": link.expires_at.isoformat()},
        )
        return link

    # -- trust and verification ------------------------------------------------------------------

    def trust(self) -> TrustStore:
        """What imports and checks trust: Mozilla's roots plus the store's anchors (rebuilt when
        ``certfleet trust add`` or ``remove`` changed them, even from another process)."""
        anchors = [a.cert for a in self.store.trust_anchors()] + list(self.settings.extra_trust)
        key = tuple(sorted(fingerprint(c) for c in anchors))
        cached = self._trust
        if cached is not None and cached[0] == key:
            return cached[1]
        trust = trust_with(anchors)
        self._trust = (key, trust)
        return trust

    def required_names(self, record: LineageRecord, nodes: Sequence[NodeSpec] | None = None) -> tuple[str, ...]:
        return lineage_names(record, nodes if nodes is not None else self.store.nodes(record.name))

    def version_health(
        self, version: VersionRecord, required: Sequence[str]
    ) -> tuple[bool | None, tuple[Problem, ...], Coverage | None]:
        """Is this issued version's chain what a strict client accepts, and does it cover the names?"""
        if version.leaf is None:
            return None, (), None
        now = self.now()
        trust = self.trust()
        verification = verify_chain(version.leaf, version.chain, trust, at=now)
        problems: list[Problem] = list(verification.problems)
        seen = {(p.code, p.subject) for p in problems}
        for p in lint((version.leaf, *version.chain), now=now, expiring_days=WARN_DAYS, trust=trust):
            if (p.code, p.subject) not in seen:
                seen.add((p.code, p.subject))
                problems.append(p)
        cov: Coverage | None = None
        if required:
            try:
                cov = coverage(version.leaf, required)
            except CertfleetError:
                cov = None
            if cov is not None:
                for missing in cov.missing:
                    problems.append(
                        Problem(
                            ProblemCode.NAME_MISMATCH,
                            Severity.ERROR,
                            missing.reason,
                            "request a new certificate that covers every node's names",
                            missing.name,
                        )
                    )
        return verification.valid, tuple(problems), cov

    # -- probing ---------------------------------------------------------------------------------

    async def probe_targets(self, targets: Sequence[Endpoint], *, refresh: bool = False) -> list[EndpointReport]:
        """Check each target as a strict client would; results are reused for a short while."""
        now_m = time.monotonic()
        keys = [(str(t), t.name) for t in targets]
        todo = [
            t
            for t, k in zip(targets, keys, strict=True)
            if refresh or k not in self._probes or now_m - self._probes[k].at > self.settings.probe_ttl
        ]
        if todo:
            report = await check(
                todo, trust=self.trust(), timeout=self.settings.probe_timeout, now=self.now(), concurrency=32
            )
            for t, r in zip(todo, report.endpoints, strict=True):
                self._probes[(str(t), t.name)] = _Probed(time.monotonic(), self.now(), r)
        return [self._probes[k].report for k in keys]

    def probed_at(self, target: Endpoint) -> dt.datetime | None:
        hit = self._probes.get((str(target), target.name))
        return hit.checked_at if hit else None

    @staticmethod
    def node_target(node: NodeSpec) -> Endpoint | None:
        if not node.probe:
            return None
        try:
            return node.endpoint()
        except CertfleetError:
            return None

    async def node_statuses(
        self, record: LineageRecord, nodes: Sequence[NodeSpec], *, refresh: bool = False
    ) -> list[NodeStatus]:
        targets = {n.name: self.node_target(n) for n in nodes}
        wanted = [t for t in targets.values() if t is not None]
        reports = dict(zip([t.label for t in wanted], await self.probe_targets(wanted, refresh=refresh), strict=True))
        last = await asyncio.to_thread(self.store.last_results, record.name)
        fingerprints = {v.fingerprint for v in await asyncio.to_thread(self.store.versions, record.name)}
        active = record.active.fingerprint if record.active else None
        out = []
        for node in nodes:
            target = targets[node.name]
            report = reports.get(node.name) if target is not None else None
            if target is None:
                serving = Serving.NOT_PROBED
            else:
                seen = report.chain[0].sha256 if report is not None and report.probe.ok and report.chain else None
                serving = serving_of(seen, active, fingerprints)
            hit = last.get(node.name)
            out.append(
                NodeStatus(
                    node=node,
                    lineage=record.name,
                    report=report,
                    serving=serving,
                    last=hit[1] if hit else None,
                    checked_at=self.probed_at(target) if target else None,
                )
            )
        return out

    async def lineage_view(self, record: LineageRecord, *, refresh: bool = False) -> LineageView:
        nodes = await asyncio.to_thread(self.store.nodes, record.name)
        required = self.required_names(record, nodes)
        valid: bool | None = None
        problems: tuple[Problem, ...] = ()
        cov: Coverage | None = None
        days = None
        if record.active is not None:
            valid, problems, cov = await asyncio.to_thread(self.version_health, record.active, required)
            days = record.active.days_left(self.now())
        versions = await asyncio.to_thread(self.store.versions, record.name)
        return LineageView(
            record=record,
            required=required,
            coverage=cov,
            problems=problems,
            chain_valid=valid,
            nodes=tuple(await self.node_statuses(record, nodes, refresh=refresh)),
            pending=tuple(v for v in versions if v.leaf is None),
            days_left=days,
        )

    async def dashboard(self, *, refresh: bool = False) -> list[LineageView]:
        records = await asyncio.to_thread(self.store.lineages)
        return list(await asyncio.gather(*(self.lineage_view(r, refresh=refresh) for r in records)))

    async def client_warnings(self, *, refresh: bool = False) -> list[ClientWarning]:
        """Client profiles whose host serves a certificate a strict client (a phone) would refuse."""
        profiles = await asyncio.to_thread(self.clients.profiles)
        targets: list[tuple[ClientProfile, Endpoint]] = []
        for prof in profiles:
            try:
                host = prof.host.strip("[]")
                targets.append((prof, parse_endpoint(f"{prof.hostname}", name=host, label=prof.name)))
            except CertfleetError as exc:
                log.warning("client profile %s: %s", prof.name, exc)
        reports = await self.probe_targets([t for _, t in targets], refresh=refresh)
        out = []
        for (prof, _), report in zip(targets, reports, strict=True):
            if not report.ok:
                errors = tuple(p for p in report.problems if p.severity is Severity.ERROR) or report.problems
                if not errors:
                    errors = (
                        Problem(ProblemCode.UNTRUSTED, Severity.ERROR, "the served chain does not verify", "", None),
                    )
                out.append(ClientWarning(prof.name, prof.hostname, errors))
        return out

    def served_fingerprint_for(self, host: str) -> str:
        """The leaf the console serves for ``host`` (what a client that pins would expect)."""
        return self.tls.served_for(host).fingerprint if self.tls is not None else ""

    # -- certificates ----------------------------------------------------------------------------

    def find_certificate(self, sha256: str) -> tuple[x509.Certificate, list[x509.Certificate], str | None]:
        """A certificate known to the store by fingerprint: (cert, its chain as stored, lineage)."""
        sha256 = sha256.lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InputError("a certificate is named by its SHA-256 fingerprint (64 hex digits)")
        for record in self.store.lineages():
            for v in self.store.versions(record.name):
                if v.leaf is None:
                    continue
                if v.fingerprint == sha256:
                    return v.leaf, list(v.chain), record.name
                for i, c in enumerate(v.chain):
                    if fingerprint(c) == sha256:
                        return c, list(v.chain[i + 1 :]), record.name
        for anchor in self.store.trust_anchors():
            if anchor.fingerprint == sha256:
                return anchor.cert, [], None
        if self.tls is not None:
            for served in self.tls.served:
                if served.fingerprint == sha256:
                    return served.leaf, list(served.chain), None
        raise InputError(f"no certificate {sha256[:16]}… in the store", hint="the dashboard links every certificate")

    def chain_picture(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate]) -> tuple[Any, Any]:
        """The validated chain as boxes (leaf to root), with a dashed box where one is missing."""
        now = self.now()
        verification = verify_chain(leaf, chain, self.trust(), at=now)
        path = list(verification.chain) or [leaf]
        boxes = []
        for i, cert in enumerate(path):
            info = describe(cert)
            role = "leaf" if i == 0 else ("root" if cert.subject == cert.issuer else "intermediate")
            own = [p for p in verification.problems if p.subject == info.sha256]
            health = (
                Health.BAD if now >= info.not_after or any(p.severity is Severity.ERROR for p in own) else Health.GOOD
            )
            if health is Health.GOOD and info.days_left(now) <= WARN_DAYS:
                health = Health.WARN
            boxes.append(
                ChainBox(
                    role,
                    info.common_name or info.subject,
                    f"until {info.not_after:%Y-%m-%d} · {info.key_type} · {info.sha256[:16]}…",
                    health,
                    f"/certificates/{info.sha256}",
                )
            )
        last = path[-1]
        if not verification.valid and last.subject != last.issuer:
            missing = next((p for p in verification.problems if p.code is ProblemCode.INCOMPLETE_CHAIN), None)
            issuer = last.issuer.rfc4514_string() if last.issuer else "unknown"
            boxes.append(
                ChainBox(
                    "missing",
                    issuer,
                    missing.message if missing else "no trusted issuer found",
                    Health.BAD,
                )
            )
        return chain_svg(boxes), verification

    @staticmethod
    def timeline(version: VersionRecord, now: dt.datetime) -> Any:
        if version.not_before is None or version.not_after is None:
            return ""
        return timeline_svg(version.not_before, version.not_after, now, warn_days=WARN_DAYS)

    # -- history --------------------------------------------------------------------------------

    def history(self, lineage: str | None = None, limit: int = 50) -> list[DeploymentRecord]:
        return self.store.deployments(lineage, limit=limit)

    def add_job(self, job: DeployJob) -> None:
        """Keep a deploy job for its page; the oldest finished ones go beyond the last hundred."""
        self.jobs[job.id] = job
        finished = sorted((j for j in self.jobs.values() if j.done), key=lambda j: j.started_at)
        for old in finished[: max(0, len(self.jobs) - MAX_JOBS)]:
            del self.jobs[old.id]

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(12)
