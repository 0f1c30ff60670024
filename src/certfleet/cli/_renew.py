"""``certfleet renew`` (one autopilot pass, for cron or a systemd timer) and ``certfleet alert``
(where alerts go: Apprise URLs, shown masked; the repeat interval; the expiry stages).

A thin face over :mod:`certfleet.autopilot`; the library is imported inside the commands so that
``certfleet --help`` loads none of it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from certfleet.cli._common import JsonOpt, app, console, console_err, emit, open_store, write_json
from certfleet.errors import ExitCode, InputError

if TYPE_CHECKING:
    from certfleet.autopilot.alerts import AlertSent, Delivery
    from certfleet.autopilot.renew import LineageRun, RenewReport
    from certfleet.store import Store

alert_app = typer.Typer(help="Where alerts go (Apprise URLs: e-mail, Slack, Teams, Matrix, webhooks...).")
app.add_typer(alert_app, name="alert")

_STYLE = {
    "issued": "green",
    "deployed": "green",
    "requested": "cyan",
    "nothing": "dim",
    "waiting": "yellow",
    "skipped": "yellow",
    "failed": "bold red",
}


def _say(text: str, *, err: bool = False) -> None:
    (console_err if err else console).print(text, markup=False, soft_wrap=True, highlight=False)


def _run_line(run: LineageRun) -> None:
    style = _STYLE.get(run.action.value, "cyan")
    reason = run.plan.reason.value
    console.print(
        f"[bold]{escape(run.lineage)}[/]  [{style}]{run.action.value}[/]  {escape(run.summary)}  [dim]({reason})[/]",
        soft_wrap=True,
        highlight=False,
    )
    if run.hint and not run.ok:
        console.print(f"    [dim]hint:[/] {escape(run.hint)}", soft_wrap=True, highlight=False)
    if run.deployed is not None:
        for node in run.deployed.report.nodes:
            if not node.ok:
                console.print(
                    f"    {escape(node.node)}: {node.outcome.value}: {escape(node.message)}",
                    soft_wrap=True,
                    highlight=False,
                )


def _alert_line(sent: AlertSent, *, dry_run: bool) -> None:
    if dry_run:
        _say(f"would send {sent.kind.value}: {sent.title}")
        return
    if not sent.deliveries:
        _say(f"{sent.kind.value} not sent (no destination: `certfleet alert add URL`): {sent.title}")
        return
    where = ", ".join(d.shown + ("" if d.ok else f" (failed: {d.error})") for d in sent.deliveries)
    _say(f"{sent.kind.value} {'sent' if sent.delivered else 'not delivered'}: {sent.title} -> {where}")


def _render(report: RenewReport, *, streamed: bool) -> None:
    if not streamed:
        for run in report.lineages:
            _run_line(run)
    if not report.lineages:
        _say("no lineage yet")
    for sent in report.alerts:
        _alert_line(sent, dry_run=report.dry_run)
    unsent = {c.key for c in report.conditions} - {a.key for a in report.alerts}
    if report.dry_run and report.conditions and not report.alerts:
        _say(f"{len(report.conditions)} alert(s) open already, none due to be sent again")
    elif unsent and not report.dry_run:
        _say(f"{len(unsent)} alert(s) still open (sent before; repeated after the repeat interval)")


@app.command(
    "renew",
    epilog="Examples: certfleet renew   ·   certfleet renew --dry-run   ·   certfleet renew --lineage web --force"
    "   ·   certfleet renew --queue --zone dmz --wait 600",
)
def renew_cmd(
    *,
    lineage: Annotated[
        list[str] | None, typer.Option("--lineage", "-l", help="Only this lineage; repeat for more.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be done and why; change nothing, send nothing.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Renew now, whatever the plan says.")] = False,
    no_preflight: Annotated[bool, typer.Option("--no-preflight", help="Order without the ACME preflight.")] = False,
    no_probe: Annotated[
        bool, typer.Option("--no-probe", help="Do not probe every node after the pass (no serving alerts).")
    ] = False,
    concurrency: Annotated[
        int | None, typer.Option(help="Nodes deployed at once (8).", min=1, max=64, show_default=False)
    ] = None,
    manual_days: Annotated[
        int, typer.Option("--manual-days", help="Remind manual lineages this many days ahead.", min=0, max=3650)
    ] = 30,
    metrics_file: Annotated[
        Path | None,
        typer.Option("--metrics-file", help="Write the autopilot's metrics there (node_exporter's textfile format)."),
    ] = None,
    queue: Annotated[
        bool,
        typer.Option(
            "--queue",
            help="Queue the pass as a job for the workers of --zone and print its id (a store shared on PostgreSQL).",
        ),
    ] = False,
    zone: Annotated[
        str | None, typer.Option("--zone", "-z", help="With --queue: for the workers of this zone (default: no zone).")
    ] = None,
    wait: Annotated[
        float | None,
        typer.Option("--wait", help="With --queue: follow the job this many seconds; print what the pass did.", min=0),
    ] = None,
    as_json: JsonOpt = False,
) -> int:
    """Renew every due lineage (issue, import, deploy, prove on every node); say when the others are due.

    One pass: each due lineage is issued, imported, deployed to every node and proven served;
    the others are left alone with the time they will be due; the alerts are sent.

    Safe to run from several timers at once: one pass runs, the others say so and stop (exit 0).
    A failure never touches what is live; it is retried at a later pass, after a backoff.

    With --queue (PostgreSQL) the pass becomes a job of the queue, run by a `certfleet worker`
    of --zone (the one where the CA and the nodes are reachable); one asked while the same
    lineage's job is open is that job. --wait follows it and exits as the pass would have here.
    """
    from certfleet.autopilot.renew import RenewSettings, renew
    from certfleet.fleet.deploy import DeployOptions

    if queue:
        from certfleet.renewal import MANUAL_DAYS

        if dry_run or metrics_file is not None or concurrency is not None:
            raise InputError(
                "--queue does not take --dry-run, --metrics-file or --concurrency",
                hint="the worker that runs the job deploys with its own --batch; run `certfleet renew --dry-run` here",
            )
        return _queue_renew(
            lineage or [], force=force, preflight=not no_preflight, probe=not no_probe,
            manual_days=manual_days if manual_days != MANUAL_DAYS else None, zone=zone, wait=wait, as_json=as_json,
        )  # fmt: skip
    if zone is not None or wait is not None:
        raise InputError("--zone and --wait go with --queue", hint="certfleet renew --queue --zone dmz --wait 600")
    settings = RenewSettings(
        manual_days=manual_days,
        preflight=not no_preflight,
        probe=not no_probe,
        deploy=DeployOptions(concurrency=concurrency or 8),
    )
    streamed = not as_json
    with open_store() as store:
        report = asyncio.run(
            renew(
                store, lineages=lineage or (), dry_run=dry_run, force=force, settings=settings,
                on_lineage=_run_line if streamed else None,
            )
        )  # fmt: skip
        if metrics_file is not None and not report.busy:
            _write_metrics(store, metrics_file)
    if report.busy:
        if as_json:
            write_json(report.to_dict())
        else:
            _say(report.busy, err=True)
        return int(ExitCode.OK)
    emit(report, as_json, lambda r: _render(r, streamed=streamed))
    return int(ExitCode.OK if report.ok else ExitCode.PROBLEMS)


def _queue_renew(
    lineages: list[str],
    *,
    force: bool,
    preflight: bool,
    probe: bool,
    manual_days: int | None,
    zone: str | None,
    wait: float | None,
    as_json: bool,
) -> int:
    """``renew --queue``: a ``renew`` job for the workers of ``zone`` (the open one, if any); with
    ``wait``, followed until it ends, and rendered as the pass it ran."""
    from certfleet.clock import utc_now
    from certfleet.jobs.renewals import RENEW, renew_payload, summary_exit_code
    from certfleet.jobs.runner import follow_jobs
    from certfleet.store import JobState, check_zone

    check_zone(zone)
    if len(set(lineages)) > 1:
        raise InputError("--queue renews one --lineage, or every lineage", hint="queue one job per lineage")
    name = lineages[0] if lineages else None
    workers = f"zone {zone}" if zone else "no zone"
    with open_store() as store:
        if store.url.startswith("sqlite"):
            raise InputError(
                "a queued renewal needs a store shared on PostgreSQL",
                hint="on a SQLite store a renewal runs in the process that asks for it: certfleet renew",
            )
        if name is not None:
            store.lineage(name)  # an unknown lineage is refused before anything is queued
        asked = utc_now()
        payload = renew_payload(name, force=force, preflight=preflight, probe=probe, manual_days=manual_days)
        job = store.enqueue_job(RENEW, lineage=name or "", zone=zone, payload=payload, unique=True)
        fresh = job.created_at >= asked
        what = f"renew job {job.id} ({name or 'all lineages'}{', forced' if job.payload.get('force') else ''})"
        if not as_json:
            if fresh:
                _say(f"queued {what} for the workers of {workers}")
            else:
                _say(f"{what} is {job.state} already: this ask is that job")
        if wait is None:
            if as_json:
                write_json({"job": {**job.to_dict(), "payload": job.payload}, "queued": fresh, "waited": False})
            return int(ExitCode.OK)
        [job] = asyncio.run(follow_jobs(store, [job.id], wait=wait)) or [job]
    result = job.result or {}
    if job.state in JobState.OPEN:
        if job.state == JobState.QUEUED:
            line = f"no worker of {workers} took {what} within {wait:g} s (it stays queued)"
        else:
            line = f"{what} is still running on {job.lease_owner} after {wait:g} s"
        if as_json:
            write_json(
                {"job": {**job.to_dict(), "payload": job.payload}, "queued": fresh, "waited": True, "error": line}
            )
        else:
            _say(line, err=True)
            _say("  hint: `certfleet jobs --open` follows it; `certfleet worker" + (f" --zone {zone}" if zone else "")
                 + "` runs it", err=True)  # fmt: skip
        return int(ExitCode.ENVIRONMENT)
    if as_json:
        write_json(
            {"job": {**job.to_dict(), "payload": job.payload}, "queued": fresh, "waited": True, "summary": result}
        )
    else:
        _render_summary(job.id, result, job.lease_owner)
    return summary_exit_code(job)


def _render_summary(job_id: int, result: dict[str, Any], worker: str | None) -> None:
    """A ``renew`` job's summary, as a pass run here prints its report."""
    if result.get("busy"):
        _say(str(result["busy"]), err=True)
        return
    if "counts" not in result:
        _say(f"renew job {job_id} failed: {result.get('error') or 'no result'}", err=True)
        if result.get("hint"):
            _say(f"  hint: {result['hint']}", err=True)
        return
    for entry in result.get("lineages") or []:
        style = _STYLE.get(str(entry.get("action")), "cyan")
        console.print(
            f"[bold]{escape(str(entry['lineage']))}[/]  [{style}]{escape(str(entry['action']))}[/]  "
            f"{escape(str(entry.get('summary') or ''))}  [dim]({escape(str(entry.get('reason') or ''))})[/]",
            soft_wrap=True,
            highlight=False,
        )
        if entry.get("hint") and not entry.get("ok"):
            console.print(f"    [dim]hint:[/] {escape(str(entry['hint']))}", soft_wrap=True, highlight=False)
        for node in entry.get("failed") or []:
            _say(f"    {node['node']}: {node['outcome']}: {node['message']}")
    if not result.get("lineages") and not result.get("left_out"):
        _say("no lineage yet")
    if result.get("left_out"):
        _say(f"{result['left_out']} lineage(s) more, not kept in the job's result (`certfleet jobs --json`)")
    by = f" by {worker}" if worker else ""
    _say(f"renew job {job_id}: ran{by}; {result.get('alerts_sent', 0)} alert(s) sent")


