"""Chain building: from a pool of certificates (in any order, with strays) to the chain a server sends."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from certfleet.aia import Fetcher, ca_issuers_urls, fetch_from_aia
from certfleet.certinfo import describe, fingerprint, is_ca, key_type, readable
from certfleet.errors import FormatError, InputError, NetworkError
from certfleet.findings import issuer_name_problem, label
from certfleet.formats import Pool, PoolCert, PoolKey
from certfleet.keys import key_matches, public_half
from certfleet.lint import lint
from certfleet.paths import CertPath, PathEnd, find_paths
from certfleet.problems import Problem, ProblemCode, Severity
from certfleet.signatures import signed_by
from certfleet.trust import TrustStore
from certfleet.verify import verify_chain

__all__ = ["ChainResult", "DropReason", "Dropped", "LeafKey", "build_chain", "no_certificate", "pick_leaf"]

_MAX_FETCH_ROUNDS = 4  # leaf → intermediate → cross-sign → ...; real chains need one or two
_MAX_LISTED = 8


class DropReason(StrEnum):
    DUPLICATE = "duplicate"
    ROOT = "the root: clients have it already"
    UNTRUSTED_ROOT = "a root that is not trusted: sending it does not make clients trust it"
    OTHER_PATH = "another path (a cross-sign) that this chain does not need"
    UNRELATED = "unrelated to this leaf"


@dataclass(frozen=True)
class Dropped:
    """A certificate of the input left out of the chain, and why."""

    cert: x509.Certificate
    reason: DropReason
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**describe(self.cert).to_dict(), "reason": self.reason.value, "source": self.source}


@dataclass(frozen=True)
class LeafKey:
    """The private key that came with the certificates, and whether it is the leaf's."""

    type: str
    matches_leaf: bool
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "matches_leaf": self.matches_leaf, "source": self.source}


@dataclass(frozen=True)
class ChainResult:
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # what the server sends: leaf first, each issued by the next, no root
    root: x509.Certificate | None  # the trust anchor the chain reaches
    fetched: tuple[x509.Certificate, ...]  # intermediates fetched by AIA that are now in the chain
    dropped: tuple[Dropped, ...]
    problems: tuple[Problem, ...]
    key: LeafKey | None = None

    @property
    def complete(self) -> bool:
        """True when the chain reaches a trust anchor."""
        return self.root is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "leaf": describe(self.leaf).to_dict(),
            "chain": [describe(c).to_dict() for c in self.chain],
            "root": describe(self.root).to_dict() if self.root is not None else None,
            "complete": self.complete,
            "fetched": [describe(c).to_dict() for c in self.fetched],
            "dropped": [d.to_dict() for d in self.dropped],
            "problems": [p.to_dict() for p in self.problems],
        }
        if self.key is not None:
            out["key"] = self.key.to_dict()
        return out


def _listing(items: Sequence[PoolCert]) -> str:
    shown = [f"{label(i.cert.subject)} ({i.source})" for i in items[:_MAX_LISTED]]
    more = len(items) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _newest(items: Sequence[PoolCert]) -> PoolCert:
    # several certificates for one key: a renewal kept its key; serve the latest non-CA one
    return max(items, key=lambda i: (not is_ca(i.cert), i.cert.not_valid_before_utc))


def pick_leaf(
    items: Sequence[PoolCert],
    keys: Sequence[PrivateKeyTypes | PublicKeyTypes] = (),
    pool_keys: Sequence[PoolKey] = (),
) -> tuple[PoolCert, bool]:
    """The leaf among ``items``, and whether it is the certificate of one of ``keys``.

    The newest certificate of one of ``keys`` (with none given, of the only key in ``pool_keys``),
    an end-entity one before a CA (a renewal may keep its key); else the only end-entity
    certificate (with none, the CA certificate that issued none of the others); else, of several,
    the only one whose key is among ``pool_keys``. Raises InputError when there is no
    certificate, or several could be the leaf.
    """
    if not items:
        raise InputError("no certificate among the inputs", hint="give the certificate the CA sent")
    if not keys and len(pool_keys) == 1:
        keys = [pool_keys[0].key]
    if keys:
        matching = [i for i in items if any(key_matches(k, i.cert) for k in keys)]
        if matching:
            return _newest(matching), True
    candidates = [i for i in items if not is_ca(i.cert)]
    if len(candidates) > 1:
        # an issuer that does not say it is a CA (no basicConstraints, cA=false) is still no leaf
        issuing = [i for i in candidates if any(o is not i and signed_by(o.cert, i.cert) for o in items)]
        if len(issuing) < len(candidates):
            candidates = [i for i in candidates if i not in issuing]
    if not candidates:
        # only CA certificates: the leaf is the one that issued none of the others
        issuers = {i.cert.issuer.public_bytes() for i in items if i.cert.issuer != i.cert.subject}
        candidates = [i for i in items if i.cert.subject.public_bytes() not in issuers]
    if len(candidates) > 1 and not keys and pool_keys:
        keyed = [i for i in candidates if any(key_matches(k.key, i.cert) for k in pool_keys)]
        if len(keyed) == 1:
            return keyed[0], True
    if len(candidates) == 1:
        return candidates[0], False
    if not candidates:
        candidates = list(items)
    raise InputError(
        f"{len(candidates)} certificates could each be the leaf: {_listing(candidates)}",
        hint="give the private key too (it picks the leaf), or only the files of one certificate",
    )


