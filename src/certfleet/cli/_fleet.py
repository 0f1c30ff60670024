"""Fleet commands: init, node, apply, export-fleet, request, import, export, trust (what the fleet
has and what happened to it: ``_status``).

A thin face over :mod:`certfleet.store`, :mod:`certfleet.fleet.lineage` and
:mod:`certfleet.fleet.fleetfile`. Library modules are imported
inside the commands, so that ``certfleet --help`` starts fast.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
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
from certfleet.cli._common import say as _say
from certfleet.cli._common import when as _when
from certfleet.clock import utc_now
from certfleet.errors import ExitCode, InputError
from certfleet.export import OutputFormat

if TYPE_CHECKING:
    from certfleet.fleet.fleetfile import ApplyResult
    from certfleet.fleet.lineage import ExportResult, ImportResult, RequestResult
    from certfleet.fleet.model import NodeSpec
    from certfleet.store import TrustAnchor, VersionRecord

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
    webroot: Annotated[
        str | None, typer.Option("--webroot", help="ACME http-01: the folder the node's web server publishes.")
    ] = None,
    zone: Annotated[
        str | None, typer.Option("--zone", help="Its zone: only `certfleet worker --zone NAME` deploys it.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a node."""
    from certfleet.fleet.nodes import make_node
    from certfleet.store import check_name

    files = {"known_hosts": known_hosts, "identity": identity}
    options = {key: str(path) for key, path in files.items() if path is not None}
    if webroot:
        options["webroot"] = webroot
    if lineage is not None:
        check_name("lineage", lineage)  # a bad --lineage adds no node
    if zone is not None:
        check_name("zone", zone)
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
        if zone is not None:
            store.set_node_zone(name, zone)
        lineages = store.node_lineages(name)
    out = {**spec.to_dict(), "lineages": lineages, **({"zone": zone} if zone else {})}
    emit(out, as_json, lambda _: _node_lines(spec, lineages))


