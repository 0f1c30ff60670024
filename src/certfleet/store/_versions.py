"""Versions (keys, CSRs, certificates) and the trust anchors imports are checked against."""

from __future__ import annotations

import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from certfleet.certinfo import describe, fingerprint, key_type
from certfleet.clock import utc_now
from certfleet.errors import InputError
from certfleet.fleet.model import Material
from certfleet.store._acme_models import RevocationRow
from certfleet.store._base import (
    StoreBase,
    _pem,
    public_key_id,
)
from certfleet.store._engine import retried
from certfleet.store._models import (
    LineageRow,
    TrustAnchorRow,
    VersionRow,
)
from certfleet.store._records import (
    AuditAction,
    TrustAnchor,
    VersionRecord,
    VersionState,
)

__all__ = ["VersionsMixin"]


class VersionsMixin(StoreBase):
    @retried
    def add_pending(
        self,
        lineage: str,
        key: CertificateIssuerPrivateKeyTypes,
        csr: x509.CertificateSigningRequest,
        names: Sequence[str],
    ) -> VersionRecord:
        """Keep a new key (sealed) and its CSR as a pending version of ``lineage``."""
        pkid = public_key_id(key.public_key())
        if public_key_id(csr.public_key()) != pkid:
            raise ValueError("the CSR is not for this key")
        self.vault()
        with self._db.session(write=True) as s:
            lin = self._lineage_row(s, lineage, create=True)
            number = self._next_number(s, lin.id)
            row = VersionRow(
                lineage_id=lin.id,
                number=number,
                state=VersionState.PENDING,
                key_spec=key_type(key.public_key()),
                public_key_id=pkid,
                key_sealed=self._seal_key(key, lin.id, number, pkid),
                names=list(names),
                csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                created_at=utc_now(),
            )
            s.add(row)
            self._audit(
                s,
                AuditAction.VERSION_REQUEST,
                {"lineage": lineage, "version": number, "key": row.key_spec, "names": list(names)},
            )
            s.flush()
            return self._version_record(row, lineage, lin.active_version_id)

    @retried
    def versions(self, lineage: str) -> list[VersionRecord]:
        """Every version of ``lineage``, oldest first."""
        with self._db.session(write=False) as s:
            lin = self._lineage_row(s, lineage)
            return [self._version_record(v, lineage, lin.active_version_id) for v in lin.versions]

    @retried
    def version(self, lineage: str, number: int) -> VersionRecord:
        with self._db.session(write=False) as s:
            lin = self._lineage_row(s, lineage)
            return self._version_record(self._version_row(s, lin, number), lineage, lin.active_version_id)

    @retried
    def find_key(self, pkid: str) -> list[VersionRecord]:
        """Every version, of any lineage, whose key has this public key id."""
        with self._db.session(write=False) as s:
            rows = s.scalars(select(VersionRow).where(VersionRow.public_key_id == pkid).order_by(VersionRow.id))
            return [self._version_record(r, r.lineage.name, r.lineage.active_version_id) for r in rows]

    @retried
    def version_by_fingerprint(self, sha256: str) -> VersionRecord | None:
        """The issued version whose leaf has this fingerprint (lowercase hex SHA-256 of the DER),
        of any lineage, found by an indexed query; None when no version has it."""
        with self._db.session(write=False) as s:
            row = s.scalar(select(VersionRow).where(VersionRow.fingerprint == sha256).order_by(VersionRow.id).limit(1))
            return None if row is None else self._version_record(row, row.lineage.name, row.lineage.active_version_id)

    @retried
    def version_with_chain_certificate(self, sha256: str) -> tuple[VersionRecord, int] | None:
        """A version whose chain holds the certificate with this fingerprint (an intermediate), and
        where: 0 is the leaf's issuer. Each distinct chain the store holds is read once."""
        with self._db.session(write=False) as s:
            chains = s.execute(
                select(func.min(VersionRow.id), VersionRow.chain_pem)
                .where(VersionRow.chain_pem.is_not(None), VersionRow.chain_pem != "")
                .group_by(VersionRow.chain_pem)
            ).all()
            for row_id, chain_pem in chains:
                certs = x509.load_pem_x509_certificates((chain_pem or "").encode())
                index = next((i for i, cert in enumerate(certs) if fingerprint(cert) == sha256), None)
                if index is not None:
                    row = s.get(VersionRow, row_id)
                    if row is not None:
                        record = self._version_record(row, row.lineage.name, row.lineage.active_version_id)
                        return record, index
        return None

    @retried
    def issue(
        self,
        lineage: str,
        leaf: x509.Certificate,
        chain: Sequence[x509.Certificate],
        *,
        key: CertificateIssuerPrivateKeyTypes | None = None,
        activate: bool | None = None,
    ) -> VersionRecord:
        """Store ``leaf`` and ``chain`` (intermediates, issuer first) as an issued version.

        The version is the pending one whose key the certificate is for; failing that a new
        version with ``key`` (a key that came with the certificate, as in a PFX), or with the key
        of an earlier version when the CA issued again for the same key. The same certificate
        imported twice is the version it already is. Raises :class:`InputError` when the
        certificate matches no key of the lineage.

        ``activate``: None makes a newly issued version the active one and leaves a version that
        existed already as it was (active or not, withdrawn or not); True makes it active in any
        case, False never.
        """
        pkid = public_key_id(leaf.public_key())
        if key is not None and public_key_id(key.public_key()) != pkid:
            raise ValueError("the key given is not the certificate's key")
        fp = fingerprint(leaf)
        info = describe(leaf)
        self.vault()
        with self._db.session(write=True) as s:
            lin = self._lineage_row(s, lineage, create=key is not None)
            same_key = list(
                s.scalars(
                    select(VersionRow)
                    .where(VersionRow.lineage_id == lin.id, VersionRow.public_key_id == pkid)
                    .order_by(VersionRow.number)
                )
            )
            existing = next((v for v in same_key if v.fingerprint == fp), None)
            pending = next((v for v in reversed(same_key) if v.state is VersionState.PENDING), None)
            now = utc_now()
            if existing is not None:
                row = existing
            elif pending is not None:
                row = pending
            else:
                if same_key:
                    key = self._open_key(same_key[-1])
                if key is None:
                    raise InputError(
                        "the certificate was issued for another key: "
                        f"it matches no pending request of lineage {lineage}",
                        hint=f"import the certificate made for the CSR of `certfleet request {lineage}`,"
                        " or a PFX that holds its key",
                    )
                number = self._next_number(s, lin.id)
                row = VersionRow(
                    lineage_id=lin.id,
                    number=number,
                    key_spec=key_type(key.public_key()),
                    public_key_id=pkid,
                    key_sealed=self._seal_key(key, lin.id, number, pkid),
                    names=[],
                    created_at=now,
                )
                s.add(row)
            if existing is None:
                row.state = VersionState.ISSUED
                row.leaf_pem = _pem(leaf)
                row.chain_pem = _pem(*chain) if chain else ""
                row.fingerprint = fp
                row.not_before = info.not_before
                row.not_after = info.not_after
                row.issued_at = now
                row.names = list(info.dns_names + info.ip_addresses) if not row.names else row.names
                s.flush()
                self._audit(
                    s,
                    AuditAction.VERSION_ISSUE,
                    {"lineage": lineage, "version": row.number, "fingerprint": fp, "not_after": info.not_after},
                )
            if activate is None:
                activate = existing is None
            if activate and lin.active_version_id != row.id:
                s.flush()
                self._make_active(s, lin, row)
            s.flush()
            return self._version_record(row, lineage, lin.active_version_id)

    @retried
    def activate(self, lineage: str, number: int, *, withdraw: bool = False) -> VersionRecord:
        """Make an issued version the active one (what ``deploy`` installs). A withdrawn version
        made active this way is no longer withdrawn. ``withdraw``: the version that was active
        is withdrawn (a rollback of the whole lineage), so that no import makes it active again."""
        with self._db.session(write=True) as s:
            lin = self._lineage_row(s, lineage)
            row = self._version_row(s, lin, number)
            if row.state is not VersionState.ISSUED:
                raise InputError(
                    f"version {number} of {lineage} is still waiting for its certificate",
                    hint=f"`certfleet import {lineage} FILES...` with what the CA sent",
                )
            self._refuse_revoked(s, row, lineage)
            if lin.active_version_id != row.id:
                before = lin.active
                self._make_active(s, lin, row)
                if withdraw and before is not None:
                    before.withdrawn_at = lin.updated_at
                    self._audit(s, AuditAction.VERSION_WITHDRAW, {"lineage": lineage, "version": before.number})
            return self._version_record(row, lineage, row.id)

    def _make_active(self, s: Session, lin: LineageRow, row: VersionRow) -> None:
        lin.active_version_id = row.id
        lin.updated_at = utc_now()
        row.withdrawn_at = None
        self._audit(s, AuditAction.VERSION_ACTIVATE, {"lineage": lin.name, "version": row.number})

    @retried
    def pending_keys(self, lineage: str) -> list[tuple[VersionRecord, CertificateIssuerPrivateKeyTypes]]:
        """The pending versions of ``lineage`` with their decrypted keys, newest first."""
        with self._db.session(write=False) as s:
            lin = self._lineage_row(s, lineage)
            rows = [v for v in lin.versions if v.state is VersionState.PENDING]
            return [
                (self._version_record(v, lineage, lin.active_version_id), self._open_key(v)) for v in reversed(rows)
            ]

    @retried
    def material(self, lineage: str, number: int | None = None) -> Material:
        """Key, leaf and chain of a version (the active one by default), decrypted for deploy or
        export. ``version_id`` is the leaf fingerprint."""
        with self._db.session(write=False) as s:
            lin = self._lineage_row(s, lineage)
            if number is None:
                row = lin.active
                if row is None:
                    raise InputError(
                        f"lineage {lineage} has no certificate yet",
                        hint=f"`certfleet request {lineage}`, then `certfleet import {lineage}` what the CA sends",
                    )
            else:
                row = self._version_row(s, lin, number)
            if row.state is not VersionState.ISSUED or not row.leaf_pem:
                raise InputError(f"version {row.number} of {lineage} has no certificate yet")
            self._refuse_revoked(s, row, lineage)
            return Material(
                key=self._open_key(row),
                leaf=x509.load_pem_x509_certificate(row.leaf_pem.encode()),
                chain=tuple(x509.load_pem_x509_certificates(row.chain_pem.encode())) if row.chain_pem else (),
                version_id=row.fingerprint or "",
            )

    @staticmethod
    def _refuse_revoked(s: Session, row: VersionRow, lineage: str) -> None:
        revoked = s.get(RevocationRow, row.id)
        if revoked is not None:
            raise InputError(
                f"version {row.number} of {lineage} was revoked ({revoked.reason}) on {revoked.revoked_at:%Y-%m-%d}:"
                " it is never activated or deployed again",
                hint=f"`certfleet issue {lineage}` for a new certificate",
            )

    @retried
    def add_trust_anchor(self, cert: x509.Certificate) -> tuple[TrustAnchor, bool]:
        """Trust ``cert`` as a root for imports; (anchor, True when new)."""
        fp = fingerprint(cert)
        info = describe(cert)
        with self._db.session(write=True) as s:
            row = s.scalar(select(TrustAnchorRow).where(TrustAnchorRow.fingerprint == fp))
            if row is not None:
                return TrustAnchor(fp, row.subject, cert, row.added_at), False
            row = TrustAnchorRow(fingerprint=fp, subject=info.subject[:1024], cert_pem=_pem(cert), added_at=utc_now())
            s.add(row)
            self._audit(s, AuditAction.TRUST_ADD, {"fingerprint": fp, "subject": info.subject})
            return TrustAnchor(fp, row.subject, cert, row.added_at), True

    @retried
    def trust_anchors(self) -> list[TrustAnchor]:
        """The roots added with ``trust add``; ``[a.cert for a in ...]`` for a trust store."""
        with self._db.session(write=False) as s:
            rows = s.scalars(select(TrustAnchorRow).order_by(TrustAnchorRow.id))
            return [
                TrustAnchor(r.fingerprint, r.subject, x509.load_pem_x509_certificate(r.cert_pem.encode()), r.added_at)
                for r in rows
            ]

    @retried
    def remove_trust_anchor(self, fingerprint_prefix: str) -> TrustAnchor:
        """Remove the anchor whose fingerprint starts with the prefix (8 hex digits or more)."""
        prefix = fingerprint_prefix.strip().lower().replace(":", "")
        if not re.fullmatch(r"[0-9a-f]{8,64}", prefix):
            raise InputError(
                "give the SHA-256 fingerprint of the anchor (at least 8 hex digits)",
                hint="`certfleet trust list` shows them",
            )
        with self._db.session(write=True) as s:
            rows = list(s.scalars(select(TrustAnchorRow).where(TrustAnchorRow.fingerprint.startswith(prefix))))
            if not rows:
                raise InputError(f"no trust anchor with fingerprint {prefix}", hint="`certfleet trust list`")
            if len(rows) > 1:
                raise InputError(f"{len(rows)} trust anchors start with {prefix}", hint="give more of the fingerprint")
            row = rows[0]
            anchor = TrustAnchor(
                row.fingerprint, row.subject, x509.load_pem_x509_certificate(row.cert_pem.encode()), row.added_at
            )
            s.delete(row)
            self._audit(s, AuditAction.TRUST_REMOVE, {"fingerprint": row.fingerprint, "subject": row.subject})
            return anchor
