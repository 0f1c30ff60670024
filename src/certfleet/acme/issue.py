"""``certfleet issue``: a lineage's certificate from its issuers, tried in order.

The plan comes first and refuses what no CA could issue before anything is sent (a wildcard
without dns-01, an http-01 name no node serves, a node without a webroot). The preflight then
checks CAA, http-01 reachability and DNS credentials. For each issuer in turn: a key (new, or the
active version's under ``reuse_key``), a CSR for every name of the lineage's nodes, an order, every
authorization solved at once, finalize, download (and the alternate chains: the preferred one is
kept), then the same import path as a manual package (:func:`certfleet.fleet.lineage.import_package`):
chain, strict verification, every node's names covered, a new version.

When a CA refuses or cannot be reached, the next issuer is tried; the result and the store say
which one issued and why the others did not. A failed order stores nothing: its new key existed
only in memory and is dropped. A manual issuer stops the list: the CSR waits for the CA.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization

from certfleet.acme.accounts import connect
from certfleet.acme.challenges import Solver, SolverContext, Task, gather_cleanups, make_solver
from certfleet.acme.errors import AcmeProblem, CAUnreachable
from certfleet.acme.lookup import DnsSettings
from certfleet.acme.model import (
    AccountStatus,
    ChallengeType,
    IssuerKind,
    IssuerRecord,
    LineagePolicy,
    SolverRule,
    pick_rule,
)
from certfleet.acme.order import Downloaded, Order, choose_chain
from certfleet.acme.preflight import PreflightReport, preflight
from certfleet.clock import Clock, utc_now
from certfleet.csr import Subject, build_csr
from certfleet.errors import CertfleetError, InputError, NetworkError, OperationFailed
from certfleet.fleet.lineage import ImportResult, RequestResult, import_package, request
from certfleet.fleet.nodes import lineage_names
from certfleet.keys import WebKey, generate_key, require_web_key
from certfleet.names import plan
from certfleet.store import Store

__all__ = [
    "ACME_NAME_LIMIT",
    "AllIssuersFailed",
    "Attempt",
    "IssueEvent",
    "IssuePlan",
    "IssueResult",
    "dry_run",
    "issue",
    "plan_issue",
]

ACME_NAME_LIMIT = 100  # Let's Encrypt's and most ACME CAs' limit of names per certificate
DEFAULT_SOLVER = SolverRule("*", ChallengeType.HTTP01)


@dataclass(frozen=True, slots=True)
class IssueEvent:
    """A step of the issuing, as it happens: ``name`` is set for a step about one name."""

    step: str  # preflight, order, present, answer, valid, finalize, import, cleanup, failed, issued
    issuer: str | None = None
    name: str | None = None
    detail: str = ""


Progress = Callable[[IssueEvent], None]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One issuer tried, and why it did not issue (``error`` None: it did)."""

    issuer: str
    error: str | None = None
    hint: str | None = None
    exit_code: int | None = None
    retry_after: dt.datetime | None = None  # the CA asked not to try again before this

    def to_dict(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "error": self.error,
            "hint": self.hint,
            "exit_code": self.exit_code,
            "retry_after": self.retry_after.isoformat() if self.retry_after is not None else None,
        }


