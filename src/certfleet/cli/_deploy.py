"""``certfleet deploy`` and ``certfleet rollback``: push a lineage's version to its nodes.

:mod:`certfleet.fleet.rollout` picks the version and the nodes, locks the lineage, deploys and
records every node's result; this module shows each node's progress and the outcome.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from certfleet.cli._common import JsonOpt, LineageArg, app, console, console_err, emit, open_store
from certfleet.errors import ExitCode

if TYPE_CHECKING:
    from certfleet.fleet.deploy import DeployOptions, ProgressEvent
    from certfleet.fleet.model import NodeSpec
    from certfleet.fleet.rollout import DeployResult, Rollout

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


def _options(*, dry_run: bool, concurrency: int, probe_wait: float, timeout: float) -> DeployOptions:
    from certfleet.fleet.deploy import DeployOptions

    return DeployOptions(concurrency=concurrency, probe_wait=probe_wait, command_timeout=timeout, dry_run=dry_run)


# past this many nodes the live view counts the nodes by step instead of a row per node
_PROGRESS_ROWS = 30


@contextmanager
def _progress(nodes: Sequence[NodeSpec], enabled: bool) -> Iterator[Callable[[ProgressEvent], None] | None]:
    """A live view on the terminal while the deploy runs: one row per node, or for a large fleet
    how many nodes are at each step. It is drawn a few times a second, never once per event."""
    if not enabled or not console_err.is_terminal:
        yield None
        return
    from rich.live import Live
    from rich.table import Table

    state = {n.name: "waiting" for n in nodes}

    def table() -> Table:
        t = Table(box=None, padding=(0, 2), show_edge=False, show_header=False)
        if len(state) <= _PROGRESS_ROWS:
            for name, where in state.items():
                t.add_row(escape(name), escape(where))
            return t
        counts: dict[str, int] = {}
        for where in state.values():
            counts[where] = counts.get(where, 0) + 1
        for where, count in counts.items():
            t.add_row(escape(where), f"{count} node{'s' if count != 1 else ''}")
        return t

    with Live(console=console_err, transient=True, refresh_per_second=8, get_renderable=table):

        def update(event: ProgressEvent) -> None:
            if event.step is not None:
                state[event.node] = f"{event.step.value}…"
            elif event.outcome is not None:
                state[event.node] = event.outcome.outcome.value

        yield update


def _execute(rollout: Rollout, as_json: bool) -> int:
    stopped_by: list[int] = []
    with rollout, _progress(rollout.nodes, not as_json) as progress:
        result = asyncio.run(_stoppable(rollout, progress, stopped_by))
    emit(result, as_json, _render)
    if result.record_error is not None:
        error = result.record_error
        where = (
            f"every node's result is in {result.recovery}; the next certfleet command records it"
            if result.recovery is not None
            else "no recovery file could be written either: keep this report"
        )
        console_err.print(f"[bold red]error:[/] the deploy could not be recorded: {escape(str(error))}", soft_wrap=True)
        console_err.print(f"[dim]hint:[/] {escape(error.hint or '')}{'; ' if error.hint else ''}{escape(where)}")
        return int(ExitCode.ENVIRONMENT)
    if stopped_by:
        return 128 + stopped_by[0]  # 130 for Ctrl-C, 143 for SIGTERM, as a shell reports them
    return int(ExitCode.OK if result.report.ok else ExitCode.PROBLEMS)


async def _stoppable(
    rollout: Rollout, progress: Callable[[ProgressEvent], None] | None, stopped_by: list[int]
) -> DeployResult:
    """Run the rollout; the first Ctrl-C or SIGTERM asks it to stop (each node finishes or undoes
    its step, then the report is printed and recorded), a second Ctrl-C abandons it."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)

    def asked(signum: int) -> None:
        if not stopped_by:
            console_err.print(
                "stopping: each node finishes or undoes the step it is in (Ctrl-C again abandons it)",
                highlight=False,
            )
        stopped_by.append(signum)
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl-C is a KeyboardInterrupt

    for signum in signals:
        loop.add_signal_handler(signum, asked, signum)
    try:
        return await rollout.run(progress=progress, stop=stop)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


_STYLE = {"ok": "green", "unchanged": "green", "planned": "cyan", "rolled-back": "yellow", "failed": "bold red"}


