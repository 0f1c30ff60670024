"""One certificate for many nodes, by hand with any CA: request, import, export (the nodes
themselves are :mod:`certfleet.fleet.nodes`).

These functions hold the logic the CLI and the console show. They take an open
:class:`~certfleet.store.Store` and plain values, and return frozen results with ``to_dict()``.
A refusal the user must read whole (names missing for a node, a chain that does not reach a
trusted root) is reported in the result; a request that cannot go on at all raises.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.aia import Fetcher
from certfleet.certinfo import describe, fingerprint, key_type
from certfleet.chain import ChainResult, build_chain, pick_leaf
from certfleet.csr import Subject, build_csr
from certfleet.errors import InputError, OperationFailed
from certfleet.export import OutputFormat, check_bundle, write_bundle
from certfleet.fleet.nodes import lineage_names, required_names
from certfleet.formats import read_pool
from certfleet.keys import generate_key, parse_key_spec, public_key_id, security_bits
from certfleet.names import DEFAULT_NAME_LIMIT, Coverage, NamePlan, coverage, normalize_name, plan
from certfleet.problems import Problem, ProblemCode, Severity
from certfleet.store import AuditAction, Store, VersionRecord, VersionState, check_name
from certfleet.trust import TrustStore

__all__ = [
    "ExportResult",
    "ImportResult",
    "NodeCoverage",
    "RequestResult",
    "VersionComparison",
    "export_lineage",
    "import_package",
    "request",
    "trust_for",
    "trust_with",
]

# -- request -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestResult:
    lineage: str
    version: VersionRecord
    plan: NamePlan
    key_spec: str
    subject: str
    nodes: tuple[str, ...]
    csr_pem: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "version": self.version.number,
            "key": self.key_spec,
            "public_key_id": self.version.public_key_id,
            "subject": self.subject,
            "nodes": list(self.nodes),
            "plan": self.plan.to_dict(),
            "csr": self.csr_pem.decode("ascii"),
        }


def request(
    store: Store,
    lineage: str,
    *,
    nodes: Sequence[str] = (),
    names: Sequence[str] = (),
    key_spec: str | None = None,
    subject: str | None = None,
    limit: int = DEFAULT_NAME_LIMIT,
    wildcards: bool = False,
) -> RequestResult:
    """Make a key inside the store and a CSR for every name the lineage needs.

    ``nodes`` join the lineage, ``names`` are added to its own names, ``key_spec`` and
    ``subject`` become its policy: the next renewal needs none of them again. The key never
    leaves the store; the CSR is what goes to the CA.
    """
    check_name("lineage", lineage)
    spec = parse_key_spec(key_spec) if key_spec is not None else None
    parsed_subject = Subject.parse(subject) if subject is not None else None
    extra = [normalize_name(n) for n in names]
    for node in nodes:
        store.node(node)  # a clear error for an unknown node before anything changes
    try:
        known: tuple[str, ...] = store.lineage(lineage).names
    except InputError:  # a new lineage
        known = ()
    merged = list(dict.fromkeys([*known, *extra])) if extra else None
    record = store.put_lineage(
        lineage,
        key_spec=spec.value if spec is not None else None,
        subject=str(parsed_subject) if parsed_subject is not None else None,
        names=merged,
        add_nodes=nodes,
    )
    # the first name becomes the CSR's common name: the nodes named first come first, and a
    # renewal keeps the order of the previous request
    first = {name: i for i, name in enumerate(nodes)}
    members = sorted(store.nodes(lineage), key=lambda n: first.get(n.name, len(first)))
    required = list(lineage_names(record, members))
    earlier = store.versions(lineage)
    if not nodes and earlier:
        before = {name: i for i, name in enumerate(earlier[-1].names)}
        required.sort(key=lambda n: before.get(n, len(before)))
    if not required:
        raise InputError(
            f"lineage {lineage} has no names to request",
            hint="give the nodes with --node, or the names with --name",
        )
    the_subject = Subject.parse(record.subject) if record.subject else None
    names_plan = _with_common_name(plan(required, limit=limit, wildcards=wildcards), the_subject)
    if not names_plan.fits:
        raise InputError(
            f"{names_plan.count} names are over the CA's limit of {limit}",
            hint=names_plan.notes[-1] if names_plan.notes else "split the nodes over two lineages",
        )
    key = generate_key(record.key_spec)
    csr = build_csr(key, names_plan.entries, the_subject)
    version = store.add_pending(lineage, key, csr, names_plan.entries)
    return RequestResult(
        lineage=lineage,
        version=version,
        plan=names_plan,
        key_spec=record.key_spec,
        subject=csr.subject.rfc4514_string(),
        nodes=record.nodes,
        csr_pem=csr.public_bytes(serialization.Encoding.PEM),
    )


def _with_common_name(names_plan: NamePlan, subject: Subject | None) -> NamePlan:
    """The plan with the subject's common name among its entries: public CAs require the CN to be
    a SAN, so the CSR lists it, and it counts against the CA's limit like any other name."""
    if subject is None or subject.common_name is None:
        return names_plan
    cn = normalize_name(subject.common_name)
    if cn in names_plan.entries:
        return names_plan
    note = f"the common name {cn} is listed as a name too (CAs require it among the names)"
    return dataclasses.replace(
        names_plan,
        entries=(cn, *names_plan.entries),
        covered_by=MappingProxyType({**names_plan.covered_by, cn: cn}),
        notes=(*names_plan.notes, note),
    )


