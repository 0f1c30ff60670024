"""``certfleet check`` and ``certfleet watch``: what every endpoint serves, once or round after round."""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from certfleet.cli._common import JsonOpt, app, console, console_err, read_inputs
from certfleet.errors import ExitCode, InputError, StoreError
from certfleet.probe import StartTLS
from certfleet.problems import EXPIRING_DAYS, Severity

if TYPE_CHECKING:
    from cryptography import x509
    from rich.text import Text

    from certfleet.check import CheckReport, EndpointReport
    from certfleet.endpoint import Endpoint
    from certfleet.fleet.status import StatusReport
    from certfleet.jobs.zone_checks import ZoneChecked
    from certfleet.trust import TrustStore

# the progress bar is worth drawing only when a run is long enough to wait for
_PROGRESS_FROM = 20
# the report lists every endpoint up to this many; beyond, only those with problems (or --all)
_LIST_ALL_UP_TO = 50
# and shows the chain and cipher of each up to this many
_DETAIL_UP_TO = 5


class FailOn(StrEnum):
    WARNING = "warning"
    ERROR = "error"


TargetsArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="host, host:port (443), [v6-address]:port, or a URL (https, smtp, submission, smtps, imap, imaps, "
        "ldaps, sips).",
        show_default=False,
    ),
]
FileOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--file", "-f", help="Read targets from FILE: one a line, optionally followed by the name; # comments."
    ),
]
NodesOpt = Annotated[bool, typer.Option("--nodes", help="Check every node's probe endpoint from the store.")]
LineageOpt = Annotated[str | None, typer.Option("--lineage", help="With --nodes: only the nodes of this lineage.")]
NameOpt = Annotated[
    str | None,
    typer.Option("--name", help="Name sent as SNI and expected in the certificate (default: the host)."),
]
StartTLSOpt = Annotated[
    StartTLS | None,
    typer.Option(
        "--starttls",
        case_sensitive=False,
        help="Upgrade with STARTTLS first (default: by port: 25/587 smtp, 143 imap).",
    ),
]
TrustOpt = Annotated[list[Path] | None, typer.Option("--trust", help="Also trust the roots in FILE (repeatable).")]
TrustOnlyOpt = Annotated[
    list[Path] | None, typer.Option("--trust-only", help="Trust only the roots in FILE (repeatable).")
]
SystemTrustOpt = Annotated[
    bool, typer.Option("--system-trust", "--system", help="Start from the system's roots instead of Mozilla's.")
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.1, max=600, help="Seconds for each connection.")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", min=1, max=10_000, help="Connections at once.")]
CheckZoneOpt = Annotated[
    str | None,
    typer.Option(
        "--zone",
        "-z",
        help="Have a worker of this zone probe the targets (`certfleet worker --zone NAME`; a PostgreSQL store).",
    ),
]
WaitOpt = Annotated[
    float | None,
    typer.Option(
        "--wait",
        min=0,
        max=86_400,
        help="With --zone, or --nodes on PostgreSQL: seconds to wait for the zones' workers (default 60).",
    ),
]
ExpiringOpt = Annotated[
    int, typer.Option("--expiring-days", min=0, max=3650, help="Warn when a certificate has fewer days left.")
]


def _targets(
    *,
    targets: list[str] | None,
    files: list[Path] | None,
    nodes: bool,
    lineage: str | None,
    name: str | None,
    starttls: StartTLS | None,
) -> list[Endpoint]:
    from certfleet.endpoint import MAX_ENDPOINTS, parse_endpoint, read_endpoints, unique

    found: list[Endpoint] = [parse_endpoint(t, name=name, starttls=starttls) for t in targets or []]
    for source, data in read_inputs(files or []):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError("is not a text file of targets", source=source) from exc
        found.extend(read_endpoints(text, source=source, name=name, starttls=starttls))
    if nodes:
        found.extend(_node_targets(lineage, starttls))
    elif lineage is not None:
        raise InputError("--lineage goes with --nodes", hint="add --nodes")
    if not found:
        raise InputError("nothing to check", hint="give targets, --file LIST or --nodes")
    if len(found) > MAX_ENDPOINTS:
        raise InputError(f"more than {MAX_ENDPOINTS} targets", hint="split the list")
    return unique(found)


