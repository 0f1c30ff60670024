"""Issuers (ACME accounts with their sealed keys, the manual CA), each lineage's issuing policy,
which issuer made each version, and revocations."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from certfleet.acme.model import (
    AccountStatus,
    IssuanceRecord,
    IssuerKind,
    IssuerRecord,
    LineagePolicy,
    RevocationReason,
    RevocationRecord,
    SolverRule,
)
from certfleet.certinfo import key_type
from certfleet.clock import utc_now
from certfleet.errors import InputError, StoreError
from certfleet.store._acme_models import IssuanceRow, IssuerRow, LineageIssuerRow, LineagePolicyRow, RevocationRow
from certfleet.store._base import StoreBase, _check_text, check_name
from certfleet.store._engine import retried
from certfleet.store._models import LineageRow, VersionRow
from certfleet.store._records import VersionState

__all__ = ["AccountKey", "IssuerAction", "IssuersMixin"]

AccountKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
MAX_ISSUERS = 8  # per lineage: a fallback list, not a catalogue
MAX_SOLVERS = 100


class IssuerAction(StrEnum):
    """What the audit trail says about issuing."""

    ADD = "issuer.add"
    UPDATE = "issuer.update"
    REMOVE = "issuer.remove"
    ROLLOVER = "issuer.rollover"
    DEACTIVATE = "issuer.deactivate"
    POLICY = "lineage.policy"
    ISSUE = "version.acme"
    REVOKE = "version.revoke"


def _key_aad(issuer_id: int, slot: str) -> bytes:
    # binds a sealed account key to its issuer and slot: a ciphertext copied elsewhere does not open
    return f"certfleet/account-key/v1/issuer={issuer_id}/slot={slot}".encode()


def _record(row: IssuerRow) -> IssuerRecord:
    return IssuerRecord(
        name=row.name,
        kind=IssuerKind(row.kind),
        created_at=row.created_at,
        updated_at=row.updated_at,
        directory_url=row.directory_url,
        account_url=row.account_url,
        status=AccountStatus(row.status) if row.status else None,
        contact=tuple(row.contact),
        eab_kid=row.eab_kid,
        profile=row.profile,
        ca_bundle=row.ca_bundle_pem,
        caa_identities=tuple(row.caa_identities),
        terms_of_service=row.terms_of_service,
        key_spec=row.key_spec,
        key_thumbprint=row.key_thumbprint,
        key_changed_at=row.key_changed_at,
    )


class IssuersMixin(StoreBase):
    # -- issuers ---------------------------------------------------------------------------------

    @retried
    def add_issuer(
        self,
        name: str,
        kind: IssuerKind,
        *,
        directory_url: str | None = None,
        account_url: str | None = None,
        key: AccountKey | None = None,
        key_thumbprint: str | None = None,
        contact: Sequence[str] = (),
        eab_kid: str | None = None,
        profile: str | None = None,
        ca_bundle: str | None = None,
        caa_identities: Sequence[str] = (),
        terms_of_service: str | None = None,
    ) -> IssuerRecord:
        """Keep a new issuer; an ACME one with its account URL and key (sealed). Refused when the
        name exists."""
        check_name("issuer", name)
        if (kind is IssuerKind.ACME) != (key is not None and account_url is not None):
            raise ValueError("an ACME issuer has an account URL and a key; a manual one has neither")
        for what, value, limit in (
            ("the directory URL", directory_url, 1024),
            ("the account URL", account_url, 1024),
            ("the EAB key id", eab_kid, 256),
            ("the profile", profile, 64),
            ("the terms URL", terms_of_service, 1024),
        ):
            _check_text(what, value, limit)
        if key is not None:
            self.vault()
        with self._db.session(write=True) as s:
            if s.scalar(select(IssuerRow.id).where(IssuerRow.name == name)) is not None:
                raise InputError(f"an issuer named {name} exists", hint="`certfleet issuer list` shows the issuers")
            now = utc_now()
            row = IssuerRow(
                name=name,
                kind=kind.value,
                directory_url=directory_url,
                account_url=account_url,
                status=AccountStatus.VALID.value if kind is IssuerKind.ACME else None,
                contact=list(contact),
                eab_kid=eab_kid,
                profile=profile,
                ca_bundle_pem=ca_bundle,
                caa_identities=list(caa_identities),
                terms_of_service=terms_of_service,
                key_spec=key_type(key.public_key()) if key is not None else None,
                key_thumbprint=key_thumbprint,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            s.flush()
            if key is not None:
                row.key_sealed = self._seal_account_key(key, row.id, "current")
            self._audit(
                s,
                IssuerAction.ADD,
                {"issuer": name, "kind": kind.value, "directory": directory_url, "account": account_url},
            )
            return _record(row)

    @retried
    def issuer(self, name: str) -> IssuerRecord:
        with self._db.session(write=False) as s:
            return _record(self._issuer_row(s, name))

    @retried
    def issuers(self) -> list[IssuerRecord]:
        """Every issuer, by name."""
        with self._db.session(write=False) as s:
            return [_record(r) for r in s.scalars(select(IssuerRow).order_by(IssuerRow.name))]

    @retried
    def issuer_lineages(self, name: str) -> list[str]:
        """The lineages that list the issuer, by name."""
        with self._db.session(write=False) as s:
            row = self._issuer_row(s, name)
            return sorted(
                set(
                    s.scalars(
                        select(LineageRow.name)
                        .join(LineageIssuerRow, LineageIssuerRow.lineage_id == LineageRow.id)
                        .where(LineageIssuerRow.issuer_id == row.id)
                    )
                )
            )

    @retried
    def update_issuer(
        self,
        name: str,
        *,
        status: AccountStatus | None = None,
        contact: Sequence[str] | None = None,
        terms_of_service: str | None = None,
        caa_identities: Sequence[str] | None = None,
    ) -> IssuerRecord:
        """Change what the CA said about the account (its status, contact, terms, CAA names)."""
        with self._db.session(write=True) as s:
            row = self._issuer_row(s, name)
            changed: dict[str, object] = {}
            if status is not None and row.status != status.value:
                row.status = changed["status"] = status.value
            if contact is not None and list(contact) != row.contact:
                row.contact = list(contact)
                changed["contact"] = list(contact)
            if terms_of_service is not None and terms_of_service != row.terms_of_service:
                _check_text("the terms URL", terms_of_service, 1024)
                row.terms_of_service = changed["terms_of_service"] = terms_of_service
            if caa_identities is not None and list(caa_identities) != row.caa_identities:
                row.caa_identities = list(caa_identities)
                changed["caa_identities"] = list(caa_identities)
            if changed:
                row.updated_at = utc_now()
                action = IssuerAction.DEACTIVATE if status is AccountStatus.DEACTIVATED else IssuerAction.UPDATE
                self._audit(s, action, {"issuer": name, **changed})
            return _record(row)

    @retried
    def remove_issuer(self, name: str) -> IssuerRecord:
        """Forget an issuer and its account key; refused while a lineage lists it."""
        used = self.issuer_lineages(name)
        with self._db.session(write=True) as s:
            row = self._issuer_row(s, name)
            if used:
                raise InputError(
                    f"issuer {name} is used by lineage {', '.join(used)}",
                    hint=f"`certfleet lineage set {used[0]} --issuer OTHER` first",
                )
            record = _record(row)
            s.delete(row)
            self._audit(s, IssuerAction.REMOVE, {"issuer": name, "account": record.account_url})
            return record

    @retried
    def account_key(self, name: str) -> tuple[AccountKey, AccountKey | None]:
        """The issuer's account key, and the new key of a rollover the CA may not have confirmed."""
        with self._db.session(write=False) as s:
            row = self._issuer_row(s, name)
            if row.key_sealed is None:
                raise InputError(f"issuer {name} is {row.kind}: it has no ACME account")
            current = self._open_account_key(row.key_sealed, row.id, "current")
            staged = self._open_account_key(row.next_key_sealed, row.id, "next") if row.next_key_sealed else None
            return current, staged

    @retried
    def stage_account_key(self, name: str, key: AccountKey) -> None:
        """Keep a rollover's new key beside the current one before the CA is asked."""
        self.vault()
        with self._db.session(write=True) as s:
            row = self._issuer_row(s, name)
            row.next_key_sealed = self._seal_account_key(key, row.id, "next")

    @retried
    def settle_account_key(self, name: str, *, changed: bool, thumbprint: str | None = None) -> IssuerRecord:
        """After a rollover: the staged key becomes the account key (``changed``), or is dropped."""
        with self._db.session(write=True) as s:
            row = self._issuer_row(s, name)
            if row.next_key_sealed is None:
                raise StoreError(f"issuer {name} has no new account key waiting")
            if changed:
                key = self._open_account_key(row.next_key_sealed, row.id, "next")
                row.key_sealed = self._seal_account_key(key, row.id, "current")
                row.key_spec = key_type(key.public_key())
                row.key_thumbprint = thumbprint
                row.key_changed_at = row.updated_at = utc_now()
                self._audit(s, IssuerAction.ROLLOVER, {"issuer": name, "key": row.key_spec, "thumbprint": thumbprint})
            row.next_key_sealed = None
            return _record(row)

    def _issuer_row(self, s: Session, name: str) -> IssuerRow:
        row = s.scalar(select(IssuerRow).where(IssuerRow.name == name))
        if row is None:
            raise InputError(f"no issuer named {name[:80]!r}", hint="`certfleet issuer list` shows the issuers")
        return row

    def _seal_account_key(self, key: AccountKey, issuer_id: int, slot: str) -> bytes:
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return self.vault().seal(der, _key_aad(issuer_id, slot))

    def _open_account_key(self, sealed: bytes, issuer_id: int, slot: str) -> AccountKey:
        der = self.vault().open(sealed, _key_aad(issuer_id, slot))
        key = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise StoreError("a stored account key is of a kind certfleet does not use")
        return key

    # -- a lineage's policy ----------------------------------------------------------------------

    @retried
    def policy(self, lineage: str) -> LineagePolicy:
        """How ``lineage`` is issued (no issuers and no solvers when nothing was set)."""
        with self._db.session(write=False) as s:
            return self._policy(s, self._lineage_row(s, lineage))

    def _policy(self, s: Session, lin: LineageRow) -> LineagePolicy:
        issuers = s.scalars(
            select(IssuerRow.name)
            .join(LineageIssuerRow, LineageIssuerRow.issuer_id == IssuerRow.id)
            .where(LineageIssuerRow.lineage_id == lin.id)
            .order_by(LineageIssuerRow.position)
        )
        row = s.get(LineagePolicyRow, lin.id)
        if row is None:
            return LineagePolicy(lin.name, tuple(issuers))
        return LineagePolicy(
            lineage=lin.name,
            issuers=tuple(issuers),
            solvers=tuple(SolverRule.parse(text) for text in row.solvers),
            profile=row.profile,
            preferred_chain=row.preferred_chain,
            reuse_key=row.reuse_key,
        )

    @retried
    def set_policy(
        self,
        lineage: str,
        *,
        issuers: Sequence[str] | None = None,
        solvers: Sequence[SolverRule] | None = None,
        profile: str | None = None,
        preferred_chain: str | None = None,
        reuse_key: bool | None = None,
    ) -> LineagePolicy:
        """Change the given parts of ``lineage``'s policy (``""`` clears profile or preferred
        chain); ``issuers`` and ``solvers`` replace the lists. Creates the lineage if needed."""
        if issuers is not None:
            if len(issuers) > MAX_ISSUERS:
                raise InputError(f"a lineage lists at most {MAX_ISSUERS} issuers")
            if len(set(issuers)) != len(issuers):
                raise InputError("an issuer is listed twice", hint="give each --issuer once, in the order to try")
        if solvers is not None and len(solvers) > MAX_SOLVERS:
            raise InputError(f"a lineage has at most {MAX_SOLVERS} solvers")
        _check_text("the profile", profile, 64)
        _check_text("the preferred chain", preferred_chain, 256)
        with self._db.session(write=True) as s:
            lin = self._lineage_row(s, lineage, create=True)
            changed: dict[str, object] = {}
            if issuers is not None:
                rows = [self._issuer_row(s, name) for name in issuers]
                s.execute(delete(LineageIssuerRow).where(LineageIssuerRow.lineage_id == lin.id))
                s.flush()
                for position, issuer in enumerate(rows):
                    s.add(LineageIssuerRow(lineage_id=lin.id, position=position, issuer_id=issuer.id))
                changed["issuers"] = list(issuers)
            row = s.get(LineagePolicyRow, lin.id)
            if row is None:
                row = LineagePolicyRow(lineage_id=lin.id, solvers=[], reuse_key=False)
                s.add(row)
            if solvers is not None:
                row.solvers = [str(r) for r in solvers]
                changed["solvers"] = list(row.solvers)
            if profile is not None:
                row.profile = profile or None
                changed["profile"] = row.profile
            if preferred_chain is not None:
                row.preferred_chain = preferred_chain or None
                changed["preferred_chain"] = row.preferred_chain
            if reuse_key is not None:
                row.reuse_key = changed["reuse_key"] = reuse_key
            if changed:
                lin.updated_at = utc_now()
                self._audit(s, IssuerAction.POLICY, {"lineage": lineage, **changed})
            s.flush()
            return self._policy(s, lin)

    # -- where versions came from, and revocations -----------------------------------------------

    @retried
    def record_issuance(
        self, lineage: str, number: int, issuer: str, *, order_url: str | None, tried: Sequence[str] = ()
    ) -> IssuanceRecord:
        """Keep which issuer made version ``number`` (and which failed before it)."""
        with self._db.session(write=True) as s:
            lin = self._lineage_row(s, lineage)
            ver = self._version_row(s, lin, number)
            row = s.get(IssuanceRow, ver.id)
            if row is None:
                row = IssuanceRow(version_id=ver.id, issuer_name=issuer, issued_at=utc_now())
                s.add(row)
            row.issuer_name, row.order_url, row.tried = issuer, order_url, [t[:500] for t in tried]
            self._audit(
                s,
                IssuerAction.ISSUE,
                {"lineage": lineage, "version": number, "issuer": issuer, "order": order_url, "tried": list(tried)},
            )
            return IssuanceRecord(lineage, number, issuer, order_url, row.issued_at, tuple(row.tried))

    @retried
    def issuances(self, lineage: str) -> list[IssuanceRecord]:
        """Which issuer made each version of ``lineage`` that an issuer made, oldest first."""
        with self._db.session(write=False) as s:
            lin = self._lineage_row(s, lineage)
            rows = s.execute(
                select(IssuanceRow, VersionRow.number)
                .join(VersionRow, VersionRow.id == IssuanceRow.version_id)
                .where(VersionRow.lineage_id == lin.id)
                .order_by(VersionRow.number)
            ).all()
            return [
                IssuanceRecord(lineage, number, r.issuer_name, r.order_url, r.issued_at, tuple(r.tried))
                for r, number in rows
            ]

    @retried
    def record_revocation(
        self, lineage: str, number: int, reason: RevocationReason, *, issuer: str | None
    ) -> RevocationRecord:
        """Mark version ``number`` revoked: it can never be activated or deployed again. When it
        was the active version, the lineage has no active version until a new one is issued."""
        with self._db.session(write=True) as s:
            lin = self._lineage_row(s, lineage)
            ver = self._version_row(s, lin, number)
            if ver.state is not VersionState.ISSUED:
                raise InputError(f"version {number} of {lineage} has no certificate to revoke")
            if s.get(RevocationRow, ver.id) is not None:
                raise InputError(f"version {number} of {lineage} is revoked already")
            row = RevocationRow(
                version_id=ver.id, reason=reason.value, issuer_name=issuer, actor=self.actor, revoked_at=utc_now()
            )
            s.add(row)
            was_active = lin.active_version_id == ver.id
            if was_active:
                lin.active_version_id = None
                lin.updated_at = row.revoked_at
            self._audit(
                s,
                IssuerAction.REVOKE,
                {
                    "lineage": lineage,
                    "version": number,
                    "fingerprint": ver.fingerprint,
                    "reason": reason.value,
                    "issuer": issuer,
                    "was_active": was_active,
                },
            )
            return RevocationRecord(lineage, number, ver.fingerprint, reason, row.revoked_at, self.actor, issuer)

    @retried
    def revocations(self, lineage: str | None = None) -> list[RevocationRecord]:
        """The revoked versions (of ``lineage``, or of all), oldest first."""
        with self._db.session(write=False) as s:
            q = (
                select(RevocationRow, VersionRow, LineageRow.name)
                .join(VersionRow, VersionRow.id == RevocationRow.version_id)
                .join(LineageRow, LineageRow.id == VersionRow.lineage_id)
                .order_by(RevocationRow.revoked_at)
            )
            if lineage is not None:
                q = q.where(LineageRow.id == self._lineage_row(s, lineage).id)
            return [
                RevocationRecord(
                    name, v.number, v.fingerprint, RevocationReason(r.reason), r.revoked_at, r.actor, r.issuer_name
                )
                for r, v, name in s.execute(q).all()
            ]
