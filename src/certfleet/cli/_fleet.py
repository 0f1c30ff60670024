"""Fleet commands: init, node, apply, export-fleet, request, import, status, history, export, trust.

A thin face over :mod:`certfleet.store`, :mod:`certfleet.fleet.lineage`,
:mod:`certfleet.fleet.status` and :mod:`certfleet.fleet.fleetfile`. Library modules are imported
inside the commands, so that ``certfleet --help`` starts fast.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from certfleet.cli._common import (
    JsonOpt,
    LineageArg,
    PasswordFileOpt,
    PasswordOpt,
    app,
    console,
    emit,
    open_store,
    passwords,
    read_inputs,
)
from certfleet.errors import ExitCode, InputError

if TYPE_CHECKING:
    from certfleet.fleet.fleetfile import ApplyResult
    from certfleet.fleet.lineage import ExportResult, ImportResult, RequestResult
    from certfleet.fleet.model import NodeSpec
    from certfleet.fleet.status import HistoryReport, StatusReport
    from certfleet.store import TrustAnchor

node_app = typer.Typer(help="Add, list, show and remove nodes (the servers that present a certificate).")
trust_app = typer.Typer(help="Roots that imports trust besides Mozilla's: a private or test CA.")
app.add_typer(node_app, name="node")
app.add_typer(trust_app, name="trust")

KnownHostsOpt = Annotated[
    Path | None,
    typer.Option(
        "--known-hosts",
        help="SSH: the known_hosts file that lists the node's host key (default ~/.ssh/known_hosts).",
        exists=True,
        dir_okay=False,
        resolve_path=True,
    ),
]
IdentityOpt = Annotated[
    Path | None,
    typer.Option(
        "--identity",
        help="SSH: the private key file to log in with (default: the SSH agent and ~/.ssh/id_*).",
        exists=True,
        dir_okay=False,
        resolve_path=True,
    ),
]


def _say(text: str, *, markup: bool = False) -> None:
    # one line each; user values (names, paths, commands) are never read as Rich markup
    console.print(text, markup=markup, soft_wrap=True, highlight=False)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _short(fp: str | None) -> str:
    return f"{fp[:16]}…" if fp else "-"


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


# -- init ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InitResult:
    home: str
    created: bool
    keys: str

    def to_dict(self) -> dict[str, Any]:
        return {"home": self.home, "created": self.created, "keys": self.keys}


@app.command("init", epilog="Example: certfleet init   (CERTFLEET_HOME chooses the folder)")
def init_cmd(*, as_json: JsonOpt = False) -> None:
    """Create the store: a private folder with the database and the master key (idempotent)."""
    from certfleet.store import KEY_FILE, PASSPHRASE_ENV, Store

    with Store.init() as store:
        result = InitResult(str(store.home), store.created, store.key_protection)

    def render(r: InitResult) -> None:
        if r.created:
            how = f"sealed with ${PASSPHRASE_ENV}" if r.keys == "passphrase" else f"sealed under {r.home}/{KEY_FILE}"
            _say(f"created the store in {r.home} (private keys {how}; back it up)")
        else:
            _say(f"the store exists in {r.home}; nothing to do")

    emit(result, as_json, render)


# -- nodes -----------------------------------------------------------------------------------------


def _node_lines(spec: NodeSpec, lineages: list[str]) -> None:
    _say(f"[bold]{escape(spec.name)}[/]", markup=True)
    _say(f"  names      {', '.join(spec.names)}")
    for t in spec.targets:
        _say(f"  target     {t.kind}:{t.path}" + (f"  {dict(t.options)}" if t.options else ""))
    _say(f"  transport  {spec.transport}")
    for label, value in (("test", spec.test_cmd), ("reload", spec.reload_cmd), ("probe", spec.probe)):
        if value:
            _say(f"  {label:<10} {value}")
    for key, value in spec.options.items():
        _say(f"  {'option':<10} {key} = {value}")
    _say(f"  lineages   {', '.join(lineages) or '-'}")


@node_app.command(
    "add",
    epilog=(
        "Example: certfleet node add gw1 --name gw.example.com --target nginx:/etc/nginx/tls "
        "--transport ssh://deploy@gw.example.com --known-hosts ~/.ssh/known_hosts --identity ~/.ssh/deploy_ed25519 "
        "--test 'nginx -t' --reload 'nginx -s reload' --probe gw.example.com:443 --lineage web"
    ),
)
def node_add(
    name: Annotated[str, typer.Argument(help="A short name for the server, e.g. main or gw1.")],
    *,
    names: Annotated[list[str], typer.Option("--name", "-n", help="A DNS name (or IP) the node serves; repeat.")],
    targets: Annotated[list[str], typer.Option("--target", "-t", help="KIND:PATH, e.g. nginx:/etc/nginx/tls; repeat.")],
    transport: Annotated[str, typer.Option(help="local, or ssh://user@host[:port].")] = "local",
    known_hosts: KnownHostsOpt = None,
    identity: IdentityOpt = None,
    test: Annotated[str | None, typer.Option("--test", help="Config test run on the node, e.g. 'nginx -t'.")] = None,
    reload: Annotated[str | None, typer.Option("--reload", help="Reload command, e.g. 'nginx -s reload'.")] = None,
    probe: Annotated[str | None, typer.Option("--probe", help="HOST:PORT where the node serves TLS.")] = None,
    lineage: Annotated[str | None, typer.Option("--lineage", "-l", help="Make the node a member of it.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a node."""
    from certfleet.fleet.nodes import make_node

    files = {"known_hosts": known_hosts, "identity": identity}
    options = {key: str(path) for key, path in files.items() if path is not None}
    with open_store() as store:
        spec = make_node(
            name,
            names,
            targets,
            transport=transport,
            test_cmd=test,
            reload_cmd=reload,
            probe=probe,
            options=options,
            store_home=store.home,
        )
        store.add_node(spec, lineage=lineage)
        lineages = store.node_lineages(name)
    emit({**spec.to_dict(), "lineages": lineages}, as_json, lambda _: _node_lines(spec, lineages))