def _render(result: DeployResult) -> None:
    from rich.table import Table

    report = result.report
    what = "dry run of" if report.dry_run else "rollback to" if result.rollback else "deploy of"
    if report.stopped:
        what = f"stopped {what}"
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
        serves = _version_text(result, n.served)
        table.add_row(
            escape(n.node),
            f"[{style}]{n.outcome.value}[/]",
            n.step.value if n.step else "-",
            escape(serves),
            f"{n.duration:.1f}s",
        )
    console.print(table)
    for n in report.nodes:
        if n.outcome.value in ("failed", "rolled-back", "skipped") or (report.dry_run and n.message):
            console.print(f"[bold]{escape(n.node)}[/]: {escape(n.message)}", soft_wrap=True)
            if n.outcome.value in ("failed", "rolled-back") and n.live is not None:
                live = ", ".join(_version_text(result, v, folder=True) for v in n.live)
                serves = f"; it serves {_version_text(result, n.served)}" if n.served is not None else ""
                console.print(f"    live now: {escape(live)}{escape(serves)}", soft_wrap=True, highlight=False)
            lines = [line for line in n.output.strip().splitlines() if line.strip()][-15:]
            for line in lines:
                console.print(f"    {escape(line)}", soft_wrap=True, highlight=False)
    if result.rollback:
        lineage = escape(result.lineage)
        if result.activates:
            became = "would become" if report.dry_run else "is now"
            console.print(f"version {result.version} {became} the active version of {lineage}", soft_wrap=True)
        else:
            console.print(
                f"only these nodes were rolled back; the active version of {lineage} stays {result.active}:"
                f" `certfleet deploy {lineage}` installs it on them again",
                soft_wrap=True,
                highlight=False,
            )


def _version_text(result: DeployResult, fingerprint: str | None, *, folder: bool = False) -> str:
    """A leaf fingerprint (or version folder) as the lineage's version it is: ``v2``, ``this version``."""
    if fingerprint is None:
        return "nothing" if folder else "-"
    number = result.version_of(fingerprint)
    if number is None:
        return f"{fingerprint[:16]}… (not a version of {result.lineage})"
    if number == result.version and not folder:
        return f"this version (v{number})"
    return f"v{number}"


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
    queue: Annotated[
        bool, typer.Option("--queue", help="PostgreSQL: only queue a job per node, for `certfleet worker` to run.")
    ] = False,
    wait: Annotated[
        float, typer.Option("--wait", help="Seconds to follow the jobs of zoned nodes before giving up.", min=0)
    ] = 600.0,
    as_json: JsonOpt = False,
) -> int:
    """Install the active version on every node of the lineage: upload, switch, test, reload, probe.

    Nodes go in parallel; a node that fails is switched back to what it had. Every node's result
    is recorded (see `certfleet history`). Running it again finishes an interrupted deploy. One
    deploy of a lineage runs at a time. On a PostgreSQL store, nodes in a zone are deployed by
    that zone's workers (`certfleet worker --zone NAME`): this command queues their jobs, deploys
    the other nodes itself and follows the rest until done (see `certfleet jobs`).
    """
    from certfleet.fleet.rollout import prepare_deploy
    from certfleet.jobs.deployments import route_deploy

    options = _options(dry_run=dry_run, concurrency=concurrency, probe_wait=probe_wait, timeout=timeout)
    with open_store() as store:
        if not dry_run:
            route = route_deploy(store, lineage, node or (), queue=queue)
            if route.ignored_zones:
                console_err.print(
                    f"note: zones ({', '.join(route.ignored_zones)}) have no meaning on a SQLite store: "
                    "every node is deployed from here",
                    highlight=False,
                    markup=False,
                )
            if route.queued:
                from certfleet.cli._queued import execute_queued

                return execute_queued(
                    store, lineage, route.nodes, options, inline=not queue, wait=wait, as_json=as_json
                )
        return _execute(prepare_deploy(store, lineage, node or (), options=options), as_json)


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
    wait: Annotated[
        float, typer.Option("--wait", help="Seconds to follow the jobs of zoned nodes before giving up.", min=0)
    ] = 600.0,
    as_json: JsonOpt = False,
) -> int:
    """Deploy the version before the active one again (its files are usually still on the nodes).

    Without --node it goes to every node and becomes the active version, so `certfleet deploy`
    does not install the withdrawn one again. With --node only those nodes go back, and the
    active version stays: `certfleet deploy` installs it on them again when it is fixed. On a
    PostgreSQL store, nodes in a zone are rolled back by that zone's workers, as for `deploy`.
    """
    from certfleet.fleet.rollout import prepare_rollback
    from certfleet.jobs.deployments import route_deploy

    options = _options(dry_run=dry_run, concurrency=concurrency, probe_wait=probe_wait, timeout=timeout)
    with open_store() as store:
        if not dry_run:
            route = route_deploy(store, lineage, node or ())
            if route.queued:
                from certfleet.cli._queued import execute_queued

                return execute_queued(
                    store, lineage, route.nodes, options, inline=True, wait=wait, as_json=as_json,
                    rollback=True, to=to, activates=not node,
                )  # fmt: skip
        return _execute(prepare_rollback(store, lineage, node or (), to=to, options=options), as_json)
