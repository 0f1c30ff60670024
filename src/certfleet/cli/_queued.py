"""``certfleet deploy`` of a lineage with nodes in zones, on a PostgreSQL store: the deploy as jobs
(:mod:`certfleet.jobs.deployments`), its progress as the jobs end, and the outcome."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.markup import escape

from certfleet.cli._common import console, console_err, emit
from certfleet.errors import ExitCode

if TYPE_CHECKING:
    from certfleet.fleet.deploy import DeployOptions
    from certfleet.fleet.model import NodeSpec
    from certfleet.jobs.deployments import QueuedDeploy
    from certfleet.jobs.worker import JobEvent
    from certfleet.store import Store

_STYLE = {"ok": "green", "unchanged": "green", "rolled-back": "yellow", "failed": "bold red"}


def execute_queued(
    store: Store,
    lineage: str,
    nodes: Sequence[NodeSpec],
    options: DeployOptions,
    *,
    inline: bool,
    wait: float,
    as_json: bool,
    rollback: bool = False,
    to: int | None = None,
    activates: bool = False,
) -> int:
    from certfleet.jobs.deployments import run_queued

    stopped_by: list[int] = []

    def log(event: JobEvent) -> None:
        if not as_json and event.event in ("recorded", "failed"):
            console_err.print(f"{escape(event.node or '-')}: {escape(event.outcome or '')}", highlight=False)

    async def run() -> QueuedDeploy:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def asked(signum: int) -> None:
            stopped_by.append(signum)
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, asked, signum)
        try:
            return await run_queued(
                store, lineage, nodes, options=options, inline=inline, wait=wait, stop=stop, log=log,
                rollback=rollback, to=to, activates=activates,
            )  # fmt: skip
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    result = asyncio.run(run())
    emit(result, as_json, _render)
    if stopped_by:
        return 128 + stopped_by[0]
    if result.queued_only:
        return int(ExitCode.OK)
    if result.waiting:
        return int(ExitCode.ENVIRONMENT)
    return int(ExitCode.OK if result.ok else ExitCode.PROBLEMS)


def _render(result: QueuedDeploy) -> None:
    from rich.table import Table

    d = result.deployment
    jobs = {j.node: j for j in result.jobs}
    what = "rollback to" if result.rollback else "deploy of"
    what = f"queued {what}" if result.queued_only else what
    console.print(
        f"[bold]{escape(result.lineage)}[/]: {what} version {result.version} as jobs"
        f" (deployment {d.id}, {d.state.value})",
        soft_wrap=True,
    )
    table = Table(box=None, padding=(0, 2), show_edge=False)
    for column in ("node", "zone", "job", "outcome", "worker"):
        table.add_column(column)
    for r in d.results:
        j = jobs.get(r.node)
        outcome = r.outcome.value if j is None or j.state not in ("queued", "running") else j.state
        style = _STYLE.get(outcome, "")
        table.add_row(
            escape(r.node),
            escape((j.zone if j else None) or "-"),
            str(j.id) if j else "-",
            f"[{style}]{escape(outcome)}[/]" if style else escape(outcome),
            escape((j.lease_owner if j else None) or "-"),
        )
    console.print(table)
    for r in d.results:
        if r.outcome.value in ("failed", "rolled-back") and r.output:
            console.print(f"[bold]{escape(r.node)}[/]: {escape(r.output.splitlines()[0])}", soft_wrap=True)
    if result.activates:
        console.print(f"version {result.version} is now the active version of {escape(result.lineage)}", soft_wrap=True)
    if result.queued_only:
        console.print("the jobs wait for workers: `certfleet jobs` follows them", highlight=False)
    elif result.error is not None:
        console_err.print(
            f"[bold red]error:[/] {escape(result.error)}",
            soft_wrap=True,
        )
        console_err.print(
            "[dim]hint:[/] start `certfleet worker --zone NAME` where those nodes are reachable; the jobs stay queued",
            soft_wrap=True,
        )
