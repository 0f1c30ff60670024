"""Alerts: people are told, once per event, when a lineage cannot look after itself.

A pass finds **conditions** (:mod:`certfleet.autopilot.conditions`): a renewal that failed, a
deploy rolled back on a node, a node serving an older or another certificate, a certificate past
two thirds or five sixths of its lifetime, a manual lineage waiting for a purchase, a revoked
certificate still served. Each has a key (``renewal-failed:web``, ``deploy-failed:web:gw1``).
:meth:`Alerts.dispatch` compares them with the alerts already open:

* a new key (or a higher level of an open one, e.g. five sixths after two thirds): sent now;
* an open key seen again: sent again only once the repeat interval (24 h by default) has passed;
* an open key the pass looked for and did not find: a "resolved" message, and it is closed.

"Looked for" is the pass's :class:`Scope`: an alert about a node's deploy is not resolved by a
pass that did not deploy to that node. An alert that reached no destination (none set, or all
failed) stays unsent and is tried at the next pass. Every alert sent is in the audit trail
(``alert.sent``: the event, the key, the title, where it went, shown masked) and in the alert
log the metrics count.

Destinations are Apprise URLs, sealed in the store like keys (they may hold a password); only
their masked form is ever shown.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select

from certfleet.autopilot._tables import AlertDestinationRow, AlertLogRow, AlertStateRow
from certfleet.autopilot.ledger import Ledger
from certfleet.autopilot.notify import AppriseNotifier, Notifier
from certfleet.clock import Clock, utc_now
from certfleet.errors import InputError
from certfleet.store import Store

__all__ = [
    "DEFAULT_REPEAT",
    "AlertSent",
    "AlertSettings",
    "Alerts",
    "Condition",
    "Delivery",
    "Destination",
    "Event",
    "Kind",
    "OpenAlert",
    "Scope",
    "SentRecord",
    "parse_events",
]

DEFAULT_REPEAT = dt.timedelta(hours=24)
MAX_DESTINATIONS = 32
AUDIT_SENT = "alert.sent"


class Event(StrEnum):
    RENEWAL_FAILED = "renewal-failed"  # with the CA's reason
    DEPLOY_ROLLED_BACK = "deploy-rolled-back"  # a node took the new version, failed after, and was put back
    DEPLOY_FAILED = "deploy-failed"  # a node could not be deployed to (down, refused): it keeps what it had
    SERVING_OTHER = "serving-other"  # a node serves an older version, or a certificate that is not the lineage's
    EXPIRING = "expiring"  # past two thirds, then five sixths, of its lifetime (or N days left)
    MANUAL_WAITING = "manual-waiting"  # a manual lineage's CSR waits for someone to buy the certificate
    REVOKED_SERVED = "revoked-served"  # a node still serves a revoked certificate


def parse_events(values: Iterable[str]) -> tuple[Event, ...]:
    """Event names, comma-separated or repeated; unknown names are refused with the list."""
    out: list[Event] = []
    for value in values:
        for name in value.split(","):
            name = name.strip().lower()
            if not name:
                continue
            try:
                out.append(Event(name))
            except ValueError:
                raise InputError(
                    f"unknown event {name[:40]!r}", hint=f"events: {', '.join(e.value for e in Event)}"
                ) from None
    return tuple(dict.fromkeys(out))


class Kind(StrEnum):
    ALERT = "alert"
    REPEAT = "repeat"
    RESOLVED = "resolved"
    TEST = "test"


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True, slots=True)
class Condition:
    """Something wrong, found by a pass. ``level`` orders the stages of one event (expiry)."""

    event: Event
    lineage: str
    title: str
    body: str
    node: str | None = None
    level: int = 1

    @property
    def key(self) -> str:
        return f"{self.event.value}:{self.lineage}" + (f":{self.node}" if self.node else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event.value,
            "key": self.key,
            "lineage": self.lineage,
            "node": self.node,
            "level": self.level,
            "title": self.title,
            "body": self.body,
        }


@dataclass(frozen=True, slots=True)
class Scope:
    """What a pass looked for: ``(event, lineage, node)``, node None for every node of the lineage."""

    looked: frozenset[tuple[Event, str, str | None]] = frozenset()

    def covers(self, event: Event, lineage: str | None, node: str | None) -> bool:
        if lineage is None:
            return False
        return (event, lineage, None) in self.looked or (node is not None and (event, lineage, node) in self.looked)

    def plus(self, *items: tuple[Event, str, str | None]) -> Scope:
        return Scope(self.looked | frozenset(items))


@dataclass(frozen=True, slots=True)
class Destination:
    id: int
    shown: str  # the URL with its secrets masked
    events: tuple[Event, ...]  # empty: every event
    created_at: dt.datetime

    def wants(self, event: Event) -> bool:
        return not self.events or event in self.events

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.shown,
            "events": [e.value for e in self.events] or "all",
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    destination: int
    shown: str
    ok: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"destination": self.destination, "url": self.shown, "ok": self.ok, "error": self.error}


@dataclass(frozen=True, slots=True)
class AlertSent:
    """An alert a pass sent (or tried to: ``deliveries`` says where it got)."""

    kind: Kind
    event: Event
    key: str
    title: str
    body: str
    at: dt.datetime
    deliveries: tuple[Delivery, ...] = ()

    @property
    def delivered(self) -> bool:
        return any(d.ok for d in self.deliveries)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "event": self.event.value,
            "key": self.key,
            "title": self.title,
            "body": self.body,
            "at": _iso(self.at),
            "delivered": self.delivered,
            "deliveries": [d.to_dict() for d in self.deliveries],
        }


@dataclass(frozen=True, slots=True)
class OpenAlert:
    key: str
    event: Event
    lineage: str | None
    node: str | None
    level: int
    title: str
    first_seen_at: dt.datetime
    last_sent_at: dt.datetime | None
    sent: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "event": self.event.value,
            "lineage": self.lineage,
            "node": self.node,
            "level": self.level,
            "title": self.title,
            "since": _iso(self.first_seen_at),
            "last_sent_at": _iso(self.last_sent_at),
            "sent": self.sent,
        }


@dataclass(frozen=True, slots=True)
class AlertSettings:
    repeat: dt.timedelta = DEFAULT_REPEAT  # an open alert is sent again after this long
    expiry_days: tuple[int, ...] = ()  # empty: alert past 2/3 and 5/6 of the lifetime; else at these days left

    def to_dict(self) -> dict[str, Any]:
        return {
            "repeat_hours": self.repeat.total_seconds() / 3600,
            "expiry": list(self.expiry_days) if self.expiry_days else "two thirds and five sixths of the lifetime",
        }


@dataclass(frozen=True, slots=True)
class SentRecord:
    """An alert sent (or tried), as the audit trail keeps it: where it got, shown masked."""

    at: dt.datetime
    kind: str
    event: str
    key: str
    title: str
    delivered: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]  # (destination shown masked, why)

    @property
    def lineage(self) -> str | None:
        """The lineage the alert is about (None: a test message)."""
        parts = self.key.split(":")
        return parts[1] if self.event != "test" and len(parts) > 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": _iso(self.at),
            "kind": self.kind,
            "event": self.event,
            "key": self.key,
            "lineage": self.lineage,
            "title": self.title,
            "delivered": list(self.delivered),
            "failed": [{"url": url, "error": error} for url, error in self.failed],
        }


def _sent_record(at: dt.datetime, detail: dict[str, Any]) -> SentRecord:
    failed = [f for f in detail.get("failed") or () if isinstance(f, dict)]
    return SentRecord(
        at, str(detail.get("kind", "")), str(detail.get("event", "")), str(detail.get("key", "")),
        str(detail.get("title", "")), tuple(str(d) for d in detail.get("delivered") or ()),
        tuple((str(f.get("url", "")), str(f.get("error") or "")) for f in failed),
    )  # fmt: skip


def _aad(destination_id: int) -> bytes:
    # binds a sealed URL to its row: a ciphertext copied to another row does not open
    return f"certfleet/alert-url/v1/destination={destination_id}".encode()


def _destination(row: AlertDestinationRow) -> Destination:
    events = tuple(Event(e) for e in row.events if e in Event._value2member_map_)
    return Destination(row.id, row.shown, events, row.created_at)


def _open(row: AlertStateRow) -> OpenAlert:
    return OpenAlert(
        row.key, Event(row.event), row.lineage, row.node, row.level, row.title, row.first_seen_at, row.last_sent_at,
        row.sent,
    )  # fmt: skip


@dataclass
class _Send:
    kind: Kind
    event: Event | None  # None: a test message
    key: str
    title: str
    body: str
    deliveries: list[Delivery] = field(default_factory=list)


class Alerts:
    """Alert destinations, the alerts open, and sending them (see the module's words)."""

    def __init__(self, store: Store, *, notifier: Notifier | None = None, clock: Clock = utc_now) -> None:
        self.store = store
        self.clock = clock
        self._notifier = notifier
        self._ledger = Ledger(store, clock=clock)

    @property
    def notifier(self) -> Notifier:
        if self._notifier is None:
            self._notifier = AppriseNotifier()
        return self._notifier

    # -- destinations ---------------------------------------------------------------------------

    def add(self, url: str, events: Sequence[Event] = ()) -> Destination:
        """A destination for ``events`` (every event when none is given); the URL is sealed."""
        checker = self.notifier.check if isinstance(self.notifier, AppriseNotifier) else AppriseNotifier().check
        masked = checker(url)
        vault = self.store.vault()
        with self.store.session(write=True) as s:
            count = s.scalar(select(func.count()).select_from(AlertDestinationRow)) or 0
            if count >= MAX_DESTINATIONS:
                raise InputError(f"there are {count} alert destinations already; remove one first")
            row = AlertDestinationRow(
                url_sealed=b"", shown=masked[:1024], events=[e.value for e in events], created_at=self.clock()
            )
            s.add(row)
            s.flush()
            row.url_sealed = vault.seal(url.encode("utf-8"), _aad(row.id))
            added = _destination(row)
        self.store.audit(
            "alert.add", {"destination": added.id, "url": added.shown, "events": [e.value for e in events]}
        )
        return added

    def destinations(self) -> list[Destination]:
        with self.store.session() as s:
            return [_destination(r) for r in s.scalars(select(AlertDestinationRow).order_by(AlertDestinationRow.id))]

    def remove(self, destination: int) -> Destination:
        with self.store.session(write=True) as s:
            row = s.get(AlertDestinationRow, destination)
            if row is None:
                raise InputError(f"no alert destination {destination}", hint="`certfleet alert list` shows them")
            gone = _destination(row)
            s.delete(row)
        self.store.audit("alert.remove", {"destination": gone.id, "url": gone.shown})
        return gone

    def _urls(self, event: Event | None) -> list[tuple[Destination, str]]:
        vault = self.store.vault()
        with self.store.session() as s:
            rows = list(s.scalars(select(AlertDestinationRow).order_by(AlertDestinationRow.id)))
            found = [(_destination(r), r.url_sealed) for r in rows]
        return [
            (d, vault.open(sealed, _aad(d.id)).decode("utf-8"))
            for d, sealed in found
            if event is None or d.wants(event)
        ]

    def _deliver(self, sending: _Send, targets: Sequence[tuple[Destination, str]]) -> None:
        for destination, url in targets:
            error = self.notifier.send(url, sending.title, sending.body)
            sending.deliveries.append(Delivery(destination.id, destination.shown, error is None, error))

    def test(self, destination: int | None = None) -> list[Delivery]:
        """Send a test message to one destination, or to every one."""
        targets = self._urls(None)
        if destination is not None:
            targets = [(d, u) for d, u in targets if d.id == destination]
            if not targets:
                raise InputError(f"no alert destination {destination}", hint="`certfleet alert list` shows them")
        if not targets:
            raise InputError("no alert destination yet", hint="`certfleet alert add URL`")
        now = self.clock()
        sending = _Send(
            Kind.TEST, None, "test", "certfleet: a test alert",
            f"A test of this alert destination, sent by certfleet on {socket.gethostname()}"
            f" at {now:%Y-%m-%d %H:%M} UTC. Nothing is wrong.",
        )  # fmt: skip
        self._deliver(sending, targets)
        self._log(sending, now)
        return sending.deliveries

    # -- settings --------------------------------------------------------------------------------

    def settings(self) -> AlertSettings:
        hours = self._ledger.setting("alert.repeat_hours")
        days = self._ledger.setting("alert.expiry_days") or []
        repeat = dt.timedelta(hours=float(hours)) if isinstance(hours, int | float) and hours > 0 else DEFAULT_REPEAT
        return AlertSettings(
            repeat, tuple(sorted({int(d) for d in days if isinstance(d, int) and d > 0}, reverse=True))
        )

    def set_settings(
        self, *, repeat_hours: float | None = None, expiry_days: Sequence[int] | None = None
    ) -> AlertSettings:
        if repeat_hours is not None:
            if not 0 < repeat_hours <= 24 * 365:
                raise InputError("the repeat interval must be between 0 and 8760 hours")
            self._ledger.set_setting("alert.repeat_hours", repeat_hours)
        if expiry_days is not None:
            if any(d <= 0 or d > 3650 for d in expiry_days) or len(expiry_days) > 4:
                raise InputError("give up to 4 numbers of days between 1 and 3650")
            self._ledger.set_setting("alert.expiry_days", sorted(set(expiry_days), reverse=True))
        settings = self.settings()
        self.store.audit("alert.settings", settings.to_dict())
        return settings

    # -- open alerts and sending -------------------------------------------------------------------

    def open_alerts(self) -> list[OpenAlert]:
        with self.store.session() as s:
            rows = s.scalars(
                select(AlertStateRow).where(AlertStateRow.resolved_at.is_(None)).order_by(AlertStateRow.id)
            )
            return [_open(r) for r in rows]

    def sent_counts(self) -> dict[tuple[str, str], int]:
        """Alerts delivered to at least one destination, by (event, kind): what the metrics count."""
        with self.store.session() as s:
            rows = s.execute(
                select(AlertLogRow.event, AlertLogRow.kind, func.count())
                .where(AlertLogRow.delivered > 0)
                .group_by(AlertLogRow.event, AlertLogRow.kind)
            ).all()
        return {(str(event), str(kind)): int(count) for event, kind, count in rows}

    def sent(self, limit: int = 50) -> list[SentRecord]:
        """The alerts sent (or tried), newest first: the audit trail's words for them."""
        return [_sent_record(e.at, e.detail) for e in self.store.audit_log(limit=limit, action=AUDIT_SENT)]

    def _log(self, sending: _Send, at: dt.datetime) -> None:
        delivered = [d.shown for d in sending.deliveries if d.ok]
        failed = [{"url": d.shown, "error": d.error} for d in sending.deliveries if not d.ok]
        if not sending.deliveries:
            return
        event = sending.event.value if sending.event is not None else "test"
        with self.store.session(write=True) as s:
            s.add(
                AlertLogRow(
                    at=at, event=event, key=sending.key[:256], kind=sending.kind.value,
                    delivered=len(delivered), failed=len(failed),
                )
            )  # fmt: skip
        self.store.audit(
            AUDIT_SENT,
            {
                "kind": sending.kind.value,
                "event": event,
                "key": sending.key,
                "title": sending.title,
                "delivered": delivered,
                "failed": failed,
            },
        )

    def dispatch(self, conditions: Sequence[Condition], scope: Scope, *, dry_run: bool = False) -> list[AlertSent]:
        """Send what ``conditions`` call for against the open alerts (see the module's words).
        ``dry_run``: say what would be sent, send and change nothing."""
        now = self.clock()
        repeat = self.settings().repeat
        wanted: dict[str, Condition] = {}
        for c in conditions:
            if c.key not in wanted or c.level > wanted[c.key].level:
                wanted[c.key] = c
        with self.store.session() as s:
            states = {
                r.key: _open(r) for r in s.scalars(select(AlertStateRow).where(AlertStateRow.resolved_at.is_(None)))
            }
        plan: list[tuple[_Send, Condition | None]] = []
        for key, c in wanted.items():
            state = states.get(key)
            title = f"certfleet: {c.title}"
            if state is None or c.level > state.level or state.last_sent_at is None:
                plan.append((_Send(Kind.ALERT, c.event, key, title, c.body), c))
            elif now - state.last_sent_at >= repeat:
                since = f"{state.first_seen_at:%Y-%m-%d %H:%M} UTC"
                plan.append(
                    (_Send(Kind.REPEAT, c.event, key, f"certfleet: still: {c.title} (since {since})", c.body), c)
                )
            else:
                plan.append((_Send(Kind.ALERT, c.event, key, title, c.body), None))  # seen, nothing sent
        for key, state in states.items():
            if key not in wanted and scope.covers(state.event, state.lineage, state.node):
                body = f"Resolved at {now:%Y-%m-%d %H:%M} UTC: {state.title}."
                plan.append((_Send(Kind.RESOLVED, state.event, key, f"certfleet: resolved: {state.title}", body), None))
        if dry_run:
            return [
                AlertSent(p.kind, p.event, p.key, p.title, p.body, now)
                for p, c in plan
                if p.event is not None and (c is not None or p.kind is Kind.RESOLVED)
            ]
        sent: list[AlertSent] = []
        for sending, condition in plan:
            is_news = condition is not None or sending.kind is Kind.RESOLVED
            state = states.get(sending.key)
            if sending.kind is Kind.RESOLVED and state is not None and state.sent == 0:
                is_news = False  # nobody was told it began: nobody is told it ended
            if is_news and sending.event is not None:
                self._deliver(sending, self._urls(sending.event))
                self._log(sending, now)
                sent.append(AlertSent(sending.kind, sending.event, sending.key, sending.title, sending.body, now,
                                      tuple(sending.deliveries)))  # fmt: skip
            self._remember(sending, condition or wanted.get(sending.key), now)
        return sent

    def _remember(self, sending: _Send, condition: Condition | None, now: dt.datetime) -> None:
        delivered = any(d.ok for d in sending.deliveries)
        with self.store.session(write=True) as s:
            row = s.scalar(select(AlertStateRow).where(AlertStateRow.key == sending.key))
            if sending.kind is Kind.RESOLVED:
                if row is not None:
                    row.resolved_at = now
                return
            if condition is None:
                return
            if row is None or row.resolved_at is not None:
                if row is None:
                    row = AlertStateRow(key=sending.key[:256])
                    s.add(row)
                row.first_seen_at, row.resolved_at, row.sent, row.last_sent_at = now, None, 0, None
            row.event, row.lineage, row.node = condition.event.value, condition.lineage, condition.node
            row.level, row.title, row.message = condition.level, condition.title[:512], condition.body
            row.last_seen_at = now
            if delivered:
                row.last_sent_at = now
                row.sent = (row.sent or 0) + 1
