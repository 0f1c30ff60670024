"""Alerts delivered by Apprise to a real SMTP server (aiosmtpd) and a webhook receiver, both on
loopback: every event once, again after the repeat interval, and a "resolved" message."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certfleet.autopilot.alerts import Alerts, Condition, Event, Kind, Scope
from certfleet.store import Store
from support.receivers import SmtpSink, WebhookSink

pytestmark = pytest.mark.peer  # an SMTP server and a web server


@dataclass
class Clock:
    now: dt.datetime = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def webhook() -> Iterator[WebhookSink]:
    with WebhookSink() as sink:
        yield sink


CONDITIONS = [
    Condition(Event.RENEWAL_FAILED, "web", "renewal of web failed", "pebble: the CA did not answer"),
    Condition(Event.DEPLOY_ROLLED_BACK, "web", "deploy of web to gw was rolled back", "probe: old chain", node="gw"),
    Condition(Event.DEPLOY_FAILED, "web", "deploy of web to edge failed", "connect: refused", node="edge"),
    Condition(Event.SERVING_OTHER, "web", "main serves an older version", "version 3, wants 4", node="main"),
    Condition(Event.EXPIRING, "web", "the certificate of web is past two thirds of its lifetime", "…", level=1),
    Condition(Event.MANUAL_WAITING, "shop", "lineage shop waits for a certificate to be bought", "CSR…"),
    Condition(Event.REVOKED_SERVED, "web", "gw serves a revoked certificate", "version 2", node="gw"),
]


def test_each_event_once_then_repeated_then_resolved(tmp_path: Path, smtp: SmtpSink, webhook: WebhookSink) -> None:
    clock = Clock()
    with Store.init(tmp_path / "home") as store:
        alerts = Alerts(store, clock=clock)  # the real notifier: Apprise
        mail = alerts.add(smtp.url)
        hook = alerts.add(webhook.url)
        assert mail.shown.startswith("mailto://127.0.0.1:") and hook.shown.startswith("json://127.0.0.1:")
        assert [d.ok for d in alerts.test()] == [True, True]
        assert smtp.subjects() == ["certfleet: a test alert"] and webhook.titles() == ["certfleet: a test alert"]
        scope = Scope(frozenset((c.event, c.lineage, None) for c in CONDITIONS))

        sent = alerts.dispatch(CONDITIONS, scope)
        titles = [f"certfleet: {c.title}" for c in CONDITIONS]
        assert [a.kind for a in sent] == [Kind.ALERT] * 7 and all(len(a.deliveries) == 2 for a in sent)
        assert all(d.ok for a in sent for d in a.deliveries), [d.error for a in sent for d in a.deliveries]
        assert smtp.subjects()[1:] == titles and webhook.titles()[1:] == titles
        assert "the CA did not answer" in smtp.bodies()[1] and webhook.posts[1]["message"].startswith("pebble:")

        clock.now += dt.timedelta(hours=12)
        assert alerts.dispatch(CONDITIONS, scope) == []  # each event once
        assert len(smtp.messages) == 8 and len(webhook.posts) == 8

        clock.now += dt.timedelta(hours=12)  # the repeat interval, 24 h, has passed
        again = alerts.dispatch(CONDITIONS, scope)
        assert [a.kind for a in again] == [Kind.REPEAT] * 7
        assert all(
            s.startswith("certfleet: still: ") and "(since 2030-01-01 00:00 UTC)" in s for s in smtp.subjects()[8:]
        )

        clock.now += dt.timedelta(hours=1)
        cleared = alerts.dispatch([], scope)
        assert [a.kind for a in cleared] == [Kind.RESOLVED] * 7
        assert webhook.titles()[15:] == [f"certfleet: resolved: {c.title}" for c in CONDITIONS]
        assert len(smtp.messages) == 22 and alerts.open_alerts() == []
        assert alerts.dispatch([], scope) == []

        audited = store.audit_log(action="alert.sent", limit=100)
        assert len(audited) == 22  # the test, 7 alerts, 7 repeats, 7 resolved
        assert {tuple(e.detail["delivered"]) for e in audited} == {(mail.shown, hook.shown)}
        counts = alerts.sent_counts()
        assert counts[("renewal-failed", "alert")] == 1 and counts[("expiring", "repeat")] == 1
        assert counts[("revoked-served", "resolved")] == 1 and counts[("test", "test")] == 1


def test_a_receiver_that_is_down_is_reported_and_tried_again(tmp_path: Path, webhook: WebhookSink) -> None:
    clock = Clock()
    with Store.init(tmp_path / "home") as store:
        alerts = Alerts(store, clock=clock)
        alerts.add("json://127.0.0.1:1/nobody-listens")
        alerts.add(webhook.url)
        (sent,) = alerts.dispatch(CONDITIONS[:1], Scope())
        assert [d.ok for d in sent.deliveries] == [False, True]
        assert sent.deliveries[0].error
        assert len(webhook.posts) == 1
