"""Each lineage's renewal state, kept between passes: failures in a row (for the backoff), the last
outcome and error, the CA's ``Retry-After``, the next renewal and why (for the metrics and the
schedule), and the CA's renewal information for the active certificate (asked again only when the
CA said to, RFC 9773 §4.3.3). Also the autopilot's few settings.

Every method is one short transaction on the store's database (``Store.session``) and returns
frozen values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from certfleet.autopilot._tables import AutopilotSettingRow, RenewalStateRow
from certfleet.clock import Clock, utc_now
from certfleet.errors import InputError
from certfleet.renewal import RenewalWindow
from certfleet.store import Store
from certfleet.store._models import LineageRow

__all__ = ["AriCache", "Ledger", "Outcome", "RenewalState"]

MAX_ERROR = 4000


class Outcome(StrEnum):
    """What the last pass did for a lineage."""

    RENEWED = "renewed"  # issued, imported, deployed and proven on every node
    DEPLOYED = "deployed"  # the active version carried to the nodes that lacked it
    PARTIAL = "partial"  # issued or deployed, but some nodes failed (they keep what they had)
    FAILED = "failed"  # nothing changed: the CA refused or could not be reached, or nothing was proven
    REQUESTED = "requested"  # a manual lineage: a new key and CSR wait for the CA

    @property
    def ok(self) -> bool:
        return self in (Outcome.RENEWED, Outcome.DEPLOYED, Outcome.REQUESTED)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True, slots=True)
class AriCache:
    """The CA's renewal information for the certificate ``fingerprint``: its CertID, its window
    (None when the CA offers no renewal information), when to ask again."""

    fingerprint: str
    cert_id: str | None
    window: RenewalWindow | None
    ask_again: dt.datetime | None


@dataclass(frozen=True, slots=True)
class RenewalState:
    lineage: str
    failures: int = 0
    last_attempt_at: dt.datetime | None = None
    last_outcome: Outcome | None = None
    last_error: str | None = None
    last_success_at: dt.datetime | None = None
    last_version: int | None = None
    retry_after: dt.datetime | None = None
    next_renewal_at: dt.datetime | None = None
    next_reason: str | None = None
    ari: AriCache | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "failures": self.failures,
            "last_attempt_at": _iso(self.last_attempt_at),
            "last_outcome": self.last_outcome.value if self.last_outcome is not None else None,
            "last_error": self.last_error,
            "last_success_at": _iso(self.last_success_at),
            "last_version": self.last_version,
            "retry_after": _iso(self.retry_after),
            "next_renewal_at": _iso(self.next_renewal_at),
            "next_reason": self.next_reason,
        }


def _state(name: str, row: RenewalStateRow | None) -> RenewalState:
    if row is None:
        return RenewalState(name)
    ari = None
    if row.ari_fingerprint is not None:
        window = (
            RenewalWindow(row.ari_start, row.ari_end, row.ari_explanation)
            if row.ari_start is not None and row.ari_end is not None
            else None
        )
        ari = AriCache(row.ari_fingerprint, row.ari_cert_id, window, row.ari_ask_again)
    return RenewalState(
        lineage=name,
        failures=row.failures,
        last_attempt_at=row.last_attempt_at,
        last_outcome=Outcome(row.last_outcome) if row.last_outcome else None,
        last_error=row.last_error,
        last_success_at=row.last_success_at,
        last_version=row.last_version,
        retry_after=row.retry_after,
        next_renewal_at=row.next_renewal_at,
        next_reason=row.next_reason,
        ari=ari,
    )


class Ledger:
    """The renewal state of the store's lineages, and the autopilot's settings."""

    def __init__(self, store: Store, *, clock: Clock = utc_now) -> None:
        self.store = store
        self.clock = clock

    @staticmethod
    def _lineage_id(s: Session, lineage: str) -> int:
        found = s.scalar(select(LineageRow.id).where(LineageRow.name == lineage))
        if found is None:
            raise InputError(f"no lineage {lineage}", hint="`certfleet status` lists the lineages")
        return int(found)

    def _row(self, s: Session, lineage: str) -> RenewalStateRow:
        lineage_id = self._lineage_id(s, lineage)
        row = s.get(RenewalStateRow, lineage_id)
        if row is None:
            row = RenewalStateRow(lineage_id=lineage_id, failures=0, updated_at=self.clock())
            s.add(row)
        return row

    def state(self, lineage: str) -> RenewalState:
        with self.store.session() as s:
            return _state(lineage, s.get(RenewalStateRow, self._lineage_id(s, lineage)))

    def states(self) -> list[RenewalState]:
        """Every lineage's state (a lineage never seen by a pass has an empty one), by name."""
        with self.store.session() as s:
            rows = s.execute(
                select(LineageRow.name, RenewalStateRow)
                .outerjoin(RenewalStateRow, RenewalStateRow.lineage_id == LineageRow.id)
                .order_by(LineageRow.name)
            ).all()
            return [_state(name, row) for name, row in rows]

    def record(
        self,
        lineage: str,
        outcome: Outcome,
        *,
        at: dt.datetime,
        error: str | None = None,
        version: int | None = None,
        retry_after: dt.datetime | None = None,
    ) -> RenewalState:
        """What a pass did for ``lineage``: a failure adds one to the failures in a row, a success
        clears them."""
        with self.store.session(write=True) as s:
            row = self._row(s, lineage)
            row.last_attempt_at = at
            row.last_outcome = outcome.value
            row.last_error = error[:MAX_ERROR] if error else None
            row.retry_after = retry_after
            if outcome.ok:
                row.failures = 0
                row.last_success_at = at
            else:
                row.failures = (row.failures or 0) + 1
            if version is not None:
                row.last_version = version
            row.updated_at = self.clock()
            return _state(lineage, row)

    def plan(self, lineage: str, next_at: dt.datetime | None, reason: str) -> None:
        """When ``lineage`` renews next and why, as the last pass planned it."""
        with self.store.session(write=True) as s:
            row = self._row(s, lineage)
            if row.next_renewal_at != next_at or row.next_reason != reason:
                row.next_renewal_at, row.next_reason = next_at, reason
                row.updated_at = self.clock()

    def remember_ari(self, lineage: str, cache: AriCache) -> None:
        """The CA's renewal information for the active certificate."""
        with self.store.session(write=True) as s:
            row = self._row(s, lineage)
            window = cache.window
            row.ari_fingerprint, row.ari_cert_id = cache.fingerprint, cache.cert_id
            row.ari_start = window.start if window is not None else None
            row.ari_end = window.end if window is not None else None
            row.ari_explanation = window.explanation_url if window is not None else None
            row.ari_ask_again = cache.ask_again
            row.updated_at = self.clock()

    # -- settings ------------------------------------------------------------------------------

    def setting(self, key: str, default: Any = None) -> Any:
        with self.store.session() as s:
            row = s.get(AutopilotSettingRow, key)
            return row.value if row is not None else default

    def set_setting(self, key: str, value: Any) -> None:
        with self.store.session(write=True) as s:
            row = s.get(AutopilotSettingRow, key)
            if row is None:
                s.add(AutopilotSettingRow(key=key, value=value))
            else:
                row.value = value