def _node_targets(lineage: str | None, starttls: StartTLS | None) -> list[Endpoint]:
    # the endpoints `certfleet status` probes, checked the same way
    from certfleet.fleet.probing import probe_targets
    from certfleet.store import Store

    with Store.open() as store:
        specs = store.nodes(lineage)
    found = probe_targets(specs, starttls=starttls)
    out = list(found.endpoints.values())
    if found.skipped:
        console_err.print(f"not checked (no probe endpoint): {', '.join(found.skipped)}", highlight=False)
    if not out:
        raise StoreError(
            "no node in the store has a probe endpoint" if specs else "the store has no nodes",
            hint="give each node a probe endpoint (host:port), or name targets on the command line",
        )
    return out


def _trust(trust: list[Path] | None, trust_only: list[Path] | None, system: bool, nodes: bool) -> TrustStore:
    from certfleet.trust import load_trust

    store = load_trust(read_inputs(trust or []), read_inputs(trust_only or []), system=system)
    if trust_only:
        return store
    # the roots the store was told to trust (a private CA) are what its nodes chain to, whether
    # they are checked with --nodes or by name; without a store, only --nodes needs one
    anchors = _store_anchors(required=nodes)
    if anchors:
        store = store.plus(anchors, source=f"{store.source} + the store's roots")
    return store


def _store_anchors(*, required: bool) -> list[x509.Certificate]:
    from certfleet.store import Store

    try:
        with Store.open() as opened:
            return [a.cert for a in opened.trust_anchors()]
    except StoreError:
        if required:
            raise
        return []


def _status(endpoint: EndpointReport, fail_on: Severity) -> str:
    if not endpoint.ok:
        return "[bold red]FAIL[/]"
    if endpoint.severity is Severity.WARNING:
        return "[bold red]warn[/]" if endpoint.fails(fail_on) else "[yellow]warn[/]"
    return "[green]ok[/]"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _expires(endpoint: EndpointReport, now: dt.datetime) -> Text:
    """Days left, short enough for a narrow table; in the colours the rest of certfleet uses."""
    from rich.text import Text

    from certfleet.cli._render import days_left_text

    if not endpoint.chain:
        return Text("-")
    full = days_left_text(endpoint.chain[0], now)
    days = endpoint.days_left
    if days is None or days < 0 or now < endpoint.chain[0].not_before:
        return Text("expired" if days is not None and days < 0 else "not yet", style=full.style)
    return Text(f"{days} days", style=full.style)


