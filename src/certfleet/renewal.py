"""When a lineage renews: the facts of its active certificate in, a frozen plan with its reason out.

The rules, in the order they apply:

* ``--force``: now.
* No certificate yet, or the last one was revoked: now (a manual lineage gets its CSR now).
* An ACME lineage whose CA offers ACME Renewal Information (RFC 9773): a point in the CA's
  suggested window, the same point at every pass for one certificate (drawn from the lineage and
  the certificate's fingerprint, uniform over the window as the RFC asks); a window that has
  ended already means the CA wants the certificate replaced now (it is about to revoke it).
* Any other ACME lineage: when a third of the lifetime is left, or half of it for a lifetime
  under 10 days, made earlier by up to a tenth of that share so that many certificates issued
  together do not all renew in the same minute.
* A manual lineage: a reminder (with a fresh key and CSR made) a number of days ahead (30 by
  default), never later than when a third of the lifetime is left.

A lineage that failed to renew waits before the next try: 5 minutes, doubling up to 6 hours, never
longer than an eighth of the time its certificate has left, and never before the CA's
``Retry-After``.

Pure: no clock, no store, no network. ``now`` and the facts are passed in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "MANUAL_DAYS",
    "Issuing",
    "Reason",
    "RenewalFacts",
    "RenewalPlan",
    "RenewalWindow",
    "jitter_for",
    "plan_renewal",
    "retry_delay",
]

MANUAL_DAYS = 30
SHORT_LIFETIME = dt.timedelta(days=10)  # under this, renew at half the lifetime, not a third
FIRST_RETRY = dt.timedelta(minutes=5)
LONGEST_RETRY = dt.timedelta(hours=6)


class Issuing(StrEnum):
    """How a lineage gets its certificates: its first usable issuer."""

    ACME = "acme"
    MANUAL = "manual"
    NONE = "none"  # no issuer: certfleet cannot renew it (imports still work)


class Reason(StrEnum):
    """Why a lineage renews when it does."""

    FORCED = "forced"
    NO_CERTIFICATE = "no-certificate"
    REVOKED = "revoked"
    ARI_NOW = "ari-now"  # the CA's window has ended: it asks for the certificate to be replaced now
    ARI_WINDOW = "ari-window"
    THIRD_LEFT = "third-left"
    HALF_LEFT = "half-left"
    MANUAL_REMINDER = "manual-reminder"
    NO_ISSUER = "no-issuer"


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _when(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _span(value: dt.timedelta) -> str:
    days = value.total_seconds() / 86400
    if days >= 2:
        return f"{days:.0f}-day"
    hours = value.total_seconds() / 3600
    return f"{hours:.0f}-hour" if hours >= 2 else f"{value.total_seconds() / 60:.0f}-minute"


@dataclass(frozen=True, slots=True)
class RenewalWindow:
    """The CA's suggested renewal window for one certificate (RFC 9773 ``suggestedWindow``)."""

    start: dt.datetime
    end: dt.datetime
    explanation_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"start": _iso(self.start), "end": _iso(self.end), "explanation_url": self.explanation_url}


@dataclass(frozen=True, slots=True)
class RenewalFacts:
    """What the plan is made of. ``not_before``/``not_after``: the active certificate's (None:
    no certificate); ``revoked``: the last certificate was revoked; ``window``: the CA's renewal
    window for the active certificate, when its CA offers one; ``failures``: tries that failed in
    a row, the last at ``last_failure``; ``retry_after``: not before this (the CA said so);
    ``jitter``: in [0, 1), from :func:`jitter_for`."""

    lineage: str
    issuing: Issuing
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    revoked: bool = False
    window: RenewalWindow | None = None
    failures: int = 0
    last_failure: dt.datetime | None = None
    retry_after: dt.datetime | None = None
    manual_days: int = MANUAL_DAYS
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")
        if self.manual_days < 0:
            raise ValueError("manual_days must not be negative")


@dataclass(frozen=True, slots=True)
class RenewalPlan:
    """When ``lineage`` renews and why. ``at``: when the rule makes it due (None: never);
    ``due``: act now; ``next_attempt``: when a pass will act (``at``, or later after a failure)."""

    lineage: str
    issuing: Issuing
    reason: Reason
    due: bool
    at: dt.datetime | None
    next_attempt: dt.datetime | None
    detail: str
    not_after: dt.datetime | None = None
    window: RenewalWindow | None = None
    failures: int = 0
    backing_off: bool = False  # due, but waiting after a failure (or the CA's Retry-After)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "issuing": self.issuing.value,
            "reason": self.reason.value,
            "due": self.due,
            "at": _iso(self.at),
            "next_attempt": _iso(self.next_attempt),
            "detail": self.detail,
            "not_after": _iso(self.not_after),
            "window": self.window.to_dict() if self.window is not None else None,
            "failures": self.failures,
            "backing_off": self.backing_off,
        }


