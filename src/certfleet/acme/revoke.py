"""Revoking a version: the CA that issued it is told (RFC 8555 §7.6, signed with the issuer's
account key), then the store marks the version revoked for good: it is never activated or
deployed again, and a lineage whose active version it was has none until the next issue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization

from certfleet.acme.accounts import connect
from certfleet.acme.errors import AcmeProblem
from certfleet.acme.model import IssuerKind, RevocationReason, RevocationRecord
from certfleet.errors import InputError
from certfleet.store import Store, VersionState

__all__ = ["RevokeResult", "revoke"]


@dataclass(frozen=True, slots=True)
class RevokeResult:
    record: RevocationRecord
    told_ca: bool  # False: certfleet did not issue it by ACME; tell the CA yourself
    was_active: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**self.record.to_dict(), "told_ca": self.told_ca, "was_active": self.was_active, "note": self.note}


def revoke(store: Store, lineage: str, reason: RevocationReason, *, version: int | None = None) -> RevokeResult:
    """Revoke ``version`` of ``lineage`` (the active one by default) at its CA, and in the store."""
    record = store.lineage(lineage)
    if version is None:
        if record.active is None:
            raise InputError(f"lineage {lineage} has no active version", hint="give the version: --version N")
        version = record.active.number
    target = store.version(lineage, version)
    if target.state is not VersionState.ISSUED or target.leaf is None:
        raise InputError(f"version {version} of {lineage} has no certificate to revoke")
    if any(r.version == version for r in store.revocations(lineage)):
        raise InputError(f"version {version} of {lineage} is revoked already")
    origin = next((i for i in store.issuances(lineage) if i.version == version), None)
    issuer = None
    if origin is not None:
        try:
            issuer = store.issuer(origin.issuer)
        except InputError:
            issuer = None
    told, note = False, ""
    if issuer is not None and issuer.kind is IssuerKind.ACME:
        with connect(store, issuer) as conn:
            try:
                conn.revoke(target.leaf.public_bytes(serialization.Encoding.DER), reason.code)
            except AcmeProblem as exc:
                if exc.problem != "alreadyRevoked":
                    raise
                note = "the CA had revoked it already"
        told = True
    elif origin is not None:
        note = f"issuer {origin.issuer} is gone: tell the CA yourself; certfleet only marked the version"
    else:
        note = "certfleet did not issue this version by ACME: revoke it at the CA too; certfleet only marked it"
    done = store.record_revocation(lineage, version, reason, issuer=issuer.name if told and issuer else None)
    return RevokeResult(done, told, was_active=target.active, note=note)
