"""When a lineage renews: the plan from its facts, with no clock, store or network."""

from __future__ import annotations

import datetime as dt

import pytest

from certfleet.renewal import (
    Issuing,
    Reason,
    RenewalFacts,
    RenewalWindow,
    jitter_for,
    plan_renewal,
    retry_delay,
)

NOW = dt.datetime(2030, 1, 10, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def facts(issuing: Issuing = Issuing.ACME, *, issued: dt.datetime, days: float, **kw: object) -> RenewalFacts:
    return RenewalFacts("web", issuing, not_before=issued, not_after=issued + DAY * days, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("days", "share", "reason"),
    [(90, 1 / 3, Reason.THIRD_LEFT), (47, 1 / 3, Reason.THIRD_LEFT), (6, 1 / 2, Reason.HALF_LEFT)],
)
def test_a_third_of_the_lifetime_left_or_half_under_ten_days(days: int, share: float, reason: Reason) -> None:
    f = facts(issued=NOW - DAY, days=days)
    plan = plan_renewal(f, now=NOW)
    assert plan.reason is reason and not plan.due
    assert plan.at == f.not_after - DAY * days * share  # no jitter: exactly the share
    assert plan_renewal(f, now=plan.at + dt.timedelta(seconds=1)).due
    late = plan_renewal(f, now=f.not_after - dt.timedelta(hours=1))
    assert late.due and late.next_attempt == f.not_after - dt.timedelta(hours=1)


def test_jitter_only_makes_it_earlier_by_up_to_a_tenth_of_the_share() -> None:
    base = plan_renewal(facts(issued=NOW, days=90), now=NOW).at
    early = plan_renewal(facts(issued=NOW, days=90, jitter=0.999), now=NOW).at
    assert base is not None and early is not None
    assert dt.timedelta(0) < base - early <= DAY * 3  # 30 days' tenth


def test_jitter_is_stable_per_certificate_and_spread_over_certificates() -> None:
    assert jitter_for("web", "ab" * 32) == jitter_for("web", "ab" * 32)
    draws = [jitter_for("web", f"{i:064x}") for i in range(2000)]
    assert all(0 <= d < 1 for d in draws)
    assert 0.45 < sum(draws) / len(draws) < 0.55
    assert sum(d < 0.1 for d in draws) > 150 and sum(d > 0.9 for d in draws) > 150


def test_the_cas_window_wins_with_a_point_in_it() -> None:
    window = RenewalWindow(NOW + DAY, NOW + DAY * 3)
    f = facts(issued=NOW - DAY * 60, days=90, window=window, jitter=0.5)
    plan = plan_renewal(f, now=NOW)
    assert plan.reason is Reason.ARI_WINDOW and not plan.due
    assert plan.at == NOW + DAY * 2
    assert plan_renewal(f, now=NOW + DAY * 2).due
    assert "ARI" in plan.detail and plan.window == window


def test_a_window_in_the_past_means_now_and_says_why() -> None:
    window = RenewalWindow(NOW - DAY * 2, NOW - DAY, "https://ca.example/incident/42")
    plan = plan_renewal(facts(issued=NOW - DAY, days=90, window=window), now=NOW)
    assert plan.due and plan.reason is Reason.ARI_NOW
    assert "https://ca.example/incident/42" in plan.detail


def test_a_manual_issuer_ignores_a_window() -> None:
    window = RenewalWindow(NOW - DAY * 2, NOW - DAY)
    plan = plan_renewal(facts(Issuing.MANUAL, issued=NOW - DAY, days=365, window=window), now=NOW)
    assert plan.reason is Reason.MANUAL_REMINDER and not plan.due and plan.window is None


@pytest.mark.parametrize(
    ("days", "manual_days", "ahead"), [(365, 30, 365 / 3), (47, 30, 30), (200, 90, 90), (20, 3, 20 / 3)]
)
def test_a_manual_reminder_n_days_ahead_never_later_than_a_third_left(
    days: int, manual_days: int, ahead: float
) -> None:
    f = facts(Issuing.MANUAL, issued=NOW, days=days, manual_days=manual_days)
    plan = plan_renewal(f, now=NOW)
    assert plan.at == f.not_after - DAY * ahead
    assert "reminder" in plan.detail


@pytest.mark.parametrize("issuing", [Issuing.ACME, Issuing.MANUAL])
def test_revoked_or_no_certificate_is_due_at_once(issuing: Issuing) -> None:
    revoked = plan_renewal(facts(issuing, issued=NOW, days=90, revoked=True), now=NOW)
    assert revoked.due and revoked.reason is Reason.REVOKED
    none = plan_renewal(RenewalFacts("web", issuing), now=NOW)
    assert none.due and none.reason is Reason.NO_CERTIFICATE


def test_no_issuer_is_never_due_unless_forced() -> None:
    plan = plan_renewal(facts(Issuing.NONE, issued=NOW - DAY * 89, days=90), now=NOW)
    assert not plan.due and plan.reason is Reason.NO_ISSUER and plan.at is None
    assert "--issuer" in plan.detail
    assert plan_renewal(facts(Issuing.NONE, issued=NOW, days=90), now=NOW, force=True).due


def test_force_renews_a_fresh_certificate() -> None:
    plan = plan_renewal(facts(issued=NOW, days=90), now=NOW, force=True)
    assert plan.due and plan.reason is Reason.FORCED


def test_a_failure_backs_off_doubling_and_honours_retry_after() -> None:
    due = facts(issued=NOW - DAY * 70, days=90)
    first = plan_renewal(RenewalFacts(**{**_fields(due), "failures": 1, "last_failure": NOW}), now=NOW)
    assert not first.due and first.backing_off and first.next_attempt == NOW + dt.timedelta(minutes=5)
    third = plan_renewal(RenewalFacts(**{**_fields(due), "failures": 3, "last_failure": NOW}), now=NOW)
    assert third.next_attempt == NOW + dt.timedelta(minutes=20)
    assert "3 failed tries in a row" in third.detail
    later = NOW + dt.timedelta(hours=2)
    told = plan_renewal(
        RenewalFacts(**{**_fields(due), "failures": 1, "last_failure": NOW, "retry_after": later}), now=NOW
    )
    assert told.next_attempt == later and "the CA asked to wait" in told.detail
    assert plan_renewal(RenewalFacts(**{**_fields(due), "failures": 1, "last_failure": NOW}), now=NOW + DAY).due
    forced = plan_renewal(RenewalFacts(**{**_fields(due), "failures": 9, "last_failure": NOW}), now=NOW, force=True)
    assert forced.due


def test_the_wait_is_capped_and_shrinks_as_the_certificate_runs_out() -> None:
    assert retry_delay(0) == dt.timedelta(0)
    assert retry_delay(1) == dt.timedelta(minutes=5)
    assert retry_delay(40) == dt.timedelta(hours=6)
    assert retry_delay(40, dt.timedelta(hours=8)) == dt.timedelta(hours=1)
    assert retry_delay(40, dt.timedelta(minutes=-5)) == dt.timedelta(minutes=5)


def test_the_plan_serializes() -> None:
    plan = plan_renewal(facts(issued=NOW, days=6, window=RenewalWindow(NOW + DAY, NOW + DAY * 2)), now=NOW)
    data = plan.to_dict()
    assert data["reason"] == "ari-window" and data["window"]["start"] == (NOW + DAY).isoformat()
    assert data["issuing"] == "acme" and data["due"] is False


def _fields(f: RenewalFacts) -> dict[str, object]:
    return {name: getattr(f, name) for name in f.__slots__}  # type: ignore[attr-defined]
