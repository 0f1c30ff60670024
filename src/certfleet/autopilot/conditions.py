"""What is wrong, in words for the people told: the conditions a pass finds, from the results it
already has (an issue that failed, a deploy report, the fleet's status, a certificate's age).

Pure: results in, :class:`~certfleet.autopilot.alerts.Condition` out; the clock is ``now``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

from certfleet.acme.issue import Attempt
from certfleet.autopilot.alerts import Condition, Event
from certfleet.fleet.model import Outcome
from certfleet.fleet.rollout import DeployResult
from certfleet.fleet.status import LineageStatus, Serving
from certfleet.renewal import RenewalPlan
from certfleet.store import VersionRecord

__all__ = ["deploy_problems", "expiry", "manual_waiting", "renewal_failed", "served_problems"]


def _when(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _live(active: VersionRecord | None) -> str:
    if active is None or active.not_after is None:
        return "No certificate was live before; nothing changed."
    return f"What is live is untouched: version {active.number}, which expires {_when(active.not_after)}."


def renewal_failed(
    lineage: str,
    error: str,
    *,
    hint: str | None = None,
    attempts: Sequence[Attempt] = (),
    active: VersionRecord | None = None,
    next_try: dt.datetime | None = None,
) -> Condition:
    """The renewal of ``lineage`` failed: the CA's reason (each issuer's, when several were tried)."""
    lines = [f"The renewal of lineage {lineage} failed: {error}"]
    if len(attempts) > 1:
        lines += ["", "Each issuer tried:", *(f"- {a.issuer}: {a.error}" for a in attempts if a.error)]
    if hint:
        lines += ["", f"What to do: {hint}"]
    lines += ["", _live(active)]
    if next_try is not None:
        lines.append(f"certfleet tries again at {_when(next_try)}.")
    return Condition(Event.RENEWAL_FAILED, lineage, f"renewal of {lineage} failed", "\n".join(lines))


def deploy_problems(lineage: str, result: DeployResult) -> list[Condition]:
    """A condition for each node the deploy could not bring to the version."""
    out = []
    for node in result.report.nodes:
        if node.outcome is Outcome.ROLLED_BACK:
            event, what = Event.DEPLOY_ROLLED_BACK, "was rolled back"
        elif node.outcome is Outcome.FAILED:
            event, what = Event.DEPLOY_FAILED, "failed"
        else:
            continue
        step = f" at the {node.step.value} step" if node.step is not None else ""
        body = (
            f"Deploying version {result.version} of lineage {lineage} to node {node.node} {what}{step}: "
            f"{node.message}\n\nThe node keeps what it served before; the other nodes are not affected. "
            f"The node's output is in `certfleet history {lineage}`; certfleet tries again at its next pass."
        )
        out.append(Condition(event, lineage, f"deploy of {lineage} to {node.node} {what}", body, node=node.node))
    return out


def manual_waiting(lineage: str, pending: VersionRecord, active: VersionRecord | None, plan: RenewalPlan) -> Condition:
    """A manual lineage's new key and CSR wait for someone to buy the certificate."""
    csr = ""
    if pending.csr is not None:
        from cryptography.hazmat.primitives import serialization

        csr = pending.csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
    expires = (
        f"The certificate in use expires {_when(active.not_after)}."
        if active is not None and active.not_after
        else "The lineage has no certificate in use."
    )
    body = (
        f"Lineage {lineage} is due for a new certificate ({plan.detail}). {expires}\n\n"
        f"A new key and CSR are ready (version {pending.number}, names: {', '.join(pending.names)}). "
        f"Buy the certificate with this CSR, then run `certfleet import {lineage} FILES...`: certfleet deploys "
        f"and proves it on every node by itself.\n\n{csr}"
    )
    return Condition(Event.MANUAL_WAITING, lineage, f"lineage {lineage} waits for a certificate to be bought", body)


def expiry(
    lineage: str,
    active: VersionRecord | None,
    *,
    now: dt.datetime,
    days: Sequence[int] = (),
    plan: RenewalPlan | None = None,
) -> Condition | None:
    """Past two thirds (level 1) or five sixths (level 2) of its lifetime, or, with ``days``, fewer
    days left than each number given (a level per number, largest first)."""
    if active is None or active.not_before is None or active.not_after is None:
        return None
    left = active.not_after - now
    lifetime = max(active.not_after - active.not_before, dt.timedelta(seconds=1))
    if days:
        level = sum(1 for d in sorted(days, reverse=True) if left <= dt.timedelta(days=d))
        stage = f"fewer than {min(d for d in days if left <= dt.timedelta(days=d))} days left" if level else ""
    else:
        used = (now - active.not_before) / lifetime
        level = 2 if used >= 5 / 6 else 1 if used >= 2 / 3 else 0
        stage = {1: "past two thirds of its lifetime", 2: "past five sixths of its lifetime"}.get(level, "")
    if level == 0:
        return None
    if left <= dt.timedelta(0):
        stage = "expired"
        title = f"the certificate of {lineage} has expired"
    else:
        title = f"the certificate of {lineage} is {stage}"
    hours = left.total_seconds() / 3600
    remaining = f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"
    lines = [
        f"Version {active.number} of lineage {lineage} expires {_when(active.not_after)}"
        + (f" ({remaining} left)." if left > dt.timedelta(0) else "."),
    ]
    if plan is not None:
        lines.append(f"Renewal: {plan.detail}.")
    lines.append(f"`certfleet renew --lineage {lineage} --dry-run` says what certfleet will do.")
    return Condition(Event.EXPIRING, lineage, title, "\n".join(lines), level=level)


def served_problems(lineage: LineageStatus, revoked: Collection[str]) -> list[Condition]:
    """Nodes that serve a revoked certificate, an older version, or a certificate not the lineage's."""
    out = []
    for node in lineage.nodes:
        fp = node.served_fingerprint
        if fp is not None and fp in revoked:
            version = f"version {node.served_version}" if node.served_version is not None else fp[:16]
            body = (
                f"Node {node.node} ({node.probe}) still serves {version} of lineage {lineage.name}, which was "
                f"revoked. Clients that check revocation refuse it. `certfleet deploy {lineage.name}` installs the "
                "active version."
            )
            out.append(
                Condition(Event.REVOKED_SERVED, lineage.name, f"{node.node} serves a revoked certificate", body,
                          node=node.node)
            )  # fmt: skip
        elif node.serving in (Serving.OLDER, Serving.OTHER):
            active = lineage.active
            short = "an older version" if node.serving is Serving.OLDER else "a certificate not the lineage's"
            what = (
                f"{short} ({node.served_version})" if node.serving is Serving.OLDER else f"{short} ({(fp or '')[:16]})"
            )
            wanted = f"version {active.number}" if active is not None else "no version (the lineage has none active)"
            body = (
                f"Node {node.node} ({node.probe}) serves {what}; lineage {lineage.name} wants {wanted}. "
                f"`certfleet status {lineage.name}` shows every node; `certfleet deploy {lineage.name}` installs the "
                "active version."
            )
            out.append(
                Condition(Event.SERVING_OTHER, lineage.name, f"{node.node} serves {short}", body,
                          node=node.node)
            )  # fmt: skip
    return out