@dataclass(frozen=True, slots=True)
class NodeList:
    nodes: tuple[tuple[NodeSpec, tuple[str, ...]], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [{**spec.to_dict(), "lineages": list(lins)} for spec, lins in self.nodes]}


@node_app.command("list")
def node_list(*, as_json: JsonOpt = False) -> None:
    """List the nodes."""
    with open_store() as store:
        result = NodeList(tuple((n, tuple(store.node_lineages(n.name))) for n in store.nodes()))

    def render(r: NodeList) -> None:
        if not r.nodes:
            _say("no nodes yet: `certfleet node add NAME --name DNS --target KIND:PATH`")
        for spec, lins in r.nodes:
            kinds = ",".join(t.kind for t in spec.targets)
            _say(
                f"{spec.name:<16} {', '.join(spec.names):<48} {kinds:<14} {spec.transport:<28} {','.join(lins) or '-'}"
            )

    emit(result, as_json, render)


@node_app.command("show")
def node_show(name: Annotated[str, typer.Argument(help="The node.")], *, as_json: JsonOpt = False) -> None:
    """Show one node."""
    with open_store() as store:
        spec, lineages = store.node(name), store.node_lineages(name)
    emit({**spec.to_dict(), "lineages": lineages}, as_json, lambda _: _node_lines(spec, lineages))


@node_app.command("remove")
def node_remove(name: Annotated[str, typer.Argument(help="The node.")]) -> None:
    """Remove a node (its deployment history is kept)."""
    with open_store() as store:
        store.remove_node(name)
    _say(f"removed node {name}")


# -- fleet file ------------------------------------------------------------------------------------