@node_app.command("zone", epilog="Examples: certfleet node zone gw1 dmz   ·   certfleet node zone gw1 --none")
def node_zone(
    name: Annotated[str, typer.Argument(help="The node.")],
    zone: Annotated[str | None, typer.Argument(help="The zone whose workers deploy it.")] = None,
    *,
    none: Annotated[bool, typer.Option("--none", help="Put it in no zone (any zoneless worker or deploy).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show or set the zone of a node: a node in a zone is deployed by `certfleet worker --zone NAME`."""
    from certfleet.store import check_name

    if zone is not None and none:
        raise InputError("give a zone or --none, not both")
    if zone is not None:
        check_name("zone", zone)
    with open_store() as store:
        store.node(name)  # an unknown node is an error, also when only shown
        changed = store.set_node_zone(name, zone) if zone is not None or none else False
        now = store.node_zones().get(name)
    same = "" if changed or not (zone or none) else " (unchanged)"
    emit(
        {"node": name, "zone": now, "changed": changed},
        as_json,
        lambda _: _say(f"{name}: {'zone ' + now if now else 'no zone'}{same}"),
    )


@dataclass(frozen=True, slots=True)
class NodeList:
    nodes: tuple[tuple[NodeSpec, tuple[str, ...]], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [{**spec.to_dict(), "lineages": list(lins)} for spec, lins in self.nodes]}


@node_app.command("list")
def node_list(*, as_json: JsonOpt = False) -> None:
    """List the nodes."""
    with open_store() as store:
        # every node's lineages from one read of the lineages, never a query per node
        member: dict[str, list[str]] = {}
        for record in store.lineages():
            for name in record.nodes:
                member.setdefault(name, []).append(record.name)
        result = NodeList(tuple((n, tuple(member.get(n.name, ()))) for n in store.nodes()))

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


@app.command("apply", epilog="Examples: certfleet apply fleet.toml --dry-run   ·   certfleet apply fleet.toml")
def apply_cmd(
    file: Annotated[Path, typer.Argument(help="The fleet file (TOML); - is stdin.")],
    *,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create or update the nodes and lineages a fleet file declares, showing each field that changes.

    A field the file leaves out stays as the store has it; to clear one, give its key empty
    (subject = "", names = [], test = "", zone = "" for no zone).
    """
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
        result = fleetfile.apply(store, fleet, dry_run=dry_run)

    def render(r: ApplyResult) -> None:
        labels = (("would create", "would update") if r.dry_run else ("created", "updated")) + ("unchanged",)
        width = max(len(label) for label in labels)
        for label, items in zip(labels, (r.created, r.updated, r.unchanged), strict=True):
            for item in items:
                _say(f"{label:<{width}}  {item}")
                for change in r.changes.get(item, ()):
                    _say(f"{'':<{width}}    {change.field}: {_shown(change.before)} -> {_shown(change.after)}")
        if not r.changed:
            _say("nothing to change" if r.dry_run else "nothing changed")
        elif r.dry_run:
            _say("dry run: nothing was changed")

    emit(result, as_json, render)


def _shown(value: Any) -> str:
    """A field's value in a diff line: lists and tables as JSON, nothing as (none)."""
    if value is None or value in ([], {}):
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


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
        str | None, typer.Option("--key", help="rsa:2048 (the default), rsa:3072, rsa:4096, ec:p256 or ec:p384.")
    ] = None,
    subject: Annotated[str | None, typer.Option(help="e.g. 'C=CA,O=Example,CN=mc.example.com'.")] = None,
    limit: Annotated[int, typer.Option(help="The most names the CA allows in one certificate.")] = 15,
    wildcards: Annotated[
        bool,
        typer.Option(
            "--wildcards/--no-wildcards",
            help="Let the plan use wildcards where two or more names share a parent (as `names --wildcards`).",
        ),
    ] = False,
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
    activate: Annotated[
        bool,
        typer.Option("--activate", help="Make it the active version even if it was imported before (or withdrawn)."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Accept a version that expires sooner, covers fewer names or has a weaker key than the active one.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> int:
    """Match the CA's certificate to the waiting key, fix its chain, check every node's names, store it.

    A new version becomes the active one. A certificate imported before changes nothing unless
    --activate; one worse than the active version is refused unless --force.
    """
    from certfleet.aia import HttpFetcher
    from certfleet.fleet.lineage import import_package

    inputs = read_inputs(files)
    now = utc_now()
    with open_store() as store:
        result = import_package(
            store,
            lineage,
            inputs,
            now=now,
            passwords=passwords(password, password_file),
            fetcher=None if no_fetch else HttpFetcher(),
            activate=activate,
            force=force,
        )
    emit(result, as_json, lambda r: _render_import(r, now=now))
    return int(ExitCode.OK if result.accepted else ExitCode.PROBLEMS)


def _render_import(r: ImportResult, *, now: dt.datetime) -> None:
    from certfleet.certinfo import describe
    from certfleet.cli import _render

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
    if r.comparison is not None:
        c = r.comparison
        _say(f"  compared with the active version {c.active}:")
        sooner, weaker = "  sooner" * c.expires_sooner, "  weaker" * c.weaker_key
        _say(f"    expires  {c.not_after:%Y-%m-%d} (active: {c.active_not_after:%Y-%m-%d}){sooner}")
        _say(f"    key      {c.key} (active: {c.active_key}){weaker}")
        if c.lost_names:
            _say(f"    names    not covered any more: {', '.join(c.lost_names)}")
        if r.forced:
            _say("  accepted anyway (--force)")
    if r.accepted and r.version is not None:
        console.print(_render.verdict(True, _import_outcome(r, r.version), ""))
    elif not r.accepted:
        console.print(_render.verdict(False, "", f"refused: nothing was stored for {r.lineage}"))


def _import_outcome(r: ImportResult, version: VersionRecord) -> str:
    number, step = version.number, f"`certfleet deploy {r.lineage}`"
    if not r.already:
        return f"stored as version {number} of {r.lineage}, now active: {step}"
    if r.activated:
        return f"already imported as version {number} of {r.lineage}, made active again: {step}"
    if version.active:
        return f"already imported as version {number} of {r.lineage}, the active version: nothing changed"
    withdrawn = version.withdrawn_at
    why = f", withdrawn by a rollback on {_when(withdrawn)}" if withdrawn is not None else ""
    return (
        f"already imported as version {number} of {r.lineage}{why}: nothing changed, the active version stays "
        f"{r.active if r.active is not None else '-'} (--activate makes version {number} the active one)"
    )


# -- export ----------------------------------------------------------------------------------------


@app.command(
    "export",
    epilog="Example: certfleet export web --format pkcs12 --out web.pfx --password-file pw.txt --legacy",
)
def export_cmd(
    lineage: LineageArg,
    *,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="pem, apache, nginx: a folder; the others: one file.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The file, or the folder for pem, apache and nginx.")],
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
    from certfleet.fleet.lineage import export_lineage

    given = passwords(password, password_file)
    with open_store() as store:
        result = export_lineage(
            store,
            lineage,
            fmt,
            out,
            password=given[0] if given else None,
            no_key_password=no_key_password,
            legacy=legacy,
            version=version,
        )

    def render(r: ExportResult) -> None:
        how = "encrypted with the password" if r.key_encrypted else "UNENCRYPTED (mode 0600)"
        key = f"; the key is {how}" if r.format.holds_key else " (no key)"
        _say(f"exported version {r.version} of {r.lineage} as {r.format.value}{key}:")
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
