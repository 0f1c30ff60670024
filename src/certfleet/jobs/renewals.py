"""Renewals as jobs of the queue: the kind ``renew``, whose handler runs one autopilot pass
(:func:`certfleet.autopilot.renew.renew`, as ``certfleet renew [--lineage L] [--force]`` does)
in the worker that took the job, and keeps a bounded summary of it as the job's result.

The payload says what to renew: ``lineage`` (a name, or null: every lineage) and ``force``; and,
when they differ from ``certfleet renew``'s defaults, ``preflight``, ``probe`` and
``manual_days``. The pass takes the store's pass lock as any pass does: while another pass runs
(a timer's ``certfleet renew``, a console's "renew now"), the job fails with that pass's one line
(``busy`` in its result): that pass covers every due lineage, and the next one comes with the
schedule. The pass runs on an event loop of its own in a thread of its own, so the worker's
heartbeats keep its lease while an ACME order or a deploy waits.

The summary (:func:`summarize`) says each lineage's outcome, the versions issued, the nodes
deployed and those that were not; never a key, a CSR or a certificate (the store has them). It
stays under the store's 64 KiB for a job's result: past that, the lineages that did nothing are
left out first (``left_out`` says how many; ``counts`` always covers them all).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from certfleet.errors import CertfleetError, ExitCode, InputError
from certfleet.jobs.context import JobContext, JobDone
from certfleet.store import JobRecord, JobState

if TYPE_CHECKING:
    from certfleet.autopilot.report import LineageRun, RenewReport, RenewSettings

__all__ = [
    "RENEW",
    "describe",
    "renew_payload",
    "run_renew",
    "settings_of",
    "summarize",
    "summary_exit_code",
]

RENEW = "renew"
MAX_TEXT = 300  # characters kept of a lineage's summary, error or hint, of a node's message
MAX_NODES = 50  # nodes named in each of a lineage's lists (deployed, failed)
BUDGET = 48 * 1024  # bytes the summary may take in the job's result (the store's limit is 64 KiB)
# what a lineage did, most worth keeping first when the summary must be cut
_KEEP_FIRST = ("failed", "issued", "deployed", "requested", "skipped", "waiting", "nothing")


def renew_payload(
    lineage: str | None,
    *,
    force: bool = False,
    preflight: bool = True,
    probe: bool = True,
    manual_days: int | None = None,
) -> dict[str, Any]:
    """What a ``renew`` job is asked: the options of ``certfleet renew`` it carries (those left at
    their defaults are not written)."""
    payload: dict[str, Any] = {"lineage": lineage or None, "force": bool(force)}
    if not preflight:
        payload["preflight"] = False
    if not probe:
        payload["probe"] = False
    if manual_days is not None:
        payload["manual_days"] = int(manual_days)
    return payload


def settings_of(payload: Mapping[str, Any], ctx: JobContext) -> tuple[str | None, bool, RenewSettings]:
    """The lineage, ``force`` and the pass's settings a payload asks for; :class:`InputError` for
    a payload this certfleet does not read."""
    from certfleet.autopilot.report import RenewSettings
    from certfleet.renewal import MANUAL_DAYS

    lineage = payload.get("lineage")
    force = payload.get("force", False)
    preflight = payload.get("preflight", True)
    probe = payload.get("probe", True)
    manual_days = payload.get("manual_days", MANUAL_DAYS)
    if lineage is not None and (not isinstance(lineage, str) or not lineage):
        raise InputError("a renew job's lineage is a name or null")
    if not all(isinstance(v, bool) for v in (force, preflight, probe)):
        raise InputError("a renew job's force, preflight and probe are true or false")
    if not isinstance(manual_days, int) or isinstance(manual_days, bool) or not 0 <= manual_days <= 3650:
        raise InputError("a renew job's manual_days is a number of days (0 to 3650)")
    settings = RenewSettings(manual_days=manual_days, preflight=preflight, probe=probe, deploy=ctx.options)
    return lineage, force, settings


async def run_renew(ctx: JobContext, job: JobRecord) -> JobDone:
    """The handler of ``renew`` jobs: one pass, under the pass lock; its summary as the result."""
    from certfleet.autopilot.renew import renew

    asked = job.payload.get("lineage")

    def run() -> RenewReport:
        lineage, force, settings = settings_of(job.payload, ctx)
        # a loop of its own: the worker's loop keeps beating while the pass waits on a CA or a node
        names = [lineage] if lineage else []
        return asyncio.run(renew(ctx.store, lineages=names, force=force, settings=settings, zone=ctx.zone))

    try:
        report = await asyncio.to_thread(run)
    except CertfleetError as exc:
        message = str(exc)
        where = _cut(asked) if isinstance(asked, str) else None
        error = {"error": message[:2000], "hint": (exc.hint or "")[:MAX_TEXT] or None, "lineage": where}
        return JobDone(False, {**error, "exit_code": int(exc.exit_code)}, message)
    lineage = asked if isinstance(asked, str) and asked else None
    summary = summarize(report, lineage=lineage)
    # done when the pass ran and all went well; failed when a renewal or a node's deploy failed
    # (the summary says which), or when another pass held the lock
    return JobDone(bool(summary["ok"]), summary, describe(summary))


def _cut(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _lineage(run: LineageRun) -> dict[str, Any]:
    deployed: list[str] = []
    failed: list[dict[str, str]] = []
    if run.deployed is not None:
        for node in run.deployed.report.nodes:
            if node.ok:
                deployed.append(node.node)
            else:
                failed.append({"node": node.node, "outcome": node.outcome.value, "message": _cut(node.message) or ""})
    return {
        "lineage": run.lineage,
        "action": run.action.value,
        "ok": run.ok,
        "reason": run.plan.reason.value,
        "summary": _cut(run.summary),
        "version": run.version,
        "error": _cut(run.error),
        "hint": _cut(run.hint) if not run.ok else None,
        "deployed": deployed[:MAX_NODES],
        "deployed_count": len(deployed),
        "failed": failed[:MAX_NODES],
        "failed_count": len(failed),
    }


def summarize(report: RenewReport, *, lineage: str | None = None) -> dict[str, Any]:
    """A pass's report as a ``renew`` job keeps it: each lineage's outcome (what it did, the
    version, the nodes deployed and those that were not, the error), the versions issued, the
    alerts sent; bounded (see the module), and free of key material."""
    from certfleet.autopilot.report import Action

    counts: dict[str, int] = {}
    for run in report.lineages:
        counts[run.action.value] = counts.get(run.action.value, 0) + 1
    issued = [
        {"lineage": r.lineage, "version": r.version}
        for r in report.lineages
        if r.action is Action.ISSUED and r.version is not None
    ]
    entries = [_lineage(r) for r in report.lineages]
    summary: dict[str, Any] = {
        "ok": report.ok and not report.busy,
        "busy": report.busy,
        "lineage": lineage,
        "forced": report.forced,
        "started_at": report.started_at.isoformat(),
        "finished_at": report.finished_at.isoformat(),
        "exit_code": int(ExitCode.OK if report.ok or report.busy else ExitCode.PROBLEMS),
        "counts": counts,
        "issued": issued[:200],
        "nodes_deployed": sum(e["deployed_count"] for e in entries),
        "nodes_failed": sum(e["failed_count"] for e in entries),
        "alerts_sent": len(report.alerts),
        "lineages": entries,
        "left_out": 0,
    }
    if len(json.dumps(summary)) <= BUDGET:
        return summary
    # too many lineages to keep them all: keep the ones that did the most, in the pass's order
    rank = {a: i for i, a in enumerate(_KEEP_FIRST)}
    order = sorted(range(len(entries)), key=lambda i: (rank.get(entries[i]["action"], 0), i))
    room = BUDGET - len(json.dumps({**summary, "lineages": []})) - 64
    kept: set[int] = set()
    for i in order:
        size = len(json.dumps(entries[i])) + 2
        if size > room:
            break
        kept.add(i)
        room -= size
    summary["lineages"] = [e for i, e in enumerate(entries) if i in kept]
    summary["left_out"] = len(entries) - len(kept)
    return summary


def summary_exit_code(job: JobRecord) -> int:
    """The exit code a pass run here would give for what ``job`` says: the one its result names;
    3 (the environment) for a job still open."""
    if job.state in JobState.OPEN:
        return int(ExitCode.ENVIRONMENT)
    code = (job.result or {}).get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    return int(ExitCode.OK if job.state == JobState.DONE else ExitCode.PROBLEMS)


def describe(result: Mapping[str, Any] | None) -> str:
    """One line for a ``renew`` job's result: the error, the busy pass, or what the pass did."""
    if not result:
        return ""
    if result.get("busy"):
        return str(result["busy"])
    if result.get("error") and "counts" not in result:
        return f"failed: {result['error']}"
    counts = result.get("counts") or {}
    if not counts:
        return "no lineage"
    parts = [", ".join(f"{n} {action}" for action, n in counts.items())]
    issued = result.get("issued") or []
    if issued:
        parts.append("issued " + ", ".join(f"{i['lineage']} v{i['version']}" for i in issued[:5]))
    nodes = f"{result.get('nodes_deployed', 0)} node(s) deployed"
    if result.get("nodes_failed"):
        nodes += f", {result['nodes_failed']} not"
    parts.append(nodes)
    return ("ok: " if result.get("ok") else "problems: ") + "; ".join(parts)
