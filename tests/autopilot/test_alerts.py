"""Alerts through a notifier seam: each event once, again after the repeat interval, "resolved"
when it clears, and never a secret of a URL in what is shown or audited. (Delivery by real SMTP
and a real webhook is tests/autopilot/test_alert_delivery.py.)"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from certfleet.autopilot.alerts import Alerts, Condition, Event, Kind, Scope, parse_events
from certfleet.errors import InputError
from certfleet.store import Store

START = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
SECRET = "hunter2-secret-pw"


@dataclass
class Clock:
    now: dt.datetime = START

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Recorder:
    """A notifier that keeps what it was asked to send (and fails for URLs holding ``down``)."""

    sent: list[tuple[str, str, str]] = field(default_factory=list)

    def send(self, url: str, title: str, body: str) -> str | None:
        if "down" in url:
            return "the service did not answer"
        self.sent.append((url, title, body))
        return None

    def titles(self) -> list[str]:
        return [t for _, t, _ in self.sent]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.init(tmp_path / "home") as s:
        yield s


def failed(lineage: str = "web") -> Condition:
    return Condition(Event.RENEWAL_FAILED, lineage, f"renewal of {lineage} failed", "the CA said: no")


def everywhere(*events: Event) -> Scope:
    return Scope(frozenset((e, "web", None) for e in events))


def test_each_event_once_then_after_the_interval_then_resolved(store: Store) -> None:
    clock, recorder = Clock(), Recorder()
    alerts = Alerts(store, notifier=recorder, clock=clock)
    alerts.add(f"json://user:{SECRET}@127.0.0.1:9/hook")
    scope = everywhere(Event.RENEWAL_FAILED)

    first = alerts.dispatch([failed()], scope)
    assert [(a.kind, a.key) for a in first] == [(Kind.ALERT, "renewal-failed:web")]
    assert first[0].delivered and recorder.titles() == ["certfleet: renewal of web failed"]

    clock.now += dt.timedelta(hours=23)
    assert alerts.dispatch([failed()], scope) == []  # still open, inside the repeat interval
    clock.now += dt.timedelta(hours=1)
    again = alerts.dispatch([failed()], scope)
    assert [a.kind for a in again] == [Kind.REPEAT] and "still" in again[0].title

    clock.now += dt.timedelta(hours=1)
    assert alerts.dispatch([], Scope()) == []  # not looked for: stays open
    assert [a.key for a in alerts.open_alerts()] == ["renewal-failed:web"]
    resolved = alerts.dispatch([], scope)
    assert [a.kind for a in resolved] == [Kind.RESOLVED] and resolved[0].title.startswith("certfleet: resolved:")
    assert alerts.open_alerts() == []
    assert alerts.dispatch([], scope) == []  # resolved once

    again = alerts.dispatch([failed()], scope)  # it comes back: a new alert
    assert [a.kind for a in again] == [Kind.ALERT]
    assert len(recorder.sent) == 4
    assert alerts.sent_counts() == {("renewal-failed", "alert"): 2, ("renewal-failed", "repeat"): 1,
                                    ("renewal-failed", "resolved"): 1}  # fmt: skip
    audited = store.audit_log(action="alert.sent")
    assert len(audited) == 4 and all(e.detail["event"] == "renewal-failed" for e in audited)


def test_a_higher_stage_is_sent_at_once_and_a_node_is_resolved_only_where_looked(store: Store) -> None:
    recorder = Recorder()
    alerts = Alerts(store, notifier=recorder, clock=Clock())
    alerts.add("json://127.0.0.1:9/hook")
    two_thirds = Condition(Event.EXPIRING, "web", "past two thirds", "…", level=1)
    five_sixths = Condition(Event.EXPIRING, "web", "past five sixths", "…", level=2)
    scope = everywhere(Event.EXPIRING)
    assert len(alerts.dispatch([two_thirds], scope)) == 1
    assert [a.title for a in alerts.dispatch([five_sixths], scope)] == ["certfleet: past five sixths"]

    gw = Condition(Event.DEPLOY_FAILED, "web", "deploy to gw failed", "…", node="gw")
    main = Condition(Event.DEPLOY_FAILED, "web", "deploy to main failed", "…", node="main")
    assert len(alerts.dispatch([gw, main], Scope())) == 2
    only_gw = Scope(frozenset({(Event.DEPLOY_FAILED, "web", "gw")}))
    assert [a.key for a in alerts.dispatch([], only_gw)] == ["deploy-failed:web:gw"]
    assert {a.key for a in alerts.open_alerts()} == {"expiring:web", "deploy-failed:web:main"}


def test_destinations_choose_their_events_and_a_failed_delivery_is_tried_again(store: Store) -> None:
    recorder = Recorder()
    alerts = Alerts(store, notifier=recorder, clock=Clock())
    down = alerts.add("json://down.example.test/hook")
    scope = everywhere(Event.RENEWAL_FAILED, Event.MANUAL_WAITING)
    first = alerts.dispatch([failed()], scope)
    assert not first[0].delivered and first[0].deliveries[0].error == "the service did not answer"
    assert [e.detail["failed"] for e in store.audit_log(action="alert.sent")] == [
        [{"url": down.shown, "error": "the service did not answer"}]
    ]
    alerts.remove(down.id)
    alerts.add("json://127.0.0.1:9/only-manual", parse_events(["manual-waiting"]))
    alerts.add("json://127.0.0.1:9/all")
    second = alerts.dispatch([failed()], scope)  # never delivered: sent again at the next pass
    assert [d.shown.split("/")[-1].split("?")[0] for d in second[0].deliveries] == ["all"]
    assert alerts.dispatch([failed()], scope) == []


def test_no_secret_of_a_url_is_shown_stored_in_clear_or_audited(store: Store, tmp_path: Path) -> None:
    alerts = Alerts(store, notifier=Recorder(), clock=Clock())
    added = alerts.add(f"mailtos://ops:{SECRET}@mail.example.test?to=pki@example.test")
    slack = alerts.add("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ")
    assert SECRET not in added.shown and "TIiajkdnlazkcOXrIdevi7FQ" not in slack.shown
    assert added.shown.startswith("mailtos://")
    listed = [d.shown for d in alerts.destinations()]
    assert listed == [added.shown, slack.shown]
    database = (tmp_path / "home" / "certfleet.db").read_bytes()
    assert SECRET.encode() not in database and b"TIiajkdnlazkcOXrIdevi7FQ" not in database
    alerts.remove(added.id)
    for entry in store.audit_log(limit=50):
        assert SECRET not in str(entry.detail) and "TIiajkdnlazkcOXrIdevi7FQ" not in str(entry.detail)


def test_a_url_apprise_does_not_know_is_refused_without_echoing_it(store: Store) -> None:
    with pytest.raises(InputError) as refused:
        Alerts(store, clock=Clock()).add(f"nosuchservice://user:{SECRET}@host.example/x")
    assert SECRET not in str(refused.value) and "host.example" in str(refused.value)
    with pytest.raises(InputError, match="unknown event"):
        parse_events(["renewal-failed,nope"])


def test_the_repeat_interval_and_expiry_stages_are_settings(store: Store) -> None:
    alerts = Alerts(store, notifier=Recorder(), clock=Clock())
    assert alerts.settings().repeat == dt.timedelta(hours=24) and alerts.settings().expiry_days == ()
    changed = alerts.set_settings(repeat_hours=2, expiry_days=[7, 14])
    assert changed.repeat == dt.timedelta(hours=2) and changed.expiry_days == (14, 7)
    with pytest.raises(InputError):
        alerts.set_settings(repeat_hours=0)
