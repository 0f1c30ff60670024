"""The tables of issuing: issuers (ACME accounts, the manual CA), each lineage's issuers in
order and its issuing policy, where each version came from, and revocations.

Created by migration ``0004_acme``; the models live on the store's one :class:`Base`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from certfleet.store._models import Base, UTCDateTime

__all__ = ["IssuanceRow", "IssuerRow", "LineageIssuerRow", "LineagePolicyRow", "RevocationRow"]


class IssuerRow(Base):
    __tablename__ = "issuers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    directory_url: Mapped[str | None] = mapped_column(String(1024))
    account_url: Mapped[str | None] = mapped_column(String(1024))
    status: Mapped[str | None] = mapped_column(String(16))
    contact: Mapped[list[Any]] = mapped_column(JSON, default=list)
    eab_kid: Mapped[str | None] = mapped_column(String(256))
    profile: Mapped[str | None] = mapped_column(String(64))
    ca_bundle_pem: Mapped[str | None] = mapped_column(Text)
    caa_identities: Mapped[list[Any]] = mapped_column(JSON, default=list)
    terms_of_service: Mapped[str | None] = mapped_column(String(1024))
    key_spec: Mapped[str | None] = mapped_column(String(16))
    key_thumbprint: Mapped[str | None] = mapped_column(String(64))
    # nonce + AES-GCM ciphertext of the PKCS#8 DER account key; never the key in clear
    key_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    # a rollover's new key, kept before the CA is asked so that no answer can lose it
    next_key_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:  # the sealed keys stay out of every log and debugger view
        return f"IssuerRow(name={self.name!r}, kind={self.kind!r})"


class LineageIssuerRow(Base):
    __tablename__ = "lineage_issuers"

    lineage_id: Mapped[int] = mapped_column(ForeignKey("lineages.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer_id: Mapped[int] = mapped_column(ForeignKey("issuers.id", ondelete="CASCADE"), index=True)

    issuer: Mapped[IssuerRow] = relationship()


class LineagePolicyRow(Base):
    __tablename__ = "lineage_policies"

    lineage_id: Mapped[int] = mapped_column(ForeignKey("lineages.id", ondelete="CASCADE"), primary_key=True)
    solvers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    profile: Mapped[str | None] = mapped_column(String(64))
    preferred_chain: Mapped[str | None] = mapped_column(String(256))
    reuse_key: Mapped[bool] = mapped_column(Boolean, default=False)


class IssuanceRow(Base):
    __tablename__ = "issuances"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    # by name, not by key: the history outlives a removed issuer
    issuer_name: Mapped[str] = mapped_column(String(64))
    order_url: Mapped[str | None] = mapped_column(String(1024))
    tried: Mapped[list[Any]] = mapped_column(JSON, default=list)
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class RevocationRow(Base):
    __tablename__ = "revocations"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    issuer_name: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