@app.command("apply", epilog="Example: certfleet apply fleet.toml")
def apply_cmd(
    file: Annotated[Path, typer.Argument(help="The fleet file (TOML); - is stdin.")],
    *,
    as_json: JsonOpt = False,
) -> None:
    """Create or update the nodes and lineages a fleet file declares."""
    from certfleet.fleet import fleetfile

    [(source, data)] = read_inputs([file])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("not UTF-8 text", source=source) from exc
    try:
        fleet = fleetfile.loads(text)
    except InputError as exc:
        raise exc.with_source(source) from None
    with open_store() as store:
        result = fleetfile.apply(store, fleet)

    def render(r: ApplyResult) -> None:
        for label, items in (("created", r.created), ("updated", r.updated), ("unchanged", r.unchanged)):
            for item in items:
                _say(f"{label:<10} {item}")
        if not r.changed:
            _say("nothing changed")

    emit(result, as_json, render)


@app.command("export-fleet", epilog="Example: certfleet export-fleet --out fleet.toml")
def export_fleet_cmd(
    *,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Write every node and lineage as a fleet file (what `apply` reads)."""
    from certfleet import fsutil
    from certfleet.fleet import fleetfile

    with open_store() as store:
        text = fleetfile.dumps(fleetfile.export_fleet(store))
    if out is None or str(out) == "-":
        sys.stdout.write(text)
    else:
        fsutil.atomic_write(out, text.encode("utf-8"), mode=0o644)
        _say(f"wrote {out}")


# -- request and import ----------------------------------------------------------------------------


@app.command(
    "request",
    epilog="Example: certfleet request web --node main --node gw1 --key rsa:2048 "
    "--subject 'C=CA,O=Example,CN=mc.example.com' --out web.csr",
)
def request_cmd(
    lineage: LineageArg,
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the CSR for the CA; - is stdout.")],
    nodes: Annotated[
        list[str] | None, typer.Option("--node", help="A node whose names the certificate covers; repeat.")
    ] = None,
    names: Annotated[list[str] | None, typer.Option("--name", "-n", help="A further name to cover; repeat.")] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="rsa:2048 (the default), rsa:3072, ec:p256 or ec:p384.")
    ] = None,
    subject: Annotated[str | None, typer.Option(help="e.g. 'C=CA,O=Example,CN=mc.example.com'.")] = None,
    limit: Annotated[int, typer.Option(help="The most names the CA allows in one certificate.")] = 15,
    wildcards: Annotated[bool, typer.Option("--wildcards", help="Let the plan use wildcards.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Make a key inside the store and the CSR for every name of the lineage's nodes."""
    from certfleet import fsutil
    from certfleet.fleet.lineage import request

    with open_store() as store:
        result = request(
            store, lineage, nodes=nodes or (), names=names or (), key_spec=key, subject=subject, limit=limit,
            wildcards=wildcards,
        )  # fmt: skip
    to_stdout = str(out) == "-"
    if to_stdout:
        sys.stdout.write(result.csr_pem.decode("ascii"))
        return
    fsutil.atomic_write(out, result.csr_pem, mode=0o644)

    def render(r: RequestResult) -> None:
        p = r.plan
        _say(f"lineage {r.lineage}: version {r.version.number} waits for the CA ({r.key_spec} key, in the store)")
        _say(f"subject   {r.subject}")
        _say(f"names     {p.count} of the CA's limit of {p.limit}:")
        for entry in p.entries:
            covers = [n for n, by in p.covered_by.items() if by == entry and n != entry]
            _say(f"  {entry}" + (f"   (covers {', '.join(covers)})" if covers else ""))
        for note in p.notes:
            _say(f"  note: {note}")
        _say(f"wrote {out}: paste it into the CA's form; then `certfleet import {r.lineage} FILES...`")

    emit(result, as_json, render)


@app.command(
    "import",
    epilog="Examples: certfleet import web godaddy.zip  ·  certfleet import web server.pfx --password-file pw.txt",
)
def import_cmd(
    lineage: LineageArg,
    files: Annotated[list[Path], typer.Argument(help="What the CA sent, in any format (zip, PEM, PFX, P7B, DER).")],
    *,
    password: PasswordOpt = None,
    password_file: PasswordFileOpt = None,
    no_fetch: Annotated[bool, typer.Option("--no-fetch", help="Do not fetch missing intermediates (AIA).")] = False,
    as_json: JsonOpt = False,
) -> int:
    """Match the CA's certificate to the waiting key, fix its chain, check every node's names, store it."""
    from certfleet.aia import HttpFetcher
    from certfleet.fleet.lineage import import_package

    inputs = read_inputs(files)
    with open_store() as store:
        result = import_package(
            store,
            lineage,
            inputs,
            now=_now(),
            passwords=passwords(password, password_file),
            fetcher=None if no_fetch else HttpFetcher(),
        )
    emit(result, as_json, _render_import)
    return int(ExitCode.OK if result.accepted else ExitCode.PROBLEMS)


def _render_import(r: ImportResult) -> None:
    from certfleet.certinfo import describe
    from certfleet.cli import _render

    now = _now()
    console.print(_render.cert_line(describe(r.chain.leaf)))
    _say(f"  from {r.leaf_source}; key: {r.key_source}")
    root = describe(r.chain.root) if r.chain.root is not None else None
    console.print(_render.chain_tree([describe(c) for c in r.chain.chain], root, now=now))
    for cov in r.coverage:
        who = f"node {cov.node}" if cov.node else "lineage names"
        if cov.coverage.complete:
            _say(f"  {who}: every name covered ({', '.join(cov.coverage.covered)})")
        for missing in cov.coverage.missing:
            _say(f"  {escape(who)}: [bold red]missing[/] {escape(missing.reason)}", markup=True)
    refusals = {(p.code, p.subject, p.message) for p in r.problems}
    shown = list(r.problems) + [p for p in r.chain.problems if (p.code, p.subject, p.message) not in refusals]
    if shown:
        _render.print_problems(console, shown)
    if r.accepted and r.version is not None:
        done = "already imported as" if r.already else "stored as"
        step = f"`certfleet deploy {r.lineage}`"
        console.print(
            _render.verdict(True, f"{done} version {r.version.number} of {r.lineage}, now active: {step}", "")
        )
    elif not r.accepted:
        console.print(_render.verdict(False, "", f"refused: nothing was stored for {r.lineage}"))


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
        report = asyncio.run(status(store, now=_now(), lineage=lineage, probe=not no_probe, timeout=timeout))
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
        for column in ("node", "probe", "last deployment", "serves now"):
            table.add_column(column)
        for n in lin.nodes:
            last = "-"
            if n.last_outcome is not None:
                last = f"v{n.last_version} {n.last_outcome.value}"
                if n.last_failed_step:
                    last += f" at {n.last_failed_step}"
                last += f"  {_when(n.last_deployed_at)}"
            serving = n.serving.value
            if n.served_version is not None:
                serving += f" (v{n.served_version})"
            if n.report is not None and n.report.probe.ok and not n.report.ok:
                serving += ", refused by a strict client"
            style = _HEALTH_STYLE[n.health.value]
            table.add_row(n.node, escape(n.probe or "-"), escape(last), f"[{style}]{escape(serving)}[/]")
        if lin.nodes:
            console.print(table)
        problems = [*lin.all_problems, *(p for n in lin.nodes for p in n.problems)]
        if problems:
            _render.print_problems(console, problems)
        console.print()


@app.command("history", epilog="Example: certfleet history web")
def history_cmd(lineage: LineageArg, *, as_json: JsonOpt = False) -> None:
    """The versions of a lineage and its deployments, node by node."""
    from certfleet.fleet.status import history

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
        _say(f"  #{d.id} v{d.version} by {d.actor} at {_when(d.finished_at)}")
        for res in d.results:
            why = f" at {res.failed_step}" if res.failed_step else ""
            _say(f"      {res.node:<16} {res.outcome.value}{why}")


# -- export ----------------------------------------------------------------------------------------


class ExportFormatOpt(StrEnum):
    # the values of fleet.lineage.ExportFormat, spelled here so that --help needs no library import
    PKCS12 = "pkcs12"
    PEM = "pem"
    APACHE = "apache"
    NGINX = "nginx"
    HAPROXY = "haproxy"


@app.command(
    "export",
    epilog="Example: certfleet export web --format pkcs12 --out web.pfx --password-file pw.txt --legacy",
)
def export_cmd(
    lineage: LineageArg,
    *,
    fmt: Annotated[ExportFormatOpt, typer.Option("--format", "-f", help="pkcs12: one file; the others: a folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The .pfx file, or the folder for PEM files.")],
    password: PasswordOpt = None,
    password_file: PasswordFileOpt = None,
    no_key_password: Annotated[
        bool, typer.Option("--no-key-password", help="Write the key unencrypted (HAProxy needs it so).")
    ] = False,
    legacy: Annotated[
        bool, typer.Option("--legacy", help="PKCS#12 that Windows Server 2016 and old Java read (3DES, SHA-1 MAC).")
    ] = False,
    version: Annotated[int | None, typer.Option("--version", help="A version other than the active one.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the key and chain for a server certfleet cannot reach (the key encrypted with a password)."""
    from certfleet.fleet.lineage import ExportFormat, export_lineage

    given = passwords(password, password_file)
    with open_store() as store:
        result = export_lineage(
            store,
            lineage,
            ExportFormat(fmt.value),
            out,
            password=given[0] if given else None,
            no_key_password=no_key_password,
            legacy=legacy,
            version=version,
        )

    def render(r: ExportResult) -> None:
        how = "encrypted with the password" if r.key_encrypted else "UNENCRYPTED (mode 0600)"
        _say(f"exported version {r.version} of {r.lineage} as {r.format.value}; the key is {how}:")
        for f in r.files:
            _say(f"  {f}")

    emit(result, as_json, render)


# -- trust -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustList:
    anchors: tuple[TrustAnchor, ...]
    added: tuple[bool, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = [a.to_dict() for a in self.anchors]
        for item, new in zip(out, self.added, strict=False):
            item["added"] = new
        return {"anchors": out}


def _render_anchors(r: TrustList) -> None:
    if not r.anchors:
        _say("no trust anchors: imports trust Mozilla's roots only")
    for i, a in enumerate(r.anchors):
        state = ("added    " if r.added[i] else "known    ") if r.added else ""
        _say(f"{state}{a.fingerprint}  {a.subject}")


@trust_app.command("add", epilog="Example: certfleet trust add private-root.pem")
def trust_add(
    files: Annotated[list[Path], typer.Argument(help="CA certificates, in any format.")],
    *,
    as_json: JsonOpt = False,
) -> None:
    """Trust a private or test CA's root for imports."""
    from certfleet.certinfo import describe
    from certfleet.formats import read_pool

    pool = read_pool(read_inputs(files))
    certs = list(pool.unique_certificates())
    if not certs:
        raise InputError("no certificate among the inputs", hint="give the CA's root certificate")
    with open_store() as store:
        pairs = []
        for pc in certs:
            if not describe(pc.cert).is_ca:
                raise InputError("not a CA certificate: a server certificate is no trust anchor", source=pc.source)
            pairs.append(store.add_trust_anchor(pc.cert))
    result = TrustList(tuple(a for a, _ in pairs), tuple(new for _, new in pairs))
    emit(result, as_json, _render_anchors)


@trust_app.command("list")
def trust_list(*, as_json: JsonOpt = False) -> None:
    """List the trust anchors added to the store."""
    with open_store() as store:
        result = TrustList(tuple(store.trust_anchors()))
    emit(result, as_json, _render_anchors)


@trust_app.command("remove")
def trust_remove(
    fingerprint: Annotated[str, typer.Argument(help="The anchor's SHA-256 fingerprint (8 hex digits or more).")],
) -> None:
    """Stop trusting an anchor."""
    with open_store() as store:
        anchor = store.remove_trust_anchor(fingerprint)
    _say(f"removed {anchor.fingerprint}  {anchor.subject}")
