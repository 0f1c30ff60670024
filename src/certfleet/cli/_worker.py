"""``certfleet worker`` and ``certfleet jobs``: the workers that take the store's jobs, and what the
jobs are doing (see ``docs/workers.md``)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from certfleet.cli._common import JsonOpt, app, emit, open_store, say
from certfleet.errors import ExitCode

if TYPE_CHECKING:
    from certfleet.jobs.worker import JobEvent, Worker

ZoneOpt = Annotated[
    str | None, typer.Option("--zone", "-z", help="Take the jobs of the nodes of this zone (default: of no zone).")
]


def _log(as_json: bool) -> Callable[[JobEvent], None]:
    def log(event: JobEvent) -> None:
        if as_json:
            print(json.dumps(event.to_dict()), flush=True)
            return
        if event.event == "waiting":
            print(f"waiting   for the store: {event.detail}", file=sys.stderr, flush=True)
            return
        if event.kind == "probe":
            if event.event == "taken":  # a probe's own line says it all, once a node and round
                return
            print(f"{event.event:<9} {event.node or '-'}: {event.outcome or '-'}  {event.detail}".rstrip(), flush=True)
            return
        if event.deployment is None:  # a job of another kind: a check, a renewal pass (its detail says what it did)
            what = f"job {event.job} ({event.kind})"
        else:
            what = f"job {event.job} ({event.kind} {event.node or '-'}, deployment {event.deployment})"
        tail = f": {event.outcome}" if event.outcome else ""
        detail = f"  {event.detail}" if event.detail else ""
        print(f"{event.event:<9} {what}{tail}{detail}", flush=True)

    return log


async def _until_signalled(worker: Worker, stopped_by: list[int]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def asked(signum: int) -> None:
        if not stopped_by:
            print("stopping: each node finishes or undoes the step it is in; its job goes back", file=sys.stderr)
        stopped_by.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, asked, signum)
    try:
        return await worker.run(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@app.command(
    "worker",
    epilog="Examples: certfleet worker   ·   certfleet worker --zone dmz   ·   certfleet worker --once --json",
)
def worker_cmd(
    *,
    zone: ZoneOpt = None,
    once: Annotated[bool, typer.Option("--once", help="End when no job is left for this worker.")] = False,
    lease: Annotated[
        float, typer.Option("--lease", help="Seconds a job stays this worker's without a heartbeat.", min=0.5)
    ] = 30.0,
    heartbeat: Annotated[
        float | None, typer.Option("--heartbeat", help="Seconds between heartbeats (default: a quarter of the lease).")
    ] = None,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between looks at an empty queue.", min=0.05)] = 1.0,
    batch: Annotated[
        int,
        typer.Option(
            "--batch", help="Jobs held, and nodes deployed, at once (more are taken as they end).", min=1, max=64
        ),
    ] = 8,
    probe_wait: Annotated[
        float, typer.Option("--probe-wait", help="Seconds a reloaded node may take to serve the new chain.", min=0)
    ] = 15.0,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds for each test and reload command.", min=1)
    ] = 120.0,
    probe_every: Annotated[
        float | None,
        typer.Option(
            "--probe-every",
            help="Seconds between rounds of probe jobs for the zone's nodes not probed since (taken by the "
            "zone's workers, recorded for `certfleet status` and the console).",
            min=1,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> int:
    """Take the store's jobs (deploys of single nodes, probes, checks, renewal passes) of one zone and run them.

    A worker in a zone (`--zone dmz`) deploys the nodes of that zone (`certfleet node zone gw1 dmz`);
    one without takes the nodes of no zone. Each job is leased and kept by heartbeats: the job of a
    worker that died is taken over when its lease runs out. SIGTERM or Ctrl-C lets each node finish
    or undo its step, gives the unfinished jobs back and ends. It also takes its zone's probe and
    check jobs (`certfleet check --nodes`, `certfleet check HOST --zone dmz`). With --probe-every
    it queues, that often, a probe job for each node of its zone not probed since; the zone's
    workers take them and record what each node serves: `certfleet status` shows that for a node
    in a zone instead of probing it from where it runs.
    """
    from certfleet.fleet.deploy import DeployOptions
    from certfleet.jobs.worker import Worker, WorkerOptions
    from certfleet.store import check_zone

    check_zone(zone)
    if heartbeat is not None and heartbeat >= lease:
        from certfleet.errors import InputError

        raise InputError("--heartbeat must be shorter than --lease")
    options = WorkerOptions(
        zone=zone,
        lease=lease,
        heartbeat=heartbeat,
        poll=poll,
        batch=batch,
        once=once,
        deploy=DeployOptions(concurrency=batch, probe_wait=probe_wait, command_timeout=timeout),
        probe_every=probe_every,
    )
    stopped_by: list[int] = []
    with open_store() as store:
        if store.url.startswith("sqlite") and zone is not None:
            print(
                "note: on a SQLite store every deploy runs in the process that asked; zones matter on a shared "
                "PostgreSQL store",
                file=sys.stderr,
            )
        worker = Worker(store, options, log=_log(as_json))
        if not as_json:
            print(f"worker {worker.name}: taking the jobs of {f'zone {zone}' if zone else 'no zone'}", flush=True)
        asyncio.run(_until_signalled(worker, stopped_by))
    if stopped_by:
        return 128 + stopped_by[0]
    return int(ExitCode.OK)


@app.command("jobs", epilog="Examples: certfleet jobs   ·   certfleet jobs --open   ·   certfleet jobs --json")
def jobs_cmd(
    *,
    deployment: Annotated[int | None, typer.Option("--deployment", "-d", help="Only this deployment's jobs.")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only queued and running jobs.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.", min=1)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List the jobs: queued, running (with the worker that holds each and until when), done, failed."""
    from certfleet.cli._common import when
    from certfleet.jobs.renewals import RENEW, describe
    from certfleet.store import JobState

    with open_store() as store:
        found = store.jobs(deployment=deployment, states=JobState.OPEN if open_only else (), limit=limit)

    def render(_: object) -> None:
        if not found:
            say("no jobs")
        for j in found:
            holder = f"{j.lease_owner} until {when(j.lease_until)}" if j.state == JobState.RUNNING else ""
            outcome = (j.result or {}).get("outcome") or ""
            lineage = j.lineage
            if j.kind == RENEW:  # a pass: of one lineage or of all; what it did, in one line
                lineage = j.lineage or "all"
                outcome = describe(j.result) or ("forced" if j.payload.get("force") else "")
            say(
                f"{j.id:>6}  {j.kind:<7} {lineage:<16} {j.node or '-':<16} {j.zone or '-':<10} "
                f"{j.state:<8} {outcome:<12} {holder}".rstrip()
            )

    # a renew job's payload says what it renews (the lineage or all, forced or not)
    listed = [{**j.to_dict(), "payload": j.payload} if j.kind == RENEW else j.to_dict() for j in found]
    emit({"jobs": listed}, as_json, render)
