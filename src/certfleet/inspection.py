"""What a pile of files holds: every certificate, key and CSR, and which key is whose.

``certfleet inspect`` shows an :class:`Inspection`; ``convert`` asks :func:`key_of` for the leaf's
key. Keys are compared by their public half (``keys.public_key_id``), each computed once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from certfleet.certinfo import cert_public_key, describe, fingerprint
from certfleet.csr import CsrInfo, describe_csr
from certfleet.findings import precertificate_problem
from certfleet.formats import Pool, PoolCert, PoolCSR, PoolKey
from certfleet.keys import match, public_key_id
from certfleet.problems import Problem

__all__ = ["InspectedCsr", "InspectedKey", "Inspection", "inspect", "key_of"]


@dataclass(frozen=True)
class InspectedKey:
    """A key of the pool, with the certificates (each once) and the CSRs made for it."""

    key: PoolKey
    certificates: tuple[PoolCert, ...]
    csrs: tuple[PoolCSR, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.key.to_dict(),
            "certificates": [{"sha256": fingerprint(c.cert), "source": c.source} for c in self.certificates],
            "csrs": [c.source for c in self.csrs],
        }


@dataclass(frozen=True)
class InspectedCsr:
    """A CSR of the pool, what it asks for, and the key among the files that signed it."""

    csr: PoolCSR
    info: CsrInfo
    key: PoolKey | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.info.to_dict(),
            "source": self.csr.source,
            "format": self.csr.format.value,
            "key": self.key.source if self.key is not None else None,
        }


@dataclass(frozen=True)
class Inspection:
    """Everything found in the inputs, with which key belongs to which certificate and CSR.

    ``problems``: what could not be read (a damaged block, a key without its password), CT
    precertificates, then the ``key-mismatch`` findings of :func:`certfleet.keys.match` (a key
    that belongs to none of the certificates or CSRs it came with).
    """

    pool: Pool
    now: dt.datetime
    keys: tuple[InspectedKey, ...]
    csrs: tuple[InspectedCsr, ...]
    problems: tuple[Problem, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "certificates": [
                {**item.to_dict(), "days_left": describe(item.cert).days_left(self.now)}
                for item in self.pool.certificates
            ],
            "keys": [k.to_dict() for k in self.keys],
            "csrs": [c.to_dict() for c in self.csrs],
            "ignored": list(self.pool.ignored),
            "unreadable": [u.to_dict() for u in self.pool.unreadable],
            "problems": [p.to_dict() for p in self.problems],
        }


def _id_of(item: x509.Certificate | x509.CertificateSigningRequest) -> str | None:
    key = cert_public_key(item)
    # a key algorithm cryptography cannot load belongs to none of ours
    return public_key_id(key) if key is not None else None


def inspect(pool: Pool, *, now: dt.datetime) -> Inspection:
    """Say which of ``pool``'s keys belongs to which of its certificates and CSRs; ``now`` is
    what each certificate's days left are counted from."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    certs = [(item, _id_of(item.cert)) for item in pool.unique_certificates()]
    csrs = [(item, _id_of(item.csr)) for item in pool.csrs]
    key_ids = [(pk, public_key_id(pk.key)) for pk in pool.keys]
    keys = tuple(
        InspectedKey(
            pk,
            tuple(item for item, cid in certs if cid == kid),
            tuple(item for item, cid in csrs if cid == kid),
        )
        for pk, kid in key_ids
    )
    requests = tuple(
        InspectedCsr(item, describe_csr(item.csr), next((pk for pk, kid in key_ids if kid == cid), None))
        for item, cid in csrs
    )
    precertificates = (precertificate_problem(item.cert, source=item.source) for item, _ in certs)
    problems = (*pool.problems(), *(p for p in precertificates if p is not None), *match(pool).problems)
    return Inspection(pool=pool, now=now, keys=keys, csrs=requests, problems=problems)


def key_of(keys: Sequence[PoolKey], cert: x509.Certificate) -> PoolKey | None:
    """The first of ``keys`` that ``cert`` was issued for, or None."""
    wanted = _id_of(cert)
    return next((pk for pk in keys if public_key_id(pk.key) == wanted), None) if wanted is not None else None