def _dropped(
    pool: Pool, chain: Sequence[x509.Certificate], path: CertPath, paths: Sequence[CertPath], trust: TrustStore
) -> list[Dropped]:
    in_chain = {fingerprint(c) for c in chain}
    on_paths = {fingerprint(c) for p in paths for c in p.certs}
    last = fingerprint(path.certs[-1])
    seen: set[str] = set()
    out: list[Dropped] = []
    for item in pool.certificates:
        fp = fingerprint(item.cert)
        if fp in seen:
            out.append(Dropped(item.cert, DropReason.DUPLICATE, item.source))
            continue
        seen.add(fp)
        if fp in in_chain:
            continue
        if (fp == last and path.end is PathEnd.TRUSTED) or (trust.contains(item.cert) and fp in on_paths):
            reason = DropReason.ROOT
        elif fp == last and path.end is PathEnd.UNTRUSTED_ROOT:
            reason = DropReason.UNTRUSTED_ROOT
        elif fp in on_paths:
            reason = DropReason.OTHER_PATH
        else:
            reason = DropReason.UNRELATED
        out.append(Dropped(item.cert, reason, item.source))
    return out


_DROP_CODES = {
    DropReason.DUPLICATE: ProblemCode.DUPLICATE_CERTIFICATE,
    DropReason.ROOT: ProblemCode.ROOT_INCLUDED,
    DropReason.UNTRUSTED_ROOT: ProblemCode.ROOT_INCLUDED,
}


def _drop_problem(drop: Dropped) -> Problem:
    code = _DROP_CODES.get(drop.reason, ProblemCode.UNRELATED_CERTIFICATE)
    where = f" ({drop.source})" if drop.source else ""
    return Problem(
        code,
        Severity.INFO,
        f"left out {label(drop.cert.subject)}{where}: {drop.reason.value}",
        "",
        fingerprint(drop.cert),
    )


def _incomplete_hint(
    problem: Problem, last: x509.Certificate, fetching: bool, errors: Sequence[NetworkError]
) -> Problem:
    if problem.code is not ProblemCode.INCOMPLETE_CHAIN:
        return problem
    if errors:
        hint = f"fetching it failed ({errors[0]}); add the CA's intermediate bundle to the input"
    elif not ca_issuers_urls(last):
        hint = "the certificate does not say where its issuer is published: add the CA's intermediate bundle"
    elif not fetching:
        hint = "add the CA's intermediate bundle, or let certfleet fetch it (leave out --no-fetch)"
    else:
        hint = "the CA's published issuer did not complete the chain: add the CA's intermediate bundle"
    return dataclasses.replace(problem, hint=hint)


def no_certificate(pool: Pool) -> InputError:
    """The refusal of a pool without a certificate, naming the input and what it holds instead."""
    held = [("a private key", k.source) for k in pool.keys] + [("a CSR", c.source) for c in pool.csrs]
    sources = list(dict.fromkeys(source for _, source in held))
    hint = "give the certificate the CA sent"
    if len(sources) != 1:
        return InputError("no certificate among the inputs", hint=hint)
    what = " and ".join(dict.fromkeys(kind for kind, _ in held))
    return InputError(f"holds no certificate, only {what}", hint=hint, source=sources[0])