# -- import ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeCoverage:
    node: str  # "" for the lineage's own names
    coverage: Coverage

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node or None, **self.coverage.to_dict()}


@dataclass(frozen=True, slots=True)
class VersionComparison:
    """A certificate that would become the active version, against the active one: what it would
    lose. Any loss refuses the import unless it is forced."""

    active: int  # the active version's number
    active_not_after: dt.datetime
    not_after: dt.datetime
    active_key: str
    key: str
    lost_names: tuple[str, ...]  # names the active version covers and this one does not

    @property
    def expires_sooner(self) -> bool:
        return self.not_after < self.active_not_after

    @property
    def weaker_key(self) -> bool:
        mine, theirs = security_bits(self.key), security_bits(self.active_key)
        return mine is not None and theirs is not None and mine < theirs

    @property
    def worse(self) -> bool:
        return self.expires_sooner or self.weaker_key or bool(self.lost_names)

    def problems(self, lineage: str, now: dt.datetime, what: str) -> list[Problem]:
        """One ``downgrade`` problem for each loss, each showing both sides."""
        out: list[str] = []
        if self.expires_sooner:
            out.append(
                f"{what} expires on {self.not_after:%Y-%m-%d} ({_days_left(self.not_after, now)}), sooner than "
                f"the active version {self.active} ({self.active_not_after:%Y-%m-%d}, "
                f"{_days_left(self.active_not_after, now)})"
            )
        if self.lost_names:
            out.append(
                f"{what} does not cover {', '.join(self.lost_names)}, which the active version {self.active} covers"
            )
        if self.weaker_key:
            out.append(
                f"{what} has a weaker key: {self.key} ({security_bits(self.key)}-bit security) where the active "
                f"version {self.active} has {self.active_key} ({security_bits(self.active_key)}-bit)"
            )
        hint = f"if this is what you want, import it again with --force; else keep version {self.active}"
        return [Problem(ProblemCode.DOWNGRADE, Severity.ERROR, message, hint, lineage) for message in out]

    def to_dict(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "not_after": self.not_after.isoformat(),
            "active_not_after": self.active_not_after.isoformat(),
            "expires_sooner": self.expires_sooner,
            "key": self.key,
            "active_key": self.active_key,
            "weaker_key": self.weaker_key,
            "lost_names": list(self.lost_names),
        }


def _days_left(when: dt.datetime, now: dt.datetime) -> str:
    days = (when - now).days
    if when <= now:
        return "expired"
    return "1 day left" if days == 1 else f"{days} days left"