def _write_metrics(store: Store, path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from certfleet.autopilot.schedule import families
    from certfleet.fsutil import atomic_write
    from certfleet.metrics import Snapshot

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(families(store)))
    try:
        atomic_write(path, generate_latest(registry), mode=0o644)
    except OSError as exc:
        raise InputError(f"cannot write the metrics to {path}: {exc.strerror or exc}") from exc


# -- alert -------------------------------------------------------------------------------------------

EventsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--events",
        "-e",
        help="Only these events (comma-separated or repeated): renewal-failed, deploy-rolled-back, deploy-failed, "
        "serving-other, expiring, manual-waiting, revoked-served. Default: all.",
    ),
]


def _read_url(url: str) -> str:
    if url != "-":
        return url.strip()
    line = sys.stdin.readline(8192).strip()
    if not line:
        raise InputError("no URL on standard input")
    return line


def _deliveries(deliveries: list[Delivery]) -> None:
    for d in deliveries:
        _say(
            f"{d.destination:>3}  {'delivered' if d.ok else 'FAILED':<9}  {d.shown}"
            + (f"  {d.error}" if d.error else "")
        )


@alert_app.command(
    "add",
    epilog="Examples: certfleet alert add 'mailtos://user:password@mail.example.com?to=pki@example.com'  ·  "
    "certfleet alert add json://hooks.example.com/certfleet --events renewal-failed,deploy-failed  ·  "
    "certfleet alert add - < url.txt (keeps the URL out of the shell's history)",
)
def alert_add(
    url: Annotated[str, typer.Argument(help="An Apprise URL, or - to read it from standard input.")],
    *,
    events: EventsOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Send alerts to this destination (sealed in the store; only its masked form is ever shown)."""
    from certfleet.autopilot.alerts import Alerts, parse_events

    wanted = parse_events(events or ())
    with open_store() as store:
        added = Alerts(store).add(_read_url(url), wanted)
    emit(
        added,
        as_json,
        lambda d: _say(f"alert destination {d.id} added: {d.shown} ({', '.join(wanted) or 'all events'})"),
    )
    return 0


@alert_app.command("list")
def alert_list(*, as_json: JsonOpt = False) -> int:
    """The destinations, the settings, and the alerts open now."""
    from certfleet.autopilot.alerts import Alerts

    with open_store() as store:
        alerts = Alerts(store)
        destinations, opened, settings = alerts.destinations(), alerts.open_alerts(), alerts.settings()
    payload = {
        "destinations": [d.to_dict() for d in destinations],
        "settings": settings.to_dict(),
        "open": [a.to_dict() for a in opened],
    }

    def render(_: object) -> None:
        if not destinations:
            _say("no alert destination yet: `certfleet alert add URL` (an Apprise URL)")
        for d in destinations:
            _say(f"{d.id:>3}  {d.shown}  ({', '.join(d.events) or 'all events'})")
        hours = settings.repeat.total_seconds() / 3600
        days = ", ".join(str(d) for d in settings.expiry_days)
        expiry = f"{days} days left" if days else "two thirds and five sixths of the lifetime"
        _say(f"alerts repeat every {hours:g} h; expiry alerts at {expiry}")
        for a in opened:
            sent = (
                f"sent {a.sent}x, last {a.last_sent_at:%Y-%m-%d %H:%M} UTC" if a.last_sent_at else "not delivered yet"
            )
            _say(f"open: {a.title} (since {a.first_seen_at:%Y-%m-%d %H:%M} UTC; {sent})")

    emit(payload, as_json, render)
    return 0


@alert_app.command("remove")
def alert_remove(
    destination: Annotated[int, typer.Argument(help="The destination's number (`certfleet alert list`).")],
    *,
    as_json: JsonOpt = False,
) -> int:
    """Stop sending alerts to a destination."""
    from certfleet.autopilot.alerts import Alerts

    with open_store() as store:
        gone = Alerts(store).remove(destination)
    emit(gone, as_json, lambda d: _say(f"alert destination {d.id} removed: {d.shown}"))
    return 0


@alert_app.command("test")
def alert_test(
    destination: Annotated[int | None, typer.Argument(help="One destination (default: every one).")] = None,
    *,
    as_json: JsonOpt = False,
) -> int:
    """Send a test message, and say where it was delivered."""
    from certfleet.autopilot.alerts import Alerts

    with open_store() as store:
        deliveries = Alerts(store).test(destination)
    emit({"deliveries": [d.to_dict() for d in deliveries]}, as_json, lambda _: _deliveries(deliveries))
    return int(ExitCode.OK if all(d.ok for d in deliveries) else ExitCode.PROBLEMS)


@alert_app.command(
    "config", epilog="Examples: certfleet alert config --repeat-hours 12 --expiry-days 14 --expiry-days 3"
)
def alert_config(
    *,
    repeat_hours: Annotated[
        float | None, typer.Option("--repeat-hours", help="Send an open alert again after this many hours (24).")
    ] = None,
    expiry_days: Annotated[
        list[int] | None,
        typer.Option("--expiry-days", help="Alert at these days left instead of 2/3 and 5/6 of the lifetime; repeat."),
    ] = None,
    lifetime: Annotated[
        bool, typer.Option("--lifetime", help="Alert past 2/3 and 5/6 of the lifetime again (the default).")
    ] = False,
    as_json: JsonOpt = False,
) -> int:
    """Show or change the repeat interval and when expiry alerts start."""
    from certfleet.autopilot.alerts import Alerts

    if lifetime and expiry_days:
        raise InputError("give --expiry-days or --lifetime, not both")
    days = [] if lifetime else expiry_days
    with open_store() as store:
        alerts = Alerts(store)
        changed = repeat_hours is not None or days is not None
        settings = alerts.set_settings(repeat_hours=repeat_hours, expiry_days=days) if changed else alerts.settings()
    emit(settings, as_json, lambda s: _say(", ".join(f"{k}: {v}" for k, v in s.to_dict().items())))
    return 0