class AllIssuersFailed(OperationFailed):
    """Every issuer of the lineage refused (exit 1)."""

    def __init__(self, message: str, *, attempts: Sequence[Attempt], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.attempts = tuple(attempts)


class AllIssuersUnreachable(NetworkError):
    """No issuer of the lineage could be reached (exit 3)."""

    def __init__(self, message: str, *, attempts: Sequence[Attempt], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.attempts = tuple(attempts)


@dataclass(frozen=True, slots=True)
class IssuePlan:
    """What an issue will ask for, checked before any CA is asked."""

    lineage: str
    names: tuple[str, ...]
    policy: LineagePolicy
    issuers: tuple[IssuerRecord, ...]
    assignment: Mapping[str, Solver] = field(repr=False)
    key_spec: str = "ec:p256"
    subject: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "names": list(self.names),
            "issuers": [i.name for i in self.issuers],
            "solvers": {n: s.label for n, s in self.assignment.items()},
            "key": self.key_spec,
        }


@dataclass(frozen=True, slots=True)
class IssueResult:
    lineage: str
    names: tuple[str, ...]
    issuer: str | None
    attempts: tuple[Attempt, ...]
    imported: ImportResult | None = None
    request: RequestResult | None = None  # a manual issuer: the CSR waits for the CA
    preflight: PreflightReport | None = None
    order_url: str | None = None
    chain: str | None = None  # the issuer of the kept chain's top certificate
    preferred_found: bool | None = None
    key: str = ""  # what became of the key, in words
    reused: tuple[str, ...] = ()  # names the CA had validated already
    cleanup: tuple[str, ...] = ()  # proofs that could not be removed
    seconds: float = 0.0
    replaced: str | None = None  # the ARI CertID the order named as the certificate it replaces

    @property
    def ok(self) -> bool:
        if self.request is not None:
            return True
        return self.imported is not None and self.imported.accepted

    def to_dict(self) -> dict[str, Any]:
        version = self.imported.version if self.imported is not None else None
        return {
            "lineage": self.lineage,
            "ok": self.ok,
            "issuer": self.issuer,
            "names": list(self.names),
            "version": version.number if version is not None else None,
            "fingerprint": version.fingerprint if version is not None else None,
            "attempts": [a.to_dict() for a in self.attempts],
            "order": self.order_url,
            "chain": self.chain,
            "preferred_chain_found": self.preferred_found,
            "key": self.key,
            "reused_authorizations": list(self.reused),
            "cleanup": list(self.cleanup),
            "seconds": round(self.seconds, 3),
            "replaces": self.replaced,
            "import": self.imported.to_dict() if self.imported is not None else None,
            "preflight": self.preflight.to_dict() if self.preflight is not None else None,
            "request": self.request.to_dict() if self.request is not None else None,
        }


def plan_issue(store: Store, lineage: str, *, dns: DnsSettings | None = None) -> IssuePlan:
    """The names, issuers and solvers of an issue, every refusal said before any order."""
    record = store.lineage(lineage)
    policy = store.policy(lineage)
    if not policy.issuers:
        raise InputError(
            f"lineage {lineage} has no issuer",
            hint=f"`certfleet issuer add NAME --acme URL`, then `certfleet lineage set {lineage} --issuer NAME`",
        )
    issuers = tuple(store.issuer(name) for name in policy.issuers)
    members = store.nodes(lineage)
    required = lineage_names(record, members)
    if not required:
        raise InputError(
            f"lineage {lineage} has no names", hint=f"add nodes: `certfleet node add ... --lineage {lineage}`"
        )
    names_plan = plan(required, limit=ACME_NAME_LIMIT, wildcards=False)
    if not names_plan.fits:
        raise InputError(f"{names_plan.count} names are more than the {ACME_NAME_LIMIT} an ACME CA takes at once")
    context = SolverContext(
        nodes={n.name: n for n in store.nodes()}, members=tuple(n.name for n in members), dns=dns or DnsSettings()
    )
    solvers: dict[str, Solver] = {}
    assignment: dict[str, Solver] = {}
    # a manual CA proves nothing through certfleet: the solvers matter only with an ACME issuer
    for name in names_plan.entries if any(i.is_acme for i in issuers) else ():
        rule = pick_rule(policy.solvers, name) or DEFAULT_SOLVER
        if name.startswith("*.") and rule.challenge is not ChallengeType.DNS01:
            raise InputError(
                f"{name} is a wildcard: a CA proves a wildcard only by dns-01, and no dns-01 solver covers it",
                hint=f"`certfleet lineage set {lineage} --solver '{name}=dns-01:rfc2136:FILE'` "
                "(or dns-01:lexicon:PROVIDER, dns-01:hook:COMMAND)",
            )
        key = str(rule.challenge) + ":" + rule.spec
        solver = solvers.get(key) or make_solver(rule, context)
        solvers[key] = solver
        assignment[name] = solver
    for solver in solvers.values():
        solver.validate([n for n, s in assignment.items() if s is solver])
    return IssuePlan(
        lineage=lineage,
        names=tuple(names_plan.entries),
        policy=policy,
        issuers=issuers,
        assignment=assignment,
        key_spec=record.key_spec,
        subject=record.subject,
    )


async def dry_run(store: Store, lineage: str, *, dns: DnsSettings | None = None) -> PreflightReport:
    """Only the preflight: each name's verdict for each ACME issuer, nothing ordered."""
    the_plan = plan_issue(store, lineage, dns=dns)
    dns = dns or DnsSettings()
    acme = [(i.name, i.caa_identities) for i in the_plan.issuers if i.is_acme]
    return await preflight(lineage, the_plan.assignment, acme, dns)


def _attempt(issuer: str, exc: CertfleetError) -> Attempt:
    return Attempt(issuer, str(exc), exc.hint, int(exc.exit_code), getattr(exc, "retry_after", None))


async def issue(
    store: Store,
    lineage: str,
    *,
    clock: Clock = utc_now,
    progress: Progress | None = None,
    dns: DnsSettings | None = None,
    check_first: bool = True,
    replaces: Mapping[str, str] | None = None,
) -> IssueResult:
    """Issue ``lineage``'s certificate from its first issuer that can (see the module's words).

    ``replaces``: issuer name -> the ARI CertID of the certificate that issuer made and this one
    renews (RFC 9773); an order to that issuer names it."""
    started = time.monotonic()
    dns = dns or DnsSettings()
    the_plan = plan_issue(store, lineage, dns=dns)
    tell = progress or (lambda _event: None)
    report: PreflightReport | None = None
    refused_by_caa: dict[str, str] = {}
    acme = [i for i in the_plan.issuers if i.is_acme and i.status is not AccountStatus.DEACTIVATED]
    if check_first and acme:
        tell(IssueEvent("preflight"))
        report = await preflight(lineage, the_plan.assignment, [(i.name, i.caa_identities) for i in acme], dns)
        for check in report.failed():
            if check.what.startswith("caa:"):
                refused_by_caa.setdefault(check.what.removeprefix("caa:"), f"{check.subject}: {check.message}")
        ours = [c for c in report.failed() if not c.what.startswith("caa:")]
        every_ca_refused = all(i.name in refused_by_caa for i in acme) and all(i.is_acme for i in the_plan.issuers)
        if ours or every_ca_refused:
            return IssueResult(
                lineage, the_plan.names, None, (), preflight=report, key="nothing was ordered: no key was made",
                seconds=time.monotonic() - started,
            )  # fmt: skip
    attempts: list[Attempt] = []
    for issuer in the_plan.issuers:
        if issuer.kind is IssuerKind.MANUAL:
            made = request(store, lineage, limit=ACME_NAME_LIMIT)
            tell(IssueEvent("request", issuer.name, detail=f"version {made.version.number} waits for the CA"))
            return IssueResult(
                lineage, the_plan.names, issuer.name, (*attempts, Attempt(issuer.name)), request=made, preflight=report,
                key=f"a new {made.key_spec} key waits in the store with the CSR (version {made.version.number})",
                seconds=time.monotonic() - started,
            )  # fmt: skip
        if issuer.status is AccountStatus.DEACTIVATED:
            attempts.append(Attempt(issuer.name, f"{issuer.name}: the account is deactivated", None, 1))
            continue
        if issuer.name in refused_by_caa:
            why = refused_by_caa[issuer.name]
            attempts.append(Attempt(issuer.name, f"{issuer.name}: preflight: {why}", None, 1))
            tell(IssueEvent("failed", issuer.name, detail=why))
            continue
        try:
            result = await _from_acme(
                store,
                the_plan,
                issuer,
                clock=clock,
                tell=tell,
                tried=attempts,
                replaces=(replaces or {}).get(issuer.name),
            )
        except (AcmeProblem, CAUnreachable) as exc:
            attempts.append(_attempt(issuer.name, exc))
            tell(IssueEvent("failed", issuer.name, detail=str(exc)))
            continue
        return IssueResult(
            **{**result, "attempts": (*attempts, Attempt(issuer.name)), "preflight": report},
            seconds=time.monotonic() - started,
        )
    raise _all_failed(lineage, attempts, reuse_key=the_plan.policy.reuse_key)


def _all_failed(lineage: str, attempts: Sequence[Attempt], *, reuse_key: bool) -> CertfleetError:
    stored = (
        "nothing was stored (the active key is unchanged)"
        if reuse_key
        else "nothing was stored: the new key of each order existed only in memory and was dropped"
    )
    if len(attempts) == 1:
        only = attempts[0]
        cls: type[AllIssuersFailed] | type[AllIssuersUnreachable] = (
            AllIssuersUnreachable if only.exit_code == 3 else AllIssuersFailed
        )
        hint = f"{only.hint}; {stored}" if only.hint else stored
        return cls(only.error or "the issuer failed", attempts=attempts, hint=hint)
    lines = "; ".join(a.error or a.issuer for a in attempts)
    hint = stored
    if all(a.exit_code == 3 for a in attempts):
        return AllIssuersUnreachable(f"no issuer of {lineage} could be reached: {lines}", attempts=attempts, hint=hint)
    return AllIssuersFailed(f"every issuer of {lineage} failed: {lines}", attempts=attempts, hint=hint)


async def _from_acme(
    store: Store,
    the_plan: IssuePlan,
    issuer: IssuerRecord,
    *,
    clock: Clock,
    tell: Progress,
    tried: Sequence[Attempt],
    replaces: str | None = None,
) -> dict[str, Any]:
    lineage = the_plan.lineage
    policy = the_plan.policy
    key: WebKey
    reused_key = None
    if policy.reuse_key and store.lineage(lineage).active is not None:
        reused_key = store.lineage(lineage).active
        key = require_web_key(store.material(lineage).key)
    else:
        key = generate_key(the_plan.key_spec)
    subject = Subject.parse(the_plan.subject) if the_plan.subject else None
    csr = build_csr(key, the_plan.names, subject)
    csr_pem = csr.public_bytes(serialization.Encoding.PEM)
    with connect(store, issuer) as conn:
        wanted = policy.profile or issuer.profile
        offered = await asyncio.to_thread(conn.profiles)
        profile = wanted if wanted and wanted in offered else None
        if wanted and profile is None:
            tell(IssueEvent("order", issuer.name, detail=f"the CA offers no profile {wanted}: ordering without one"))
        kinds = {n: s.kind for n, s in the_plan.assignment.items()}
        order = Order(conn, csr_pem, kinds, profile=profile, replaces=replaces)
        downloaded, reused, leftovers = await _solve(order, the_plan, issuer.name, tell)
    chain_pem, top, matched = choose_chain(downloaded.fullchain_pem, downloaded.alternates, policy.preferred_chain)
    found = matched if policy.preferred_chain else None
    tell(IssueEvent("import", issuer.name))
    inputs = [(f"the certificate from {issuer.name}", chain_pem.encode("ascii"))]
    if reused_key is None:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        inputs.append(("the order's new key", pem))
    imported = import_package(store, lineage, inputs, now=clock(), fetcher=None)
    if imported.accepted and imported.version is not None:
        number = imported.version.number
        store.record_issuance(
            lineage, number, issuer.name, order_url=downloaded.order_url, tried=[a.error or a.issuer for a in tried]
        )
        what = f"the key of version {reused_key.number}, kept" if reused_key else f"a new {the_plan.key_spec} key"
        key_words = f"{what}: stored, sealed, with version {number}"
        tell(IssueEvent("issued", issuer.name, detail=f"version {number}"))
    else:
        key_words = "the new key was dropped (never stored): the certificate is unusable without it"
        if reused_key is not None:
            key_words = f"the key of version {reused_key.number} is unchanged"
    return {
        "lineage": lineage,
        "names": the_plan.names,
        "issuer": issuer.name,
        "imported": imported,
        "order_url": downloaded.order_url,
        "chain": top,
        "preferred_found": found,
        "key": key_words,
        "reused": tuple(reused),
        "cleanup": tuple(leftovers),
        "replaced": order.replaces,
    }


async def _solve(
    order: Order, the_plan: IssuePlan, issuer: str, tell: Progress
) -> tuple[Downloaded, list[str], list[str]]:
    """Place the order, solve every authorization at once, always clean up, then finalize."""
    tell(IssueEvent("order", issuer, detail=f"{len(the_plan.names)} names"))
    tasks = await asyncio.to_thread(order.place)
    groups: dict[int, tuple[Solver, list[Task]]] = {}
    for task in tasks:
        solver = the_plan.assignment[task.name]
        groups.setdefault(id(solver), (solver, []))[1].append(task)
    started: list[tuple[Solver, list[Task]]] = []

    async def present(solver: Solver, mine: list[Task]) -> None:
        started.append((solver, mine))
        for task in mine:
            tell(IssueEvent("present", issuer, task.name, solver.where(task.name)))
        await solver.present(mine)

    leftovers: list[str] = []
    try:
        outcomes = await asyncio.gather(*(present(s, m) for s, m in groups.values()), return_exceptions=True)
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failure is not None:
            raise failure
        for task in tasks:
            tell(IssueEvent("answer", issuer, task.name))
        await asyncio.to_thread(order.answer)
        await asyncio.to_thread(order.wait_valid_names)
        for task in tasks:
            tell(IssueEvent("valid", issuer, task.name))
    finally:
        if started:
            tell(IssueEvent("cleanup", issuer))
            leftovers = await gather_cleanups(started)
    tell(IssueEvent("finalize", issuer))
    downloaded = await asyncio.to_thread(order.finalize)
    return downloaded, order.reused, leftovers