def compare_with_active(leaf: x509.Certificate, active: VersionRecord) -> VersionComparison | None:
    """What ``leaf`` would lose against the ``active`` version; None when there is nothing to compare."""
    if active.leaf is None or active.not_after is None:
        return None
    info, before = describe(leaf), describe(active.leaf)
    theirs = [*before.dns_names, *before.ip_addresses]
    try:
        lost = tuple(m.name for m in coverage(leaf, theirs).missing)
    except InputError:  # a name the active certificate carries that is not one we check
        mine = {*info.dns_names, *info.ip_addresses}
        lost = tuple(n for n in theirs if n not in mine)
    return VersionComparison(
        active=active.number,
        active_not_after=active.not_after,
        not_after=info.not_after,
        active_key=before.key_type,
        key=key_type(leaf.public_key()),
        lost_names=lost,
    )


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What ``import`` found. ``accepted``: the certificate is fine and stored as ``version``
    (unless it was a preview); otherwise ``problems`` holds every reason for the refusal.

    A new version becomes the active one. A certificate imported before (``already``) changes
    nothing, unless ``activate`` was asked for. A certificate that would become active and is
    worse than the active version (``comparison``) is refused unless forced."""

    lineage: str
    accepted: bool
    leaf_source: str
    key_source: str  # "pending request (version 2)" or the file the key came in
    chain: ChainResult
    coverage: tuple[NodeCoverage, ...]
    problems: tuple[Problem, ...]  # the errors that refuse the import
    version: VersionRecord | None = None
    already: bool = False  # the certificate was imported before; nothing new was stored
    activated: bool = False  # it is (or, in a preview, would be) the active version because of this import
    active: int | None = None  # the lineage's active version afterwards (or, in a preview, then)
    comparison: VersionComparison | None = None  # against the version it would replace as the active one
    forced: bool = False  # the comparison showed losses and the import was forced

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "accepted": self.accepted,
            "already_imported": self.already,
            "version": self.version.number if self.version is not None else None,
            "activated": self.activated,
            "active": self.active,
            "withdrawn": self.version is not None and self.version.withdrawn_at is not None,
            "comparison": self.comparison.to_dict() if self.comparison is not None else None,
            "forced": self.forced,
            "leaf_source": self.leaf_source,
            "key_source": self.key_source,
            "chain": self.chain.to_dict(),
            "coverage": [c.to_dict() for c in self.coverage],
            "problems": [p.to_dict() for p in self.problems],
        }


def trust_for(store: Store) -> TrustStore:
    """What imports trust: Mozilla's roots and the store's trust anchors."""
    return trust_with([a.cert for a in store.trust_anchors()])


def trust_with(anchors: Sequence[x509.Certificate]) -> TrustStore:
    """Mozilla's roots and ``anchors`` (the store's, and any others the caller trusts)."""
    return TrustStore.mozilla_plus(anchors)


def _short(pkid: str) -> str:
    return f"sha256:{pkid[:16]}"


def _no_match(
    store: Store, lineage: str, leaves: Sequence[x509.Certificate], pending: Sequence[VersionRecord]
) -> InputError:
    """Say whose key the certificate is for, as precisely as the store knows."""
    leaf = max(leaves, key=lambda c: c.not_valid_before_utc)
    pkid = public_key_id(leaf.public_key())
    elsewhere = [v for v in store.find_key(pkid) if v.lineage != lineage]
    if elsewhere:
        v = elsewhere[-1]
        what = "pending request" if v.state is VersionState.PENDING else "version"
        return InputError(
            f"the certificate was issued for another key: it belongs to the {what} of lineage {v.lineage} "
            f"(version {v.number}), not to lineage {lineage}",
            hint=f"import it into {v.lineage}: `certfleet import {v.lineage} FILES...`",
        )
    waiting = ", ".join(f"version {v.number} ({v.key_spec}, {_short(v.public_key_id)})" for v in pending)
    return InputError(
        f"the certificate was issued for another key: it matches no pending request of lineage {lineage}",
        hint=(
            f"its key is {describe(leaf).key_type} {_short(pkid)}; "
            + (
                f"waiting for the CA: {waiting}; "
                if waiting
                else f"nothing is waiting: `certfleet request {lineage}`; "
            )
            + "import the certificate issued for that CSR, or a PFX that holds the certificate's key"
        ),
    )


def import_package(
    store: Store,
    lineage: str,
    inputs: Sequence[tuple[str, bytes]],
    *,
    now: dt.datetime,
    passwords: Sequence[bytes] = (),
    fetcher: Fetcher | None = None,
    trust: TrustStore | None = None,
    save: bool = True,
    activate: bool = False,
    force: bool = False,
) -> ImportResult:
    """Read whatever the CA sent, match it to the lineage's key, fix the chain, check the names.

    The certificate is the one whose key is a pending request of the lineage (or a key in the
    package, as in a PFX; or an earlier version's key, when the CA issued again). The chain is
    rebuilt in order from the package, the store's anchors and, with ``fetcher``, the CA's AIA
    URLs. It must reach a trusted root and cover every name of every node of the lineage.
    ``save=False`` checks without storing (a preview).

    Versions move only when asked: a new version becomes the active one, but a certificate that
    is a version already (the active one, an older one, one a rollback withdrew) changes
    nothing unless ``activate``. One that would become active while it expires sooner than the
    active version, covers fewer names, or has a weaker key is refused unless ``force``.
    """
    record = store.lineage(lineage)
    pool = read_pool(inputs, passwords=passwords)
    versions = store.versions(lineage)
    pending = {v.public_key_id: v for v in versions if v.state is VersionState.PENDING}
    earlier = {v.public_key_id: v for v in versions}
    package_keys = {public_key_id(k.key.public_key()): k for k in pool.keys}
    leaves = [pc for pc in pool.unique_certificates() if not describe(pc.cert).is_ca]
    if not leaves:
        raise InputError(
            "no server certificate among the inputs",
            hint="give the certificate the CA issued, with its intermediates if you have them",
        )

    def rank(pkid: str) -> int | None:
        if pkid in pending:
            return 0
        if pkid in package_keys:
            return 1
        return 2 if pkid in earlier else None

    ranked = [(r, pc) for pc in leaves if (r := rank(public_key_id(pc.cert.public_key()))) is not None]
    if not ranked:
        raise _no_match(store, lineage, [pc.cert for pc in leaves], list(pending.values()))
    best = min(r for r, _ in ranked)
    # the newest certificate of the lineage's keys of the best kind
    chosen, _ = pick_leaf(leaves, [pc.cert.public_key() for r, pc in ranked if r == best])
    leaf = chosen.cert
    pkid = public_key_id(leaf.public_key())
    package_key = package_keys.get(pkid) if best == 1 else None
    if best == 0:
        key_source = f"pending request (version {pending[pkid].number})"
    elif package_key is not None:
        key_source = package_key.source
    else:
        key_source = f"the key of version {earlier[pkid].number}"

    chain = build_chain(
        pool,
        trust or trust_for(store),
        now=now,
        fetcher=fetcher,
        key=package_key.key if package_key is not None else leaf.public_key(),
        key_source=key_source,
    )
    if fingerprint(chain.leaf) != fingerprint(leaf):
        raise OperationFailed("the chain was built for another certificate than the one matched to the key")
    problems = [_import_hint(p) for p in chain.problems if p.severity is Severity.ERROR]
    covered: list[NodeCoverage] = []
    for node, needed in required_names(record, store.nodes(lineage)).items():
        cov = coverage(leaf, needed)
        covered.append(NodeCoverage(node, cov))
        if cov.missing:
            who = f"node {node}" if node else f"lineage {lineage}"
            listing = ", ".join(m.name for m in cov.missing)
            problems.append(
                Problem(
                    ProblemCode.NAME_MISMATCH,
                    Severity.ERROR,
                    f"names missing for {who}: {listing}",
                    f"request a certificate that covers them: `certfleet request {lineage}` makes the CSR",
                    node or lineage,
                )
            )
    fp = fingerprint(leaf)
    existing = next((v for v in versions if v.fingerprint == fp), None)
    current = record.active
    becomes_active = (activate or existing is None) and not (current is not None and current.fingerprint == fp)
    comparison = compare_with_active(leaf, current) if becomes_active and current is not None else None
    if comparison is not None and comparison.worse and not force:
        what = f"version {existing.number}" if existing is not None else "this certificate"
        problems.extend(comparison.problems(lineage, now, what))
    accepted = not problems
    version: VersionRecord | None = existing
    if accepted and save:
        version = store.issue(
            lineage,
            leaf,
            chain.chain[1:],
            key=package_key.key if package_key is not None else None,
            activate=becomes_active,
        )
    if accepted and becomes_active:
        active = version.number if version is not None else None
    else:
        active = current.number if current is not None else None
    return ImportResult(
        lineage=lineage,
        accepted=accepted,
        leaf_source=chosen.source,
        key_source=key_source,
        chain=chain,
        coverage=tuple(covered),
        problems=tuple(problems),
        version=version,
        already=existing is not None,
        activated=accepted and becomes_active,
        active=active,
        comparison=comparison,
        forced=accepted and comparison is not None and comparison.worse,
    )


def _import_hint(problem: Problem) -> Problem:
    if problem.code is not ProblemCode.UNTRUSTED:
        return problem
    return dataclasses.replace(
        problem,
        hint="if this is your own CA, trust its root: `certfleet trust add ROOT.pem`; "
        "else add the CA's intermediate bundle to the import",
    )


# -- export ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportResult:
    lineage: str
    version: int
    format: OutputFormat
    files: tuple[str, ...]
    key_encrypted: bool
    legacy: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "version": self.version,
            "format": self.format.value,
            "files": list(self.files),
            "key_encrypted": self.key_encrypted,
            "legacy": self.legacy,
        }


def export_lineage(
    store: Store,
    lineage: str,
    fmt: OutputFormat | str,
    out: Path,
    *,
    password: bytes | None,
    no_key_password: bool = False,
    legacy: bool = False,
    version: int | None = None,
) -> ExportResult:
    """Write the key and chain of a version (the active one by default) for a server certfleet
    does not reach, with :func:`certfleet.export.write_bundle`. The key is encrypted with
    ``password``; in the clear only when the caller says so with ``no_key_password``. Every key
    file is 0600."""
    kind = OutputFormat(fmt)
    if password is not None and no_key_password:
        raise InputError("give either a password or --no-key-password, not both")
    if kind.holds_key and password is None and not no_key_password:
        raise InputError(
            "refusing to write the private key unencrypted",
            hint="give --password to protect it, or --no-key-password if the file must hold it in the clear",
        )
    check_bundle(kind, password=password, legacy=legacy)
    material = store.material(lineage, version)
    number = version if version is not None else _active_number(store, lineage)
    written = write_bundle(
        kind,
        out,
        material.key,
        material.leaf,
        material.chain,
        password=password,
        legacy=legacy,
        friendly_name=lineage if kind is OutputFormat.PKCS12 else None,
    )
    files = [w.path for w in written]
    store.audit(
        AuditAction.EXPORT,
        {
            "lineage": lineage,
            "version": number,
            "format": kind.value,
            "files": files,
            "key_encrypted": password is not None,
        },
    )
    return ExportResult(lineage, number, kind, tuple(files), key_encrypted=password is not None, legacy=legacy)


def _active_number(store: Store, lineage: str) -> int:
    active = store.lineage(lineage).active
    if active is None:  # material() has refused already; kept for the type checker
        raise InputError(f"lineage {lineage} has no certificate yet")
    return active.number
