"""The autopilot's tables: each lineage's renewal state, alert destinations (their Apprise URLs
sealed like keys), the state of each alert (for sending it once), the alerts sent, and settings.

Created by migration ``0006_autopilot``; the models live on the store's one :class:`Base`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from certfleet.store._models import Base, UTCDateTime

__all__ = ["AlertDestinationRow", "AlertLogRow", "AlertStateRow", "AutopilotSettingRow", "RenewalStateRow"]


class RenewalStateRow(Base):
    __tablename__ = "renewal_states"

    lineage_id: Mapped[int] = mapped_column(ForeignKey("lineages.id", ondelete="CASCADE"), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # failed passes in a row
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_success_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_version: Mapped[int | None] = mapped_column(Integer)
    retry_after: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # the CA asked to wait until
    next_renewal_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    next_reason: Mapped[str | None] = mapped_column(String(32))
    # the CA's renewal information (RFC 9773) for the certificate with this fingerprint
    ari_fingerprint: Mapped[str | None] = mapped_column(String(64))
    ari_cert_id: Mapped[str | None] = mapped_column(String(256))
    ari_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ari_end: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ari_explanation: Mapped[str | None] = mapped_column(String(1024))
    ari_ask_again: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class AlertDestinationRow(Base):
    __tablename__ = "alert_destinations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # nonce + AES-GCM ciphertext of the Apprise URL, which may hold a password or a token
    url_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    shown: Mapped[str] = mapped_column(String(1024))  # the URL with its secrets masked
    events: Mapped[list[Any]] = mapped_column(JSON, default=list)  # empty: every event
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:  # the sealed URL stays out of every log and debugger view
        return f"AlertDestinationRow(id={self.id!r}, shown={self.shown!r})"


class AlertStateRow(Base):
    """One alert's state, by its key (``renewal-failed:web``): open while ``resolved_at`` is None."""

    __tablename__ = "alert_states"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(256), unique=True)
    event: Mapped[str] = mapped_column(String(32))
    lineage: Mapped[str | None] = mapped_column(String(64))
    node: Mapped[str | None] = mapped_column(String(64))
    level: Mapped[int] = mapped_column(Integer, default=1)
    title: Mapped[str] = mapped_column(String(512))
    message: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AlertLogRow(Base):
    """An alert sent (or tried): what the metrics count; the audit trail has the words."""

    __tablename__ = "alert_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    event: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))  # alert, repeat, resolved, test
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)


class AutopilotSettingRow(Base):
    __tablename__ = "autopilot_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
