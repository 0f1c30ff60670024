"""Issuers and how each lineage is issued, as the console reads and changes them: ACME accounts
(External Account Binding, terms, key rollover, deactivation), a lineage's issuers in order, its
solvers per name, profile and preferred chain, and revocation.

Each call is the library's, the same :mod:`certfleet.acme` functions ``certfleet issuer``,
``certfleet lineage set`` and ``certfleet revoke`` call; this module turns what a form holds into
their arguments and makes each change in the name of the console account. The EAB HMAC key is
handed to the library and dropped: it is never kept, shown, logged or written to the audit trail.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from certfleet.acme import accounts
from certfleet.acme.model import ChallengeType, IssuerRecord, LineagePolicy, RevocationReason, SolverRule, pick_rule
from certfleet.acme.revoke import RevokeResult, revoke
from certfleet.console.roles import Forbidden, Role
from certfleet.console.services.audit import Actor, Audit
from certfleet.errors import CertfleetError, InputError
from certfleet.fleet.model import NodeSpec
from certfleet.fleet.nodes import lineage_names
from certfleet.store import Store, VersionState

if TYPE_CHECKING:
    from certfleet.acme.challenges import SolverContext

__all__ = [
    "HOOK",
    "IssuerValues",
    "Issuers",
    "NameSolver",
    "PolicyValues",
    "VersionLine",
    "solver_choices",
]

HOOK = "dns-01:hook"  # runs a command on the console's machine: an administrator's power
MAX_EAB = 512


@dataclass(frozen=True, slots=True, repr=False)
class IssuerValues:
    """The add-issuer form. ``repr`` is off: the HMAC key must never reach a log line."""

    name: str = ""
    directory: str = ""
    eab_kid: str = ""
    eab_hmac: str = ""
    contact: tuple[str, ...] = ()
    agree_tos: bool = False
    profile: str = ""
    ca_bundle: tuple[tuple[str, bytes], ...] = ()
    caa_identities: tuple[str, ...] = ()
    manual: bool = False

    def shown(self) -> IssuerValues:
        """What the form shows again after a refusal: everything but the HMAC key and the upload."""
        return IssuerValues(
            self.name, self.directory, self.eab_kid, "", self.contact, self.agree_tos, self.profile, (),
            self.caa_identities, self.manual,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class NameSolver:
    """One name of a lineage, the rule that proves it and (when it can be said) where."""

    name: str
    rule: SolverRule | None  # None: the default, http-01 on the nodes that serve the name
    exact: bool  # the rule names exactly this name (the form's row for it sets it)
    where: str = ""


@dataclass(frozen=True, slots=True)
class PolicyValues:
    """The lineage's ACME form: issuers in order, a solver per name, other rules, profile, chain."""

    issuers: tuple[str, ...] = ()
    per_name: tuple[tuple[str, str, str], ...] = ()  # (name, choice, spec): choice "" is the default
    other_rules: str = ""  # PATTERN=TYPE[:SPEC], one a line: rules for patterns rather than names
    profile: str = ""
    preferred_chain: str = ""
    reuse_key: bool = False

    def rules(self) -> list[SolverRule]:
        out: list[SolverRule] = []
        for name, choice, spec in self.per_name:
            if not choice:
                continue
            kind, _, method = choice.partition(":")
            if kind == ChallengeType.HTTP01.value:
                text = f"{name}={choice}"
            elif not spec.strip():
                raise InputError(f"{name}: {choice} needs its setting", hint=_SPEC_HINTS.get(method, ""))
            else:
                text = f"{name}={choice}:{spec.strip()}"
            out.append(SolverRule.parse(text))
        out.extend(SolverRule.parse(line) for line in self.other_rules.splitlines() if line.strip())
        return out


_SPEC_HINTS = {
    "rfc2136": "the path of the TSIG credentials file on the console's machine",
    "lexicon": "the DNS provider, e.g. cloudflare, then :FILE with its credentials",
    "hook": "the command to run, e.g. /usr/local/bin/dns-hook",
}


def solver_choices(nodes: Sequence[NodeSpec]) -> list[tuple[str, str]]:
    """The solvers a name's row offers: (value, label)."""
    out = [("", "default: http-01 on the nodes that serve the name")]
    out += [(f"http-01:{n.name}", f"http-01 on node {n.name}") for n in nodes if n.options.get("webroot")]
    out += [
        ("dns-01:rfc2136", "dns-01, RFC 2136 update (TSIG file)"),
        ("dns-01:lexicon", "dns-01 through a DNS provider's API (lexicon)"),
        (HOOK, "dns-01 through a hook command (admin only)"),
    ]
    return out


