"""``certfleet status``, ``history`` and ``audit``: what each node has and serves, what each deploy
did, and who changed what. A thin face over :mod:`certfleet.fleet.status` and the store."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from certfleet.cli._common import JsonOpt, LineageArg, app, console, emit, open_store
from certfleet.cli._common import say as _say
from certfleet.cli._common import short_fp as _short
from certfleet.cli._common import when as _when
from certfleet.cli._state import state as run_state
from certfleet.clock import utc_now
from certfleet.errors import ExitCode

if TYPE_CHECKING:
    from certfleet.fleet.history import HistoryReport
    from certfleet.fleet.status import NodeStatus, StatusReport
    from certfleet.store import AuditEntry


# -- status and history ----------------------------------------------------------------------------


@app.command("status", epilog="Example: certfleet status --json")
def status_cmd(
    lineage: Annotated[str | None, typer.Argument(help="Only this lineage.")] = None,
    *,
    no_probe: Annotated[bool, typer.Option("--no-probe", help="Do not connect to the nodes.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds for each probe.", min=0.1, max=120)] = 5.0,
    as_json: JsonOpt = False,
) -> int:
    """Per lineage: the active certificate and days left; per node: last deployment and what it serves now."""
    from certfleet.fleet.status import status

    with open_store() as store:
        report = asyncio.run(status(store, now=utc_now(), lineage=lineage, probe=not no_probe, timeout=timeout))
    run_state.closed = True  # the store and the event loop are closed: nothing is left but to print
    emit(report, as_json, _render_status)
    return int(ExitCode.OK if report.ok else ExitCode.PROBLEMS)


_HEALTH_STYLE = {"good": "green", "warn": "yellow", "bad": "bold red", "none": "dim"}


def _render_status(report: StatusReport) -> None:
    from rich.table import Table

    from certfleet.cli import _render

    if not report.lineages:
        _say("no lineages yet: `certfleet request LINEAGE --node NAME --out FILE.csr`")
    for lin in report.lineages:
        active = lin.active
        head = f"[bold]{escape(lin.name)}[/]  "
        if active is None:
            head += "no certificate yet"
        else:
            days = lin.days_left if lin.days_left is not None else 0
            head += f"version {active.number}  sha256 {_short(active.fingerprint)}  {days} days left"
        if lin.pending:
            head += f"  ({lin.pending} waiting for the CA)"
        _say(head, markup=True)
        if active is not None:
            _say(f"  names: {', '.join(active.names)}")
        if lin.chain is not None:
            verdict = "complete and trusted" if lin.chain.valid else "a strict client refuses it"
            _say(f"  chain: {verdict}")
        table = Table(box=None, padding=(0, 2), show_edge=False)
        with_live = any(n.live is not None for n in lin.nodes)
        for column in ("node", "probe", "last deployment", "serves now", *(("live now",) if with_live else ())):
            table.add_column(column)
        for n in lin.nodes:
            last = "-"
            if n.last_outcome is not None:
                last = f"v{n.last_version} {n.last_outcome.value}"
                if n.last_failed_step:
                    last += f" at {n.last_failed_step}"
                if n.last_deployment is not None:
                    last += f" (#{n.last_deployment})"
                last += f"  {_when(n.last_deployed_at)}"
            serving = n.serving.value
            if n.served_version is not None:
                serving += f" (v{n.served_version})"
            if n.report is not None and n.report.probe.ok and not n.report.ok:
                serving += ", refused by a strict client"
            if n.probed_by == "":
                serving += ", its zone's worker has not probed it yet"
            elif n.probed_by is not None and n.checked_at is not None:
                age = int((report.checked_at - n.checked_at).total_seconds())
                serving += f", probed by {n.probed_by} {_age(age)} ago"
            style = _HEALTH_STYLE[n.health.value]
            row = [n.node, escape(n.probe or "-"), escape(last), f"[{style}]{escape(serving)}[/]"]
            if with_live:
                row.append(escape(_live_cell(n)))
            table.add_row(*row)
        if lin.nodes:
            console.print(table)
        problems = [*lin.all_problems, *(p for n in lin.nodes for p in n.problems)]
        if problems:
            _render.print_problems(console, problems)
        console.print()


def _age(seconds: int) -> str:
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h" if seconds < 172800 else f"{seconds // 86400}d"


def _live_cell(n: NodeStatus) -> str:
    """What the node's targets point at, read from the node: ``v2 (never proven here)``."""
    if n.live is None:
        return "-"
    if n.live.error is not None:
        return f"unknown: {n.live.error}"
    shown = [
        "nothing" if t is None else f"v{v}" if v is not None else f"{t[:16]}… (not a version)"
        for t, v in zip(n.live.targets, n.live_versions, strict=True)
    ]
    text = ", ".join(dict.fromkeys(shown))
    return text + ("  (never proven here)" if n.live_proven is False else "")


@app.command("history", epilog="Example: certfleet history web")
def history_cmd(lineage: LineageArg, *, as_json: JsonOpt = False) -> None:
    """The versions of a lineage and its deployments, node by node."""
    from certfleet.fleet.history import history

    with open_store() as store:
        report = history(store, lineage)
    emit(report, as_json, _render_history)


def _render_history(r: HistoryReport) -> None:
    _say(f"[bold]{escape(r.lineage.name)}[/]  versions:", markup=True)
    for v in r.versions:
        mark = "*" if v.active else " "
        _say(
            f" {mark} v{v.number:<3} {v.state.value:<8} {v.key_spec:<9} sha256 {_short(v.fingerprint):<18} "
            f"until {_when(v.not_after):<21} made {_when(v.created_at)}"
        )
    _say("deployments:" if r.deployments else "no deployments yet")
    for d in r.deployments:
        kind = "rollback to" if d.rollback else "deploy of"
        state = "" if d.state.value == "finished" else f"  {d.state.value.upper()}"
        when = f"started {_when(d.started_at)}" if d.state.value != "finished" else f"at {_when(d.finished_at)}"
        _say(f"  #{d.id} {kind} v{d.version} by {d.actor} {when}{state}")
        for res in d.results:
            why = f" at {res.failed_step}" if res.failed_step else ""
            if res.outcome.value == "interrupted":
                why = " (never finished: `certfleet status` shows what it has live and serves)"
            _say(f"      {res.node:<16} {res.outcome.value}{why}")


# -- audit -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditList:
    entries: tuple[AuditEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [e.to_dict() for e in self.entries]}


@app.command("audit", epilog="Examples: certfleet audit   ·   certfleet audit --action deploy --limit 5 --json")
def audit_cmd(
    *,
    limit: Annotated[int, typer.Option("--limit", help="The newest this many entries.", min=1, max=10_000)] = 50,
    action: Annotated[
        str | None,
        typer.Option("--action", help="Only this action: deploy, deploy.start, rollback, version.activate, export..."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit trail, newest first: who changed what in the store, and when."""
    with open_store() as store:
        result = AuditList(tuple(store.audit_log(limit=limit, action=action)))

    def render(r: AuditList) -> None:
        if not r.entries:
            _say("no audit entries" + (f" for {action}" if action else ""))
        for e in r.entries:
            _say(f"{_when(e.at)}  {e.actor:<12} {e.action:<17} {_detail(e.detail)}")

    emit(result, as_json, render)


def _detail(detail: dict[str, Any]) -> str:
    """An entry's detail on one line: key=value, lists and tables as JSON."""
    return "  ".join(
        f"{key}={value if isinstance(value, str | int | float) else json.dumps(value, ensure_ascii=False)}"
        for key, value in detail.items()
    )
