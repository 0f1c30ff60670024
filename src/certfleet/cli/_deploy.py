"""``certfleet deploy`` and ``certfleet rollback``: push a lineage's version to its nodes.

The engine is :mod:`certfleet.fleet.deploy`; this module picks the version and the nodes from
the store, shows each node's progress, and records every node's result in the store.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from certfleet.cli._common import JsonOpt, app, console, console_err, emit
from certfleet.errors import ExitCode, InputError

if TYPE_CHECKING:
    from certfleet.fleet.deploy import DeployReport, NodeOutcome, ProgressEvent
    from certfleet.fleet.spec import NodeSpec
    from certfleet.store import NodeResult, Store, VersionRecord

LineageArg = Annotated[str, typer.Argument(help="The lineage: one named certificate over time, e.g. web.")]
NodeOpt = Annotated[
    list[str] | None, typer.Option("--node", "-n", help="Only this node of the lineage; repeat for more.")
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Connect and show what would change; change nothing, record nothing.")
]
ConcurrencyOpt = Annotated[int, typer.Option(help="Nodes deployed at once.", min=1, max=64)]
ProbeWaitOpt = Annotated[
    float, typer.Option("--probe-wait", help="Seconds a reloaded node may take to serve the new chain.", min=0, max=600)
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds for each test and reload command.", min=1, max=3600)
]


@dataclass(frozen=True, slots=True)
class DeployResult:
    """A deploy of one version of a lineage: which version, and the engine's report."""

    lineage: str
    version: int
    report: DeployReport
    recorded: int | None  # the deployment's id in the store; None for a dry run
    rollback: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "version": self.version,
            "rollback": self.rollback,
            "deployment": self.recorded,
            **self.report.to_dict(),
        }


def _open() -> Store:
    from certfleet.store import Store

    return Store.open()


def _select(store: Store, lineage: str, wanted: Sequence[str] | None) -> list[NodeSpec]:
    members = store.nodes(lineage)
    if not members:
        raise InputError(
            f"lineage {lineage} has no nodes",
            hint=f"add one: certfleet node add NAME --name DNS --target KIND:PATH --lineage {lineage}",
        )
    if not wanted:
        return members
    by_name = {n.name: n for n in members}
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise InputError(
            f"not a node of {lineage}: {', '.join(unknown)}",
            hint=f"its nodes: {', '.join(sorted(by_name))}",
        )
    return [by_name[w] for w in dict.fromkeys(wanted)]


def _store_result(outcome: NodeOutcome) -> NodeResult:
    from certfleet.fleet.deploy import Outcome
    from certfleet.store import DeployOutcome, NodeResult

    mapping = {
        Outcome.OK: DeployOutcome.OK,
        Outcome.UNCHANGED: DeployOutcome.SKIPPED,
        Outcome.FAILED: DeployOutcome.FAILED,
        Outcome.ROLLED_BACK: DeployOutcome.ROLLED_BACK,
        Outcome.PLANNED: DeployOutcome.SKIPPED,
    }
    now = dt.datetime.now(dt.UTC)
    output = "\n".join(part for part in (outcome.message, outcome.output) if part)
    return NodeResult(
        node=outcome.node,
        outcome=mapping[outcome.outcome],
        started_at=outcome.started_at or now,
        finished_at=outcome.finished_at or now,
        failed_step=outcome.step.value if outcome.step else None,
        output=output,
        served_fingerprint=outcome.served,
    )


@contextmanager
def _progress(nodes: Sequence[NodeSpec], enabled: bool) -> Iterator[Callable[[ProgressEvent], None] | None]:
    """A live table on the terminal, one row per node, while the deploy runs."""
    if not enabled or not console_err.is_terminal:
        yield None
        return
    from rich.live import Live
    from rich.table import Table

    state = {n.name: "waiting" for n in nodes}

    def table() -> Table:
        t = Table(box=None, padding=(0, 2), show_edge=False, show_header=False)
        for name, where in state.items():
            t.add_row(escape(name), escape(where))
        return t

    with Live(table(), console=console_err, transient=True, refresh_per_second=8) as live:

        def update(event: ProgressEvent) -> None:
            if event.step is not None:
                state[event.node] = f"{event.step.value}…"
            elif event.outcome is not None:
                state[event.node] = event.outcome.outcome.value
            live.update(table())

        yield update


def _run(
    lineage: str,
    version: VersionRecord,
    store: Store,
    nodes: list[NodeSpec],
    *,
    dry_run: bool,
    concurrency: int,
    probe_wait: float,
    timeout: float,
    show_progress: bool,
    rollback: bool = False,
) -> DeployResult:
    from certfleet.fleet.deploy import DeployOptions, deploy

    material = store.material(lineage, version.number)
    options = DeployOptions(concurrency=concurrency, probe_wait=probe_wait, command_timeout=timeout, dry_run=dry_run)
    with _progress(nodes, show_progress) as progress:
        report = asyncio.run(deploy(material, nodes, options=options, progress=progress))
    recorded = None
    if not dry_run:
        results = [_store_result(n) for n in report.nodes]
        recorded = store.record_deployment(lineage, version.number, results, started_at=report.started_at)
    return DeployResult(lineage, version.number, report, recorded, rollback)