def _choice_of(rule: SolverRule | None) -> tuple[str, str]:
    """The form's (choice, spec) for a rule."""
    if rule is None:
        return "", ""
    if rule.challenge is ChallengeType.HTTP01:
        return (f"http-01:{rule.spec}" if rule.spec else "http-01"), ""
    method, _, spec = rule.spec.partition(":")
    return f"dns-01:{method}", spec


@dataclass(frozen=True, slots=True)
class VersionLine:
    """A version as the lineage's ACME page lists it: who issued it, whether it is revoked."""

    number: int
    state: str
    active: bool
    fingerprint: str | None
    not_after: dt.datetime | None
    issuer: str | None
    revoked: str | None  # the reason
    revoked_at: dt.datetime | None = None

    @property
    def revocable(self) -> bool:
        return self.state == VersionState.ISSUED.value and self.revoked is None


@dataclass(frozen=True, slots=True)
class LineageAcme:
    lineage: str
    policy: LineagePolicy
    names: tuple[NameSolver, ...]
    other_rules: tuple[SolverRule, ...]
    versions: tuple[VersionLine, ...]
    nodes: tuple[NodeSpec, ...] = field(default=())

    def form_rows(self) -> list[tuple[str, str, str, str]]:
        """(name, choice, spec, where) for each name's row."""
        rows = []
        for n in self.names:
            choice, spec = _choice_of(n.rule if n.exact else None)
            rows.append((n.name, choice, spec, n.where))
        return rows


class Issuers:
    """The issuers, and the ACME side of each lineage, in the name of console accounts."""

    def __init__(self, store: Store, audit: Audit) -> None:
        self._store = store
        self._audit = audit

    # -- issuers ---------------------------------------------------------------------------------

    def issuers(self, actor: Actor) -> list[tuple[IssuerRecord, list[str]]]:
        """Every issuer, with the lineages (of those ``actor`` may see) that list it."""
        return [
            (i, [name for name in self._store.issuer_lineages(i.name) if actor.allows(name)])
            for i in self._store.issuers()
        ]

    def issuer(self, actor: Actor, name: str) -> tuple[IssuerRecord, list[str]]:
        record = self._store.issuer(name)
        return record, [n for n in self._store.issuer_lineages(name) if actor.allows(n)]

    @staticmethod
    def directory(url: str, ca_bundle: Sequence[tuple[str, bytes]] = ()) -> accounts.DirectoryInfo:
        """What the CA's directory says (its terms, whether it wants EAB), nothing stored."""
        bundle = accounts.ca_bundle_pem(ca_bundle) if ca_bundle else None
        return accounts.directory_info(url, ca_bundle=bundle)

    def add(self, actor: Actor, values: IssuerValues) -> IssuerRecord:
        """Register the account at the CA (or add the manual issuer), as ``certfleet issuer add``."""
        store = self._audit.store_for(actor)
        if values.manual:
            return accounts.add_manual_issuer(store, values.name)
        kid, hmac = values.eab_kid.strip(), values.eab_hmac.strip()
        if bool(kid) != bool(hmac):
            raise InputError("External Account Binding needs both the key id and the HMAC key")
        if len(kid) > MAX_EAB or len(hmac) > MAX_EAB or any(c in kid + hmac for c in "\r\n\x00 "):
            raise InputError("the EAB key id or HMAC key is not one line of the CA's text")
        bundle = accounts.ca_bundle_pem(values.ca_bundle) if values.ca_bundle else None
        return accounts.add_acme_issuer(
            store,
            values.name,
            values.directory,
            contact=values.contact,
            agree_tos=values.agree_tos,
            eab=(kid, hmac) if kid else None,
            profile=values.profile or None,
            ca_bundle=bundle,
            caa_identities=values.caa_identities,
        )

    def rollover(self, actor: Actor, name: str) -> IssuerRecord:
        return accounts.rollover(self._audit.store_for(actor), name)

    def deactivate(self, actor: Actor, name: str) -> IssuerRecord:
        return accounts.deactivate(self._audit.store_for(actor), name)

    def remove(self, actor: Actor, name: str) -> IssuerRecord:
        return accounts.remove(self._audit.store_for(actor), name)

    # -- a lineage's policy ----------------------------------------------------------------------

    def lineage(self, actor: Actor, lineage: str) -> LineageAcme:
        """The lineage's issuers, each name's solver and where its proof goes, and its versions."""
        if not actor.allows(lineage):
            raise InputError(f"no lineage named {lineage[:80]!r}")
        from certfleet.acme.challenges import SolverContext

        record = self._store.lineage(lineage)
        policy = self._store.policy(lineage)
        members = self._store.nodes(lineage)
        every = self._store.nodes()
        context = SolverContext(nodes={n.name: n for n in every}, members=tuple(n.name for n in members))
        names = sorted(lineage_names(record, members))
        solvers = []
        for name in names:
            rule = pick_rule(policy.solvers, name)
            exact_rule = rule is not None and rule.pattern == name
            solvers.append(NameSolver(name, rule, exact_rule, _where(rule, name, context)))
        exact = set(names)
        return LineageAcme(
            lineage,
            policy,
            tuple(solvers),
            tuple(r for r in policy.solvers if r.pattern not in exact),
            tuple(self.lineage_versions(lineage)),
            tuple(every),
        )

    def set_policy(self, actor: Actor, lineage: str, values: PolicyValues) -> LineagePolicy:
        """As ``certfleet lineage set``: issuers and solvers replace the lists. A hook command runs
        on the console's machine: only an admin adds or changes one."""
        if not actor.allows(lineage):
            raise InputError(f"no lineage named {lineage[:80]!r}")
        rules = values.rules()
        if not actor.may(Role.ADMIN):
            before = {str(r) for r in self._store.policy(lineage).solvers if _is_hook(r)}
            after = {str(r) for r in rules if _is_hook(r)}
            if after != before:
                raise Forbidden(
                    "only an administrator sets a hook command: it runs on the console's machine",
                    hint="choose rfc2136 or lexicon, or ask an administrator",
                )
        return self._audit.store_for(actor).set_policy(
            lineage,
            issuers=list(values.issuers),
            solvers=rules,
            profile=values.profile.strip(),
            preferred_chain=values.preferred_chain.strip(),
            reuse_key=values.reuse_key,
        )

    # -- revocation ------------------------------------------------------------------------------

    def revoke(self, actor: Actor, lineage: str, version: int, reason: str) -> RevokeResult:
        """As ``certfleet revoke``: the CA that issued it is told, the store marks it for good."""
        if not actor.allows(lineage):
            raise InputError(f"no lineage named {lineage[:80]!r}")
        return revoke(self._audit.store_for(actor), lineage, RevocationReason.parse(reason), version=version)

    def version(self, lineage: str, number: int) -> VersionLine:
        found = next((v for v in self.lineage_versions(lineage) if v.number == number), None)
        if found is None:
            raise InputError(f"lineage {lineage} has no version {number}")
        return found

    def lineage_versions(self, lineage: str) -> list[VersionLine]:
        origins = {i.version: i.issuer for i in self._store.issuances(lineage)}
        revoked = {r.version: r for r in self._store.revocations(lineage)}
        out = []
        for v in reversed(self._store.versions(lineage)):
            gone = revoked.get(v.number)
            line = VersionLine(
                v.number, v.state.value, v.active, v.fingerprint, v.not_after, origins.get(v.number),
                gone.reason.value if gone else None, gone.revoked_at if gone else None,
            )  # fmt: skip
            out.append(line)
        return out