def jitter_for(lineage: str, fingerprint: str | None) -> float:
    """A number in [0, 1), uniform over certificates and the same at every pass for one certificate
    of one lineage: a timer that runs every hour must not draw a new point each time (it would
    renew at the earliest of them)."""
    digest = hashlib.sha256(f"{lineage}\0{fingerprint or ''}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def retry_delay(failures: int, left: dt.timedelta | None = None) -> dt.timedelta:
    """How long to wait after ``failures`` failed tries in a row (``left``: what the certificate
    has left; the wait shrinks as it runs out)."""
    if failures <= 0:
        return dt.timedelta(0)
    delay: dt.timedelta = min(FIRST_RETRY * 2 ** min(failures - 1, 16), LONGEST_RETRY)
    if left is not None:
        delay = min(delay, max(FIRST_RETRY, left / 8))
    return delay


def _by_lifetime(
    facts: RenewalFacts, not_before: dt.datetime, not_after: dt.datetime
) -> tuple[Reason, dt.datetime, str]:
    lifetime = max(not_after - not_before, dt.timedelta(seconds=1))
    if facts.issuing is Issuing.MANUAL:
        ahead = max(dt.timedelta(days=facts.manual_days), lifetime / 3)
        at = not_after - ahead
        days = ahead.total_seconds() / 86400
        return (
            Reason.MANUAL_REMINDER,
            at,
            f"a reminder {days:.0f} days before it expires ({_when(not_after)}), with a new key and CSR made",
        )
    short = lifetime < SHORT_LIFETIME
    share = lifetime / 2 if short else lifetime / 3
    at = not_after - share - share * facts.jitter / 10
    words = "half" if short else "a third"
    return (
        Reason.HALF_LEFT if short else Reason.THIRD_LEFT,
        at,
        f"when {words} of its {_span(lifetime)} lifetime is left ({_when(at)}, expires {_when(not_after)})",
    )


def plan_renewal(facts: RenewalFacts, *, now: dt.datetime, force: bool = False) -> RenewalPlan:
    """The plan for one lineage at ``now`` (see the module's words for the rules)."""

    def made(reason: Reason, at: dt.datetime | None, detail: str, **kw: Any) -> RenewalPlan:
        due = kw.pop("due", at is not None and at <= now)
        return RenewalPlan(
            facts.lineage, facts.issuing, reason, due, at, kw.pop("next_attempt", at), detail,
            not_after=facts.not_after, window=window, failures=facts.failures, **kw,
        )  # fmt: skip

    window = facts.window if facts.issuing is Issuing.ACME else None
    if facts.issuing is Issuing.NONE and not force:
        return made(Reason.NO_ISSUER, None, f"no issuer: `certfleet lineage set {facts.lineage} --issuer NAME`")
    if force:
        reason, at, detail = Reason.FORCED, now, "asked for (--force)"
    elif facts.revoked:
        reason, at, detail = Reason.REVOKED, now, "its certificate was revoked: renew at once"
    elif facts.not_before is None or facts.not_after is None:
        reason, at, detail = Reason.NO_CERTIFICATE, now, "no certificate yet"
    elif window is not None and window.end <= now:
        reason, at = Reason.ARI_NOW, now
        detail = f"the CA's renewal window ended {_when(window.end)}: it asks for the certificate to be replaced now"
        if window.explanation_url:
            detail += f" ({window.explanation_url})"
    elif window is not None:
        reason = Reason.ARI_WINDOW
        at = window.start + (window.end - window.start) * facts.jitter
        detail = f"at {_when(at)}, in the CA's renewal window {_when(window.start)} to {_when(window.end)} (ARI)"
    else:
        reason, at, detail = _by_lifetime(facts, facts.not_before, facts.not_after)
    if at > now:
        return made(reason, at, detail)
    if force or facts.issuing is Issuing.MANUAL:
        return made(reason, at, detail, next_attempt=now)
    retry = _retry_at(facts, now)
    if retry is not None and retry > now:
        said = f"{facts.failures} failed tries in a row" if facts.failures > 1 else "the last try failed"
        if facts.retry_after is not None and retry == facts.retry_after:
            said += "; the CA asked to wait"
        detail = f"{detail}; {said}: next try at {_when(retry)}"
        return made(reason, at, detail, due=False, next_attempt=retry, backing_off=True)
    return made(reason, at, detail, next_attempt=now)


def _retry_at(facts: RenewalFacts, now: dt.datetime) -> dt.datetime | None:
    candidates = []
    if facts.failures > 0 and facts.last_failure is not None:
        left = facts.not_after - now if facts.not_after is not None else None
        candidates.append(facts.last_failure + retry_delay(facts.failures, left))
    if facts.retry_after is not None:
        candidates.append(facts.retry_after)
    return max(candidates) if candidates else None