_STYLE = {"ok": "green", "unchanged": "green", "planned": "cyan", "rolled-back": "yellow", "failed": "bold red"}


def _render(result: DeployResult) -> None:
    from rich.table import Table

    report = result.report
    what = "dry run of" if report.dry_run else "rollback to" if result.rollback else "deploy of"
    counts: dict[str, int] = {}
    for n in report.nodes:
        counts[n.outcome.value] = counts.get(n.outcome.value, 0) + 1
    summary = ", ".join(f"{count} {outcome}" for outcome, count in counts.items())
    console.print(
        f"[bold]{escape(result.lineage)}[/]: {what} version {result.version}  sha256 {report.fingerprint[:16]}…"
        f"  ({summary})",
        soft_wrap=True,
    )
    table = Table(box=None, padding=(0, 2), show_edge=False)
    for column in ("node", "outcome", "step", "serves", "time"):
        table.add_column(column)
    for n in report.nodes:
        style = _STYLE.get(n.outcome.value, "")
        serves = "-" if n.served is None else "this version" if n.served == report.fingerprint else n.served[:16] + "…"
        table.add_row(
            escape(n.node),
            f"[{style}]{n.outcome.value}[/]",
            n.step.value if n.step else "-",
            escape(serves),
            f"{n.duration:.1f}s",
        )
    console.print(table)
    for n in report.nodes:
        if n.outcome.value in ("failed", "rolled-back") or (report.dry_run and n.message):
            console.print(f"[bold]{escape(n.node)}[/]: {escape(n.message)}", soft_wrap=True)
            lines = [line for line in n.output.strip().splitlines() if line.strip()][-15:]
            for line in lines:
                console.print(f"    {escape(line)}", soft_wrap=True, highlight=False)


@app.command(
    "deploy",
    epilog="Examples: certfleet deploy web   ·   certfleet deploy web --node gw1 --dry-run",
)
def deploy_cmd(
    lineage: LineageArg,
    *,
    node: NodeOpt = None,
    dry_run: DryRunOpt = False,
    concurrency: ConcurrencyOpt = 8,
    probe_wait: ProbeWaitOpt = 15.0,
    timeout: TimeoutOpt = 120.0,
    as_json: JsonOpt = False,
) -> int:
    """Install the active version on every node of the lineage: upload, switch, test, reload, probe.

    Nodes go in parallel; a node that fails is switched back to what it had. Every node's result
    is recorded (see `certfleet history`). Running it again finishes an interrupted deploy.
    """
    with _open() as store:
        record = store.lineage(lineage)
        if record.active is None:
            raise InputError(
                f"lineage {lineage} has no certificate yet",
                hint=f"`certfleet request {lineage}`, then `certfleet import {lineage}` what the CA sends",
            )
        nodes = _select(store, lineage, node)
        result = _run(
            lineage,
            record.active,
            store,
            nodes,
            dry_run=dry_run,
            concurrency=concurrency,
            probe_wait=probe_wait,
            timeout=timeout,
            show_progress=not as_json,
        )
    emit(result, as_json, _render)
    return int(ExitCode.OK if result.report.ok else ExitCode.PROBLEMS)


def _previous(store: Store, lineage: str, to: int | None) -> VersionRecord:
    from certfleet.store import VersionState

    issued = [v for v in store.versions(lineage) if v.state is VersionState.ISSUED]
    if to is not None:
        for v in issued:
            if v.number == to:
                return v
        raise InputError(
            f"lineage {lineage} has no issued version {to}",
            hint=f"its issued versions: {', '.join(str(v.number) for v in issued) or 'none'}",
        )
    active = next((v for v in issued if v.active), None)
    if active is None:
        raise InputError(f"lineage {lineage} has no active certificate to roll back from")
    earlier = [v for v in issued if v.number < active.number]
    if not earlier:
        raise InputError(
            f"lineage {lineage} has no version before version {active.number}",
            hint="`certfleet history` lists its versions",
        )
    return earlier[-1]


@app.command(
    "rollback",
    epilog="Examples: certfleet rollback web   ·   certfleet rollback web --node gw1 --to 3",
)
def rollback_cmd(
    lineage: LineageArg,
    *,
    node: NodeOpt = None,
    to: Annotated[int | None, typer.Option("--to", help="The version to go back to (default: the one before).")] = None,
    dry_run: DryRunOpt = False,
    concurrency: ConcurrencyOpt = 8,
    probe_wait: ProbeWaitOpt = 15.0,
    timeout: TimeoutOpt = 120.0,
    as_json: JsonOpt = False,
) -> int:
    """Deploy the version before the active one again (its files are usually still on the nodes).

    The active version does not change: `certfleet deploy` installs it again when it is fixed.
    """
    with _open() as store:
        version = _previous(store, lineage, to)
        nodes = _select(store, lineage, node)
        result = _run(
            lineage,
            version,
            store,
            nodes,
            dry_run=dry_run,
            concurrency=concurrency,
            probe_wait=probe_wait,
            timeout=timeout,
            show_progress=not as_json,
            rollback=True,
        )
    emit(result, as_json, _render)
    return int(ExitCode.OK if result.report.ok else ExitCode.PROBLEMS)