def _where(rule: SolverRule | None, name: str, context: SolverContext) -> str:
    """Where the proof of ``name`` goes, or why it cannot: what the issue's own plan would say
    (the solver is only made and checked; nothing is run)."""
    from certfleet.acme.challenges import make_solver
    from certfleet.acme.issue import DEFAULT_SOLVER

    try:
        solver = make_solver(rule or DEFAULT_SOLVER, context)
        solver.validate([name])
        return solver.where(name)
    except CertfleetError as exc:
        return f"cannot: {exc}"


def _is_hook(rule: SolverRule) -> bool:
    return rule.challenge is ChallengeType.DNS01 and rule.spec.partition(":")[0] == "hook"


def describe_issuer(issuer: IssuerRecord) -> list[tuple[str, Any]]:
    """The issuer's page: each line's label and value (never a key)."""
    rows: list[tuple[str, Any]] = [("kind", issuer.kind.value)]
    if issuer.is_acme:
        rows += [
            ("directory", issuer.directory_url),
            ("account", issuer.account_url),
            ("status", issuer.status.value if issuer.status else None),
            ("contact", ", ".join(issuer.contact) or None),
            ("EAB key id", issuer.eab_kid),
            ("profile", issuer.profile),
            ("CAA identities", ", ".join(issuer.caa_identities) or "(the CA publishes none)"),
            ("terms agreed", issuer.terms_of_service),
            ("account key", f"{issuer.key_spec}, thumbprint {issuer.key_thumbprint}"),
            ("key changed", issuer.key_changed_at.strftime("%Y-%m-%d %H:%M UTC") if issuer.key_changed_at else None),
            ("CA bundle", "yes (a private CA's HTTPS root)" if issuer.ca_bundle else None),
        ]
    return [(label, value) for label, value in rows if value]
