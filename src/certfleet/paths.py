"""Every path from a leaf up to a trust anchor through a pool of certificates: the search that
chain building and diagnosis share, bounded so hostile input cannot blow it up. Pure:
certificates in, paths out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

# the same enums as serialization's, from the module that defines them: the public package also
# loads SSH keys and ciphers, which every start of a command that only compares certificates would
# pay for; should cryptography move them, the public package still has them
try:
    from cryptography.hazmat.primitives._serialization import Encoding
except ImportError:  # pragma: no cover - another cryptography
    from cryptography.hazmat.primitives.serialization import Encoding

from certfleet import extensions
from certfleet.certinfo import NameKey, name_key, readable
from certfleet.signatures import is_self_signed, signed_by, spki
from certfleet.trust import TrustStore

__all__ = ["MAX_PATH_LENGTH", "CertPath", "PathEnd", "extension", "find_paths"]

_E = TypeVar("_E", bound=x509.ExtensionType)

MAX_PATH_LENGTH = 8  # certificates in a path, leaf and anchor included; real chains have 3 or 4
_SEARCH_BUDGET = 512  # issuer look-ups per search, so hostile input cannot blow up
_MAX_PATHS = 32
_MAX_SIGNATURE_CHECKS = 1024  # per search; an honest pool needs a handful


class PathEnd(StrEnum):
    TRUSTED = "trusted"  # the last certificate is a trust anchor
    UNTRUSTED_ROOT = "untrusted-root"  # the last certificate is self-signed and not an anchor
    MISSING_ISSUER = "missing-issuer"  # no certificate at hand issued the last one
    TOO_LONG = "too-long"  # the search stopped at MAX_PATH_LENGTH


@dataclass(frozen=True)
class CertPath:
    certs: tuple[x509.Certificate, ...]  # leaf first; the anchor is included when the end is TRUSTED
    end: PathEnd

    @property
    def trusted(self) -> bool:
        return self.end is PathEnd.TRUSTED


def _key_id(cert: x509.Certificate) -> tuple[bytes, bytes] | None:
    try:
        return cert.subject.public_bytes(), spki(cert)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    """The extension ``kind`` of ``cert``, or None when it is absent or does not parse.

    Hostile certificates break extension parsing in many ways (duplicates, malformed name
    constraints); for certfleet's explanations a broken extension is an absent one, and the
    others are read all the same (see :mod:`certfleet.extensions`).
    """
    return extensions.get(cert, kind)


def _aki(cert: x509.Certificate) -> bytes | None:
    aki = extension(cert, x509.AuthorityKeyIdentifier)
    return aki.key_identifier if aki is not None else None


def _ski(cert: x509.Certificate) -> bytes | None:
    ski = extension(cert, x509.SubjectKeyIdentifier)
    return ski.digest if ski is not None else None


def _valid_at(cert: x509.Certificate, at: dt.datetime | None) -> bool:
    return at is None or cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


def find_paths(
    leaf: x509.Certificate,
    pool: Sequence[x509.Certificate],
    trust: TrustStore,
    *,
    at: dt.datetime | None = None,
    max_depth: int = MAX_PATH_LENGTH,
    first_trusted: bool = False,
) -> list[CertPath]:
    """Every path up from ``leaf`` through ``pool`` towards ``trust``, best first (bounded search).

    Issuers are proven by signature, not by name; AKI/SKI only orders the candidates. Best is a
    path that ends at an anchor, then one whose certificates are all valid at ``at``, then the
    shorter; among paths that end nowhere, the one that got furthest. ``first_trusted`` stops at
    the first path that reaches an anchor (anchors and matching key identifiers are tried first).
    """
    readable(leaf)
    by_subject: dict[bytes, list[x509.Certificate]] = {}
    seen_der: set[bytes] = set()
    for cert in pool:
        readable(cert)
        der = cert.public_bytes(Encoding.DER)
        if der not in seen_der:
            seen_der.add(der)
            by_subject.setdefault(cert.subject.public_bytes(), []).append(cert)
    # the same, by names as RFC 5280 compares them: for an issuer named with other case, spaces or
    # string type than its subject (made when first needed)
    loose: dict[NameKey, list[x509.Certificate]] = {}

    budget = _SEARCH_BUDGET
    signed: dict[tuple[int, int], bool] = {}
    paths: list[CertPath] = []

    def candidates(cert: x509.Certificate) -> list[tuple[x509.Certificate, bool]]:
        """Certificates named as ``cert``'s issuer, best first; signatures are checked as they are used."""
        nonlocal budget
        budget -= 1
        aki = _aki(cert)
        issuer_name = cert.issuer.public_bytes()
        found = [(a, True) for a in trust.named(cert.issuer)]
        found += [(c, trust.contains(c)) for c in by_subject.get(issuer_name, ())]
        if not found:
            found = [(a, True) for a in trust.named_loosely(cert.issuer)]
            found += [(c, trust.contains(c)) for c in _loosely(cert.issuer)]
        # anchors first, then a matching key identifier, then those valid now
        found.sort(key=lambda item: (not item[1], aki is not None and _ski(item[0]) != aki, not _valid_at(item[0], at)))
        return found

    def _loosely(name: x509.Name) -> list[x509.Certificate]:
        if not loose:
            for certs in by_subject.values():
                for cert in certs:
                    loose.setdefault(name_key(cert.subject), []).append(cert)
        return loose.get(name_key(name), [])

    def issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        key = (id(cert), id(issuer))
        if key not in signed:
            if len(signed) >= _MAX_SIGNATURE_CHECKS:
                return False  # a maze of look-alike certificates: stop proving, report what was found
            signed[key] = signed_by(cert, issuer)
        return signed[key]

    def stop() -> bool:
        return len(paths) >= _MAX_PATHS or (first_trusted and bool(paths) and paths[-1].trusted)

    def walk(path: list[x509.Certificate], keys: set[tuple[bytes, bytes] | None]) -> None:
        cert = path[-1]
        if trust.contains(cert):
            paths.append(CertPath(tuple(path), PathEnd.TRUSTED))
            return
        if is_self_signed(cert):
            paths.append(CertPath(tuple(path), PathEnd.UNTRUSTED_ROOT))
            return
        if len(path) >= max_depth or budget <= 0:
            paths.append(CertPath(tuple(path), PathEnd.TOO_LONG))
            return
        went_on = False
        for issuer, is_anchor in candidates(cert):
            if _key_id(issuer) in keys or not issued(cert, issuer):
                continue
            went_on = True
            if is_anchor:
                paths.append(CertPath((*path, issuer), PathEnd.TRUSTED))
            else:
                walk([*path, issuer], keys | {_key_id(issuer)})
            if stop():
                return
        if not went_on:
            paths.append(CertPath(tuple(path), PathEnd.MISSING_ISSUER))

    walk([leaf], {_key_id(leaf)})
    rank = {PathEnd.TRUSTED: 0, PathEnd.UNTRUSTED_ROOT: 1, PathEnd.MISSING_ISSUER: 2, PathEnd.TOO_LONG: 3}

    def order(p: CertPath) -> tuple[int, bool, int]:
        length = len(p.certs) if p.trusted else -len(p.certs)
        return rank[p.end], not all(_valid_at(c, at) for c in p.certs), length

    return sorted(paths, key=order)
