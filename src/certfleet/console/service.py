"""What the pages and the API show and do, computed once for both: the console's use of the library.

Nothing here decides anything the library does not: names, chains, verification, probing, the
store, requests, imports and deploys are the library's; this module gathers their results into
what one page needs, keeps the short-lived state a browser flow needs (an import shown before it
is saved, a deploy in progress), and records who did what.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from cryptography import x509

from certfleet.certinfo import describe, fingerprint
from certfleet.check import check
from certfleet.clock import Clock
from certfleet.console.accounts import Accounts, Actor, ApiTokenInfo
from certfleet.console.clients import ClientLink, ClientProfile, Clients, ClientUser
from certfleet.console.pictures import ChainBox, chain_svg, timeline_svg
from certfleet.endpoint import Endpoint, parse_endpoint
from certfleet.errors import CertfleetError, InputError
from certfleet.fleet.health import Health
from certfleet.fleet.lineage import trust_with
from certfleet.fleet.model import NodeSpec
from certfleet.fleet.nodes import lineage_names
from certfleet.fleet.status import Checked, LineageStatus, StatusReport, status
from certfleet.problems import Problem, ProblemCode, Severity
from certfleet.store import DeploymentRecord, LineageRecord, Store, VersionRecord
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
    "ProbeCache",
    "lineage_json",
]

log = logging.getLogger("certfleet.console")

MAX_JOBS = 100
PROBE_CONCURRENCY = 32


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


def lineage_json(lineage: LineageStatus) -> dict[str, Any]:
    """A lineage as the API has always given it: the stored lineage, its active chain's verdict,
    and each node's status, the same objects as in `certfleet status --json`."""
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


@dataclass(frozen=True, slots=True)
class ClientWarning:
    """The certificate served for a client profile's host would fail a strict client."""

    profile: str
    hostname: str
    problems: tuple[Problem, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "hostname": self.hostname, "problems": [p.to_dict() for p in self.problems]}


class ProbeCache:
    """Endpoint reports reused for a short while by the dashboard, the API and ``/metrics``: the
    checker :func:`certfleet.fleet.status.status` is given, with ``check.check`` behind it."""

    def __init__(
        self, *, ttl: float, timeout: float, expiring_days: int, clock: Clock, trust: Callable[[], TrustStore]
    ) -> None:
        self._ttl, self._timeout, self._expiring_days = ttl, timeout, expiring_days
        self._clock, self._trust = clock, trust
        self._hits: dict[tuple[str, str | None, str | None, str | None], tuple[float, Checked]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(target: Endpoint) -> tuple[str, str | None, str | None, str | None]:
        return (str(target), target.name, target.label, target.starttls.value if target.starttls else None)

    async def check(self, targets: Sequence[Endpoint], *, refresh: bool = False) -> list[Checked]:
        """Each target as a strict client judges it, checked again when its report is older than the ttl."""
        keys = [self._key(t) for t in targets]
        now_m = time.monotonic()
        with self._lock:
            todo = [
                t
                for t, k in zip(targets, keys, strict=True)
                if refresh or k not in self._hits or now_m - self._hits[k][0] > self._ttl
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
                for old in [k for k, (at, _) in self._hits.items() if done - at > self._ttl]:
                    del self._hits[old]
                for t, r in zip(todo, report.endpoints, strict=True):
                    self._hits[self._key(t)] = (done, Checked(r, report.checked_at))
        with self._lock:
            return [self._hits[k][1] for k in keys]


@dataclass
class Console:
    """Everything a request needs, made once per application."""

    store: Store
    accounts: Accounts
    clients: Clients
    settings: ConsoleSettings
    clock: Clock
    tls: TLSContexts | None = None
    _trust: tuple[tuple[str, ...], TrustStore] | None = field(default=None, repr=False)
    jobs: dict[str, DeployJob] = field(default_factory=dict, repr=False)
    previews: dict[str, Any] = field(default_factory=dict, repr=False)
    probes: ProbeCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.probes = ProbeCache(
            ttl=self.settings.probe_ttl,
            timeout=self.settings.probe_timeout,
            expiring_days=self.settings.expiring_days,
            clock=self.clock,
            trust=self.trust,
        )

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

    # -- status ----------------------------------------------------------------------------------

    async def status(self, *, lineage: str | None = None, refresh: bool = False) -> StatusReport:
        """The fleet's status, as `certfleet status` reports it; probes are reused for a short while."""
        return await status(
            self.store,
            now=self.now(),
            lineage=lineage,
            timeout=self.settings.probe_timeout,
            trust=self.trust(),
            expiring_days=self.settings.expiring_days,
            checker=functools.partial(self.probes.check, refresh=refresh),
        )

    async def client_warnings(self, *, refresh: bool = False) -> list[ClientWarning]:
        """Client profiles whose host serves a certificate a strict client (a phone) would refuse."""
        profiles = self.clients.profiles()
        targets: list[tuple[ClientProfile, Endpoint]] = []
        for prof in profiles:
            try:
                host = prof.host.strip("[]")
                targets.append((prof, parse_endpoint(f"{prof.hostname}", name=host, label=prof.name)))
            except CertfleetError as exc:
                log.warning("client profile %s: %s", prof.name, exc)
        checked = await self.probes.check([t for _, t in targets], refresh=refresh)
        out = []
        for (prof, _), seen in zip(targets, checked, strict=True):
            report = seen.report
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
        version = self.store.version_by_fingerprint(sha256)
        if version is not None and version.leaf is not None:
            return version.leaf, list(version.chain), version.lineage
        carried = self.store.version_with_chain_certificate(sha256)
        if carried is not None:
            holder, index = carried
            return holder.chain[index], list(holder.chain[index + 1 :]), holder.lineage
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
            if health is Health.GOOD and info.days_left(now) <= self.settings.expiring_days:
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

    def timeline(self, version: VersionRecord, now: dt.datetime) -> Any:
        if version.not_before is None or version.not_after is None:
            return ""
        return timeline_svg(version.not_before, version.not_after, now, warn_days=self.settings.expiring_days)

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