def _render(report: CheckReport, fail_on: Severity, *, show_all: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    from certfleet.cli._render import chain_tree, problem_list

    now = report.checked_at
    # a healthy fleet of hundreds is a wall of "ok": past a screenful, list only what needs a look
    listed = [e for e in report.endpoints if show_all or len(report.endpoints) <= _LIST_ALL_UP_TO or e.problems]
    with_names = any(e.name != e.target.host for e in listed)
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    # names and addresses are what a reader searches for: never folded; the problems column gives way
    table.add_column("target", no_wrap=True)
    if with_names:
        table.add_column("name", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("TLS", no_wrap=True)
    table.add_column("expires", no_wrap=True)
    table.add_column("problems")
    for endpoint in listed:
        shown = str(endpoint.target)
        if endpoint.target.label:
            shown = f"{endpoint.target.label} ({shown})"
        codes = " ".join(dict.fromkeys(p.code.value for p in endpoint.problems)) or "-"
        row: list[str | Text] = [shown, endpoint.name] if with_names else [shown]
        row += [
            _status(endpoint, fail_on),
            (endpoint.probe.tls_version or "-").replace("TLSv", ""),
            _expires(endpoint, now),
            codes,
        ]
        table.add_row(*row)
    if listed:
        console.print(table)
    # a few endpoints: each one's chain as sent and its cipher, as for one certificate
    detailed = len(listed) <= _DETAIL_UP_TO
    for endpoint in listed:
        if endpoint.problems or (detailed and endpoint.chain):
            console.print(Text(f"\n{endpoint.target.label or endpoint.target}  ({endpoint.name})", style="bold"))
        if detailed and endpoint.chain:
            console.print(chain_tree(endpoint.chain, None, now=now, label="chain as sent", rooted=endpoint.verified))
            protocol = endpoint.probe.tls_version or "-"
            console.print(Text(f"{protocol}, cipher {endpoint.probe.cipher or '-'}"), highlight=False)
        if endpoint.problems:
            console.print(problem_list(endpoint.problems))
    counts = report.counts()
    failing = len(report.failed(fail_on))
    line = (
        f"\n{_plural(len(report.endpoints), 'endpoint')} in {report.elapsed:.1f} s: {counts['ok']} ok, "
        f"{counts['warning']} with warnings, {counts['failing']} failing"
    )
    if report.deadline_reached:
        line += " (the overall deadline was reached)"
    hidden = len(report.endpoints) - len(listed)
    if hidden:
        line += f"; {hidden} without problems not listed (--all lists them)"
    console.print(Text(line, style="bold red" if failing else "bold green"), soft_wrap=True)


def _progress(total: int, enabled: bool) -> tuple[Callable[[EndpointReport], None] | None, Callable[[], None]]:
    """A Rich progress bar on stderr for long runs at a terminal; nothing otherwise."""
    if not enabled or total < _PROGRESS_FROM or not console_err.is_terminal:
        return None, lambda: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("checking"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console_err,
        transient=True,
    )
    task = progress.add_task("check", total=total)
    progress.start()

    def advance(_endpoint: EndpointReport) -> None:
        progress.advance(task)

    return advance, progress.stop


@app.command("check")
def check_command(  # noqa: PLR0917 (Typer turns each parameter into an option)
    targets: TargetsArg = None,
    file: FileOpt = None,
    nodes: NodesOpt = False,
    lineage: LineageOpt = None,
    name: NameOpt = None,
    starttls: StartTLSOpt = None,
    trust: TrustOpt = None,
    trust_only: TrustOnlyOpt = None,
    system_trust: SystemTrustOpt = False,
    timeout: TimeoutOpt = 5.0,
    concurrency: ConcurrencyOpt = 200,
    deadline: Annotated[
        float | None, typer.Option("--deadline", min=0.1, help="Seconds for the whole run; the rest time out.")
    ] = None,
    expiring_days: ExpiringOpt = EXPIRING_DAYS,
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", case_sensitive=False, help="Exit 1 on errors only, or on warnings too.")
    ] = FailOn.ERROR,
    show_all: Annotated[
        bool, typer.Option("--all", help=f"List every endpoint, not only those with problems past {_LIST_ALL_UP_TO}.")
    ] = False,
    zone: CheckZoneOpt = None,
    wait: WaitOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Probe endpoints as a strict client would: the chain each one sends, and whether a phone accepts it.

    On a PostgreSQL store, --nodes has a node in a zone probed by a worker of its zone, and
    --zone NAME has the targets probed by a worker of that zone; the answers are judged here.

    Examples: certfleet check www.example.com  |  certfleet check -f fleet.txt --json  |
    certfleet check smtp://mail.example.com  |  certfleet check 10.0.0.5:8443 --name www.example.com  |
    certfleet check 10.1.0.5:443 --zone dmz
    """
    from certfleet.check import check

    if zone is not None:
        from certfleet.store import check_zone

        check_zone(zone)
        if nodes:
            raise InputError(
                "--zone goes with targets, not with --nodes",
                hint="with --nodes, each node in a zone is probed by a worker of its own zone",
            )
    elif wait is not None and not nodes:
        raise InputError("--wait goes with --zone or --nodes", hint="add --zone NAME, or leave --wait out")
    found = _targets(targets=targets, files=file, nodes=nodes, lineage=lineage, name=name, starttls=starttls)
    store = _trust(trust, trust_only, system_trust, nodes)
    waited = _DEFAULT_WAIT if wait is None else wait
    extras: Sequence[ZoneChecked | None] = ()
    on_result, stop = _progress(len(found), enabled=zone is None)
    try:
        if zone is not None:
            report, extras = _in_zone(found, zone, wait=waited, timeout=timeout, trust=store, days=expiring_days)
        else:
            local = functools.partial(
                check,
                trust=store,
                timeout=timeout,
                concurrency=concurrency,
                deadline=deadline,
                expiring_days=expiring_days,
                on_result=on_result,
            )
            report, extras = _with_zones(found, local, nodes=nodes, wait=waited, trust=store, days=expiring_days)
    finally:
        stop()
    severity = Severity(fail_on.value)
    if as_json:
        items = report.to_list()
        for item, extra in zip(items, extras, strict=False):
            if extra is not None:
                item.update(extra.to_dict())
        _write_json_list(items)
    else:
        _render(report, severity, show_all=show_all)
        _render_workers(report, extras)
    return int(ExitCode.PROBLEMS if report.failed(severity) else ExitCode.OK)


_DEFAULT_WAIT = 60.0  # seconds `check --zone` and `check --nodes` wait for the zones' workers


def _in_zone(
    found: Sequence[Endpoint], zone: str, *, wait: float, timeout: float, trust: TrustStore, days: int
) -> tuple[CheckReport, list[ZoneChecked | None]]:
    """``check --zone``: every target probed by a worker of ``zone``, judged here."""
    import time

    from certfleet.check import CheckReport, run_async
    from certfleet.clock import utc_now
    from certfleet.jobs.zone_checks import check_in_zone
    from certfleet.store import Store

    started = time.monotonic()
    with Store.open() as opened:
        if opened.url.startswith("sqlite"):
            raise InputError(  # as `deploy --queue` and `renew --queue` on SQLite
                "--zone needs a shared PostgreSQL store, whose zones have workers; this store is SQLite",
                hint="run the check from a machine that reaches the endpoint, without --zone",
            )
        checked = run_async(
            check_in_zone(opened, found, zone, wait=wait, timeout=timeout, trust=trust, expiring_days=days)
        )
    report = CheckReport(tuple(c.report for c in checked), checked_at=utc_now(), elapsed=time.monotonic() - started)
    return report, list(checked)


def _with_zones(
    found: Sequence[Endpoint],
    local: Callable[[Sequence[Endpoint]], Coroutine[Any, Any, CheckReport]],
    *,
    nodes: bool,
    wait: float,
    trust: TrustStore,
    days: int,
) -> tuple[CheckReport, list[ZoneChecked | None]]:
    """The targets checked here (``local``), but with ``--nodes`` on a PostgreSQL store the nodes
    in a zone, probed by a worker of their zone and judged here; in the order given."""
    import asyncio
    import time

    from certfleet.check import CheckReport, run_async

    if not nodes:
        return run_async(local(found)), [None] * len(found)
    from certfleet.jobs.zone_checks import probe_nodes, zoned_nodes
    from certfleet.store import Store

    started = time.monotonic()
    with Store.open() as opened:
        by_node = {e.label: e for e in found if e.label is not None}
        zones = zoned_nodes(opened, by_node)
        if not zones:  # SQLite, or no chosen node in a zone: every one probed here, as always
            return run_async(local(found)), [None] * len(found)
        remote = {n: by_node[n] for n in zones}
        here = [e for e in found if e.label not in zones]

        async def both() -> tuple[CheckReport, dict[str, ZoneChecked]]:
            ran = probe_nodes(opened, remote, zones, wait=wait, trust=trust, expiring_days=days)
            mine, theirs = await asyncio.gather(local(here), ran)
            return mine, theirs

        mine, theirs = run_async(both())
    reports = iter(mine.endpoints)
    merged: list[EndpointReport] = []
    extras: list[ZoneChecked | None] = []
    for endpoint in found:
        extra = theirs.get(endpoint.label) if endpoint.label is not None else None
        merged.append(extra.report if extra is not None else next(reports))
        extras.append(extra)
    report = CheckReport(
        tuple(merged), checked_at=mine.checked_at, elapsed=time.monotonic() - started,
        deadline_reached=mine.deadline_reached,
    )  # fmt: skip
    return report, extras


def _render_workers(report: CheckReport, extras: Sequence[ZoneChecked | None]) -> None:
    """Which worker probed each endpoint a zone's worker probed (those none did say so in their problems)."""
    from certfleet.cli._common import when

    for endpoint, extra in zip(report.endpoints, extras, strict=False):
        if extra is None or not extra.by:
            continue
        shown = f"{endpoint.target.label} ({endpoint.target})" if endpoint.target.label else str(endpoint.target)
        at = f" at {when(extra.at)}" if extra.at is not None else ""
        console.print(f"{shown}: probed by {extra.by}{at} (zone {extra.zone}, job {extra.job})", highlight=False)


def _write_json_list(items: list[dict[str, object]]) -> None:
    # One endpoint a line: still one JSON list, easy to read and to grep, and written by the C
    # encoder (``indent`` falls back to the pure-Python one, a tenth of a run at 1,000 endpoints).
    lines = ",\n".join(json.dumps(item, ensure_ascii=False) for item in items)
    sys.stdout.write(f"[\n{lines}\n]\n" if items else "[]\n")


def _round_line(report: CheckReport) -> str:
    counts = report.counts()
    when = report.checked_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"{when}: {_plural(len(report.endpoints), 'endpoint')} in {report.elapsed:.1f} s: {counts['ok']} ok, "
        f"{counts['warning']} with warnings, {counts['failing']} failing"
    )


def _fleet_status(
    lineage: str | None, trust: TrustStore, *, timeout: float, expiring_days: int
) -> Callable[[CheckReport], Awaitable[StatusReport]]:
    """The fleet's status from a round of `watch --nodes`: what `certfleet status` says, from the
    endpoints the round checked."""
    from certfleet.fleet.status import status
    from certfleet.store import Store

    async def fleet(report: CheckReport) -> StatusReport:
        with Store.open() as store:
            return await status(
                store,
                now=report.checked_at,
                lineage=lineage,
                timeout=timeout,
                trust=trust,
                expiring_days=expiring_days,
                reuse=report,
            )

    return fleet


@app.command("watch")
def watch_command(  # noqa: PLR0917 (Typer turns each parameter into an option)
    targets: TargetsArg = None,
    file: FileOpt = None,
    nodes: NodesOpt = False,
    lineage: LineageOpt = None,
    name: NameOpt = None,
    starttls: StartTLSOpt = None,
    trust: TrustOpt = None,
    trust_only: TrustOnlyOpt = None,
    system_trust: SystemTrustOpt = False,
    timeout: TimeoutOpt = 5.0,
    concurrency: ConcurrencyOpt = 200,
    expiring_days: ExpiringOpt = EXPIRING_DAYS,
    interval: Annotated[
        float, typer.Option("--interval", min=1, max=86_400, help="Seconds from the start of one round to the next.")
    ] = 300,
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="Serve /metrics on host:port (default 127.0.0.1:9109; port 0: any free one)."),
    ] = None,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="One round, then exit: print the metrics, or with --listen serve them until scraped once "
            "(at most --interval seconds).",
        ),
    ] = False,
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", case_sensitive=False, help="With --once: exit 1 on errors, or warnings too.")
    ] = FailOn.ERROR,
) -> int:
    """Check endpoints round after round and expose the results as Prometheus metrics.

    Examples: certfleet watch --nodes  |  certfleet watch -f fleet.txt --interval 600 --listen 0.0.0.0:9109
    """
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.process_collector import ProcessCollector

    from certfleet.check import run_async
    from certfleet.metrics import CheckMetrics, MetricsServer
    from certfleet.watch import Watcher

    def found() -> Sequence[Endpoint]:
        return _targets(targets=targets, files=file, nodes=nodes, lineage=lineage, name=name, starttls=starttls)

    # validate everything once before serving anything
    first = found()
    store = _trust(trust, trust_only, system_trust, nodes)

    def current() -> Sequence[Endpoint]:
        # the store's nodes are read again each round, so new nodes are watched without a restart
        return found() if nodes else first

    registry = CollectorRegistry()
    metrics = CheckMetrics(registry)
    address = listen if listen is not None else (None if once else "127.0.0.1:9109")
    server: MetricsServer | None = None
    if address is not None:
        ProcessCollector(registry=registry)
        server = MetricsServer(address, registry, metrics)
        console_err.print(f"serving metrics on {server.url}", highlight=False, soft_wrap=True)
        sys.stderr.flush()
    watcher = Watcher(
        current,
        store,
        metrics,
        interval=interval,
        timeout=timeout,
        concurrency=concurrency,
        expiring_days=expiring_days,
        on_round=lambda report: console_err.print(_round_line(report), highlight=False),
        on_error=lambda exc: console_err.print(f"[bold red]round failed:[/] {exc}", highlight=False),
        status=_fleet_status(lineage, store, timeout=timeout, expiring_days=expiring_days) if nodes else None,
    )
    if not once:
        run_async(watcher.run())
        return int(ExitCode.OK)
    report = run_async(watcher.round())
    if server is None:
        sys.stdout.write(generate_latest(registry).decode())
    else:
        server.served_report.wait(interval)
        server.close()
    failing = report.failed(Severity(fail_on.value))
    return int(ExitCode.PROBLEMS if failing else ExitCode.OK)