def build_chain(
    pool: Pool,
    trust: TrustStore,
    *,
    now: dt.datetime,
    fetcher: Fetcher | None = None,
    key: PrivateKeyTypes | PublicKeyTypes | None = None,
    key_source: str | None = None,
) -> ChainResult:
    """Build the chain to serve for the leaf among ``pool``'s certificates.

    The leaf is the certificate of ``key`` (or of the pool's only key), else the only end-entity
    certificate. With ``fetcher``, a missing issuer is fetched from the AIA caIssuers URL.
    Raises InputError when the pool has no certificate, or several could be the leaf.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    items = pool.unique_certificates()
    for item in items:
        try:
            readable(item.cert)
        except FormatError as exc:
            exc.with_source(item.source)
            raise
    if not items:
        raise no_certificate(pool)
    if key is None and len(pool.keys) == 1:
        key, key_source = pool.keys[0].key, pool.keys[0].source
    chosen, key_fits = pick_leaf(items, [key] if key is not None else [], pool.keys)
    if key is None:  # several keys: the one that belongs to the leaf, if any
        owner = next((k for k in pool.keys if key_matches(k.key, chosen.cert)), None)
        if owner is not None:
            key, key_source, key_fits = owner.key, owner.source, True
    leaf = chosen.cert
    problems: list[Problem] = list(pool.problems())  # what could not be read beside what was
    key_match: LeafKey | None = None
    if key is not None:
        key_match = LeafKey(type=key_type(public_half(key)), matches_leaf=key_fits, source=key_source)
        if not key_fits:
            problems.append(
                Problem(
                    ProblemCode.KEY_MISMATCH,
                    Severity.ERROR,
                    f"the key in {key_source or 'the key given'} does not belong to the certificate in "
                    f"{chosen.source} ({label(leaf.subject)})",
                    "find the key made with this certificate's CSR, or have the certificate reissued for this key",
                    fingerprint(leaf),
                )
            )

    candidates = [i.cert for i in items if i is not chosen]
    paths = find_paths(leaf, candidates, trust, at=now) or [CertPath((leaf,), PathEnd.MISSING_ISSUER)]
    fetched: dict[str, tuple[str, x509.Certificate]] = {}
    errors: list[NetworkError] = []
    known = {fingerprint(c) for c in candidates} | {fingerprint(leaf)}
    rounds = 0
    while fetcher is not None and paths[0].end is PathEnd.MISSING_ISSUER and rounds < _MAX_FETCH_ROUNDS:
        rounds += 1
        found, failed = fetch_from_aia(paths[0].certs[-1], fetcher)
        errors.extend(failed)
        new = [(url, c) for url, c in found if fingerprint(c) not in known]
        if not new:
            break
        for url, cert in new:
            known.add(fingerprint(cert))
            fetched[fingerprint(cert)] = (url, cert)
            candidates.append(cert)
        paths = find_paths(leaf, candidates, trust, at=now) or paths

    path = paths[0]
    root: x509.Certificate | None = None
    if path.trusted:
        root = path.certs[-1]
        chain = path.certs[:-1] or path.certs  # a leaf that is itself an anchor is served alone
    elif path.end is PathEnd.UNTRUSTED_ROOT and len(path.certs) > 1:
        chain = path.certs[:-1]
    else:
        chain = path.certs
    used_fetched = [fetched[fingerprint(c)] for c in chain if fingerprint(c) in fetched]
    for url, cert in used_fetched:
        problems.append(
            Problem(
                ProblemCode.FETCHED_INTERMEDIATE,
                Severity.INFO,
                f"fetched {label(cert.subject)} from {url[:200]}: it was missing from the input",
                "serve the chain certfleet built: phones do not fetch missing intermediates",
                fingerprint(cert),
            )
        )

    # an issuer matched only as RFC 5280 compares names: said (with its file), whatever the verdict below
    sources = {fingerprint(i.cert): i.source for i in items}
    loose: dict[str | None, Problem] = {}
    for child, parent in itertools.pairwise(path.certs):
        note = issuer_name_problem(child, parent, severity=Severity.WARNING, source=sources.get(fingerprint(parent)))
        if note is not None:
            loose[note.subject] = note

    dropped = _dropped(pool, chain, path, paths, trust)
    problems.extend(_drop_problem(d) for d in dropped)
    verification = verify_chain(leaf, chain[1:], trust, at=now)
    for problem in verification.problems:
        if problem.code is ProblemCode.ISSUER_NAME_DIFFERS and problem.subject in loose:
            problem = dataclasses.replace(loose.pop(problem.subject), severity=problem.severity)
        problems.append(_incomplete_hint(problem, path.certs[-1], fetcher is not None, errors))
    problems.extend(loose.values())  # those the verdict did not need to mention
    seen = {(p.code, p.subject) for p in problems}
    for problem in lint(chain, now=now, trust=trust):
        if (problem.code, problem.subject) not in seen:
            seen.add((problem.code, problem.subject))
            problems.append(problem)
    return ChainResult(
        leaf=leaf,
        chain=tuple(chain),
        root=root,
        fetched=tuple(c for _, c in used_fetched),
        dropped=tuple(dropped),
        problems=tuple(problems),
        key=key_match,
    )
