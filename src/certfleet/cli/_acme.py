"""Issuing commands: ``issuer`` (ACME accounts and the manual CA), ``lineage set|show`` (a
lineage's issuers, solvers, profile, preferred chain, key policy), ``issue`` and ``revoke``.

A thin face over :mod:`certfleet.acme`; library modules are imported inside the commands so that
``certfleet --help`` never loads the ACME library. With ``--json`` an error is a JSON object on
stdout too, with the same exit code.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape

from certfleet.cli._common import JsonOpt, LineageArg, app, console, console_err, emit, open_store, write_json
from certfleet.cli._common import say as _say
from certfleet.clock import utc_now
from certfleet.errors import CertfleetError, EnvError, ExitCode, InputError

if TYPE_CHECKING:
    from certfleet.acme.issue import IssueEvent, IssueResult
    from certfleet.acme.model import IssuerRecord, LineagePolicy
    from certfleet.acme.preflight import PreflightReport
    from certfleet.acme.revoke import RevokeResult
    from certfleet.store import Store

issuer_app = typer.Typer(help="ACME accounts at CAs (EAB included), and the manual CA: who issues certificates.")
lineage_app = typer.Typer(help="How a lineage gets its certificates: issuers in order, solvers, profile, chain.")
app.add_typer(issuer_app, name="issuer")
app.add_typer(lineage_app, name="lineage")

F = TypeVar("F", bound=Callable[..., Any])
MAX_SECRET_FILE = 4096


def json_errors(fn: F) -> F:
    """With ``--json``, an error is printed as a JSON object on stdout (same exit code)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CertfleetError as exc:
            if not kwargs.get("as_json"):
                raise
            write_json({"error": str(exc), "hint": exc.hint, "exit_code": int(exc.exit_code)})
            return int(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def _read_secret(path: Path, what: str) -> str:
    try:
        data = path.read_bytes()[: MAX_SECRET_FILE + 1]
    except OSError as exc:
        raise InputError(f"cannot read the {what} {path}: {exc.strerror}") from exc
    text = data.decode("ascii", "replace").strip()
    if not text or len(data) > MAX_SECRET_FILE or "\n" in text:
        raise InputError(f"{path} does not hold one {what} on one line")
    return text


# -- issuer ------------------------------------------------------------------------------------------


def _issuer_lines(issuer: IssuerRecord, lineages: list[str]) -> None:
    _say(f"[bold]{escape(issuer.name)}[/]  {issuer.kind.value}", markup=True)
    if issuer.is_acme:
        rows = [
            ("directory", issuer.directory_url),
            ("account", issuer.account_url),
            ("status", issuer.status.value if issuer.status else None),
            ("contact", ", ".join(issuer.contact) or None),
            ("eab kid", issuer.eab_kid),
            ("profile", issuer.profile),
            ("caa", ", ".join(issuer.caa_identities) or "(the CA publishes none)"),
            ("terms", issuer.terms_of_service),
            ("key", f"{issuer.key_spec}  thumbprint {issuer.key_thumbprint}"),
            ("key changed", issuer.key_changed_at.strftime("%Y-%m-%d %H:%M UTC") if issuer.key_changed_at else None),
            ("ca bundle", "yes (a private CA's HTTPS root)" if issuer.ca_bundle else None),
        ]
        for label, value in rows:
            if value:
                _say(f"  {label:<11} {value}")
    else:
        _say("  CSR out, package in: `certfleet issue` makes the CSR, `certfleet import` takes what the CA sends")
    _say(f"  {'lineages':<11} {', '.join(lineages) or '-'}")


def _show(issuer: IssuerRecord, lineages: list[str], as_json: bool) -> None:
    emit({**issuer.to_dict(), "lineages": lineages}, as_json, lambda _: _issuer_lines(issuer, lineages))


@issuer_app.command(
    "add",
    epilog="Examples: certfleet issuer add le --acme https://acme-v02.api.letsencrypt.org/directory "
    "--contact mailto:pki@example.com --agree-tos  ·  certfleet issuer add sectigo --acme "
    "https://acme.sectigo.com/v2/OV --eab-kid KID --eab-hmac-file hmac.txt --agree-tos  ·  "
    "certfleet issuer add godaddy --manual",
)
@json_errors
def issuer_add(
    name: Annotated[str, typer.Argument(help="A short name for the issuer, e.g. le or sectigo.")],
    *,
    acme: Annotated[str | None, typer.Option("--acme", help="The CA's ACME directory URL.")] = None,
    manual: Annotated[bool, typer.Option("--manual", help="A CA without ACME: CSR out, package in.")] = False,
    eab_kid: Annotated[str | None, typer.Option("--eab-kid", help="External Account Binding key id.")] = None,
    eab_hmac_file: Annotated[
        Path | None, typer.Option("--eab-hmac-file", help="A file holding the EAB HMAC key (base64url).")
    ] = None,
    contact: Annotated[list[str] | None, typer.Option("--contact", help="mailto:ADDRESS for the CA; repeat.")] = None,
    agree_tos: Annotated[bool, typer.Option("--agree-tos", help="Agree to the CA's terms of service.")] = False,
    profile: Annotated[str | None, typer.Option("--profile", help="The CA profile to order by default.")] = None,
    ca_bundle: Annotated[
        Path | None,
        typer.Option("--ca-bundle", help="PEM roots of the ACME server's own HTTPS certificate (a private CA)."),
    ] = None,
    caa_identity: Annotated[
        list[str] | None,
        typer.Option("--caa-identity", help="The CA's CAA domain, when its directory does not say; repeat."),
    ] = None,
    as_json: JsonOpt = False,
) -> int:
    """Register an ACME account (its key made and sealed in the store), or add the manual CA."""
    from certfleet.acme import accounts

    if bool(acme) == manual:
        raise InputError("give either --acme DIRECTORY_URL or --manual", hint="certfleet issuer add NAME --acme URL")
    if (eab_kid is None) != (eab_hmac_file is None):
        raise InputError("EAB needs both --eab-kid and --eab-hmac-file")
    bundle = None
    if ca_bundle is not None:
        from certfleet.cli._common import read_inputs

        bundle = accounts.ca_bundle_pem(read_inputs([ca_bundle]))
    with open_store() as store:
        if manual:
            issuer = accounts.add_manual_issuer(store, name)
        else:
            eab = (eab_kid, _read_secret(eab_hmac_file, "EAB HMAC key")) if eab_kid and eab_hmac_file else None
            issuer = accounts.add_acme_issuer(
                store, name, acme or "", contact=contact or (), agree_tos=agree_tos, eab=eab, profile=profile,
                ca_bundle=bundle, caa_identities=caa_identity or (),
            )  # fmt: skip
    _show(issuer, [], as_json)
    return 0


@issuer_app.command("list")
@json_errors
def issuer_list(*, as_json: JsonOpt = False) -> int:
    """List the issuers."""
    with open_store() as store:
        rows = [(i, store.issuer_lineages(i.name)) for i in store.issuers()]

    def render(_: object) -> None:
        if not rows:
            _say("no issuers yet: `certfleet issuer add NAME --acme DIRECTORY_URL --agree-tos`")
        for i, lins in rows:
            where = i.directory_url or "CSR out, package in"
            state = i.status.value if i.status else ""
            _say(f"{i.name:<16} {i.kind.value:<7} {state:<12} {where:<56} {','.join(lins) or '-'}")

    emit({"issuers": [{**i.to_dict(), "lineages": lins} for i, lins in rows]}, as_json, render)
    return 0


@issuer_app.command("show")
@json_errors
def issuer_show(name: Annotated[str, typer.Argument(help="The issuer.")], *, as_json: JsonOpt = False) -> int:
    """Show one issuer."""
    with open_store() as store:
        issuer, lineages = store.issuer(name), store.issuer_lineages(name)
    _show(issuer, lineages, as_json)
    return 0


@issuer_app.command("remove")
@json_errors
def issuer_remove(name: Annotated[str, typer.Argument(help="The issuer.")], *, as_json: JsonOpt = False) -> int:
    """Forget an issuer and its account key (deactivate the account first if it is to end)."""
    from certfleet.acme import accounts

    with open_store() as store:
        issuer = accounts.remove(store, name)
    emit({"removed": issuer.to_dict()}, as_json, lambda _: _say(f"removed issuer {name}"))
    return 0


@issuer_app.command("rollover", epilog="Example: certfleet issuer rollover le")
@json_errors
def issuer_rollover(name: Annotated[str, typer.Argument(help="The issuer.")], *, as_json: JsonOpt = False) -> int:
    """Change the account key at the CA (RFC 8555 §7.3.5); the new key is sealed in the store."""
    from certfleet.acme import accounts

    with open_store() as store:
        issuer = accounts.rollover(store, name)
    emit(
        issuer.to_dict(),
        as_json,
        lambda _: _say(f"issuer {name}: the CA now knows the new key {issuer.key_thumbprint}"),
    )
    return 0


@issuer_app.command("deactivate")
@json_errors
def issuer_deactivate(
    name: Annotated[str, typer.Argument(help="The issuer.")],
    *,
    yes: Annotated[bool, typer.Option("--yes", help="Yes: the CA will never accept this account again.")] = False,
    as_json: JsonOpt = False,
) -> int:
    """Deactivate the ACME account at the CA, for good (RFC 8555 §7.3.6)."""
    from certfleet.acme import accounts

    if not yes:
        raise InputError("deactivating an account cannot be undone", hint=f"certfleet issuer deactivate {name} --yes")
    with open_store() as store:
        issuer = accounts.deactivate(store, name)
    emit(issuer.to_dict(), as_json, lambda _: _say(f"issuer {name}: the account is deactivated at the CA"))
    return 0


# -- lineage ---------------------------------------------------------------------------------------


def _policy_lines(policy: LineagePolicy, extra: dict[str, Any]) -> None:
    _say(f"[bold]{escape(policy.lineage)}[/]", markup=True)
    _say(f"  issuers    {' → '.join(policy.issuers) or '- (`certfleet lineage set LINEAGE --issuer NAME`)'}")
    for rule in policy.solvers:
        _say(f"  solver     {rule}")
    _say(f"  profile    {policy.profile or '-'}")
    _say(f"  chain      {policy.preferred_chain or 'the CA default'}")
    _say(f"  key        {'reuse the active key' if policy.reuse_key else 'a new key per order'}")
    for v in extra.get("versions", []):
        origin = f"from {v['issuer']}" if v.get("issuer") else "imported"
        revoked = f"  REVOKED ({v['revoked']})" if v.get("revoked") else ""
        mark = "*" if v["active"] else " "
        _say(f" {mark} v{v['number']:<3} {v['state']:<8} {origin}{revoked}")


@lineage_app.command(
    "set",
    epilog="Example: certfleet lineage set web --issuer sectigo --issuer le "
    "--solver '*.example.com=dns-01:rfc2136:/etc/certfleet/tsig.ini' --solver 'example.com=dns-01:rfc2136:"
    "/etc/certfleet/tsig.ini' --solver 'mbg.example.com=http-01:gw1' --profile tlsserver",
)
@json_errors
def lineage_set(
    lineage: LineageArg,
    *,
    issuers: Annotated[
        list[str] | None, typer.Option("--issuer", help="An issuer, in the order to try them; repeat.")
    ] = None,
    solvers: Annotated[
        list[str] | None,
        typer.Option("--solver", help="PATTERN=http-01[:NODE] or PATTERN=dns-01:METHOD:SPEC; repeat (replaces all)."),
    ] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="CA profile to order ('' clears).")] = None,
    preferred_chain: Annotated[
        str | None, typer.Option("--preferred-chain", help="Common name of the chain's top issuer ('' clears).")
    ] = None,
    reuse_key: Annotated[
        bool | None, typer.Option("--reuse-key/--new-key", help="Keep the active key, or a new key per order.")
    ] = None,
    as_json: JsonOpt = False,
) -> int:
    """Set how a lineage is issued: its issuers in order, the solver for each name, profile, chain."""
    from certfleet.acme.model import SolverRule

    rules = [SolverRule.parse(s) for s in solvers] if solvers is not None else None
    with open_store() as store:
        policy = store.set_policy(
            lineage, issuers=issuers, solvers=rules, profile=profile, preferred_chain=preferred_chain,
            reuse_key=reuse_key,
        )  # fmt: skip
    emit(policy, as_json, lambda p: _policy_lines(p, {}))
    return 0


@lineage_app.command("show")
@json_errors
def lineage_show(lineage: LineageArg, *, as_json: JsonOpt = False) -> int:
    """Show a lineage's issuers, solvers, profile, chain and key policy, and who issued each version."""
    with open_store() as store:
        policy = store.policy(lineage)
        origins = {i.version: i for i in store.issuances(lineage)}
        revoked = {r.version: r for r in store.revocations(lineage)}
        versions = [
            {
                "number": v.number,
                "state": v.state.value,
                "active": v.active,
                "fingerprint": v.fingerprint,
                "issuer": origins[v.number].issuer if v.number in origins else None,
                "revoked": revoked[v.number].reason.value if v.number in revoked else None,
            }
            for v in store.versions(lineage)
        ]
    extra = {"versions": versions}
    emit({**policy.to_dict(), **extra}, as_json, lambda _: _policy_lines(policy, extra))
    return 0


# -- issue -----------------------------------------------------------------------------------------


def _progress(event: IssueEvent) -> None:
    who = f"{event.issuer}: " if event.issuer else ""
    what = f"{event.name}: " if event.name else ""
    detail = f" {event.detail}" if event.detail else ""
    console_err.print(f"[dim]{escape(who + what + event.step + detail)}[/]", highlight=False, soft_wrap=True)


def _render_preflight(report: PreflightReport) -> None:
    for name in report.names:
        checks = report.for_name(name)
        ok = all(c.ok for c in checks)
        mark = "[green]ok[/]  " if ok else "[bold red]no[/]  "
        _say(f"{mark} [bold]{escape(name)}[/]  {escape(report.where.get(name, ''))}", markup=True)
        for c in checks:
            style = "yellow" if c.warning else "dim" if c.ok else "red"
            _say(f"       [{style}]{escape(c.what)}: {escape(c.message)}[/]", markup=True)
    for c in (c for c in report.checks if c.subject not in report.names):
        style = "dim" if c.ok else "red"
        _say(f"{'ok  ' if c.ok else 'no  '}  {escape(c.subject)}  [{style}]{escape(c.message)}[/]", markup=True)
    if report.ok:
        _say("[green]preflight passed[/]: the CA should accept every name", markup=True)
    else:
        _say("[bold red]preflight failed[/]: nothing was ordered", markup=True)


def _render_issue(result: IssueResult, *, now: dt.datetime) -> None:
    from certfleet.cli import _render

    for attempt in result.attempts:
        if attempt.error:
            _say(f"[yellow]{escape(attempt.error)}[/]", markup=True)
    if result.preflight is not None and not result.preflight.ok and result.issuer is None:
        _render_preflight(result.preflight)
        return
    if result.request is not None:
        r = result.request
        _say(f"issuer {result.issuer} is manual: version {r.version.number} of {r.lineage} waits for the CA")
        console.print(r.csr_pem.decode("ascii"), markup=False, highlight=False)
        _say(f"paste this CSR into the CA's form; then `certfleet import {r.lineage} FILES...`")
        return
    imported = result.imported
    if imported is None:
        return
    from certfleet.cli._fleet import _render_import

    _render_import(imported, now=now)
    _say(f"  issued by {result.issuer} ({len(result.names)} names, {result.seconds:.1f} s); key: {result.key}")
    if result.chain:
        how = (
            ""
            if result.preferred_found is None
            else " (preferred)"
            if result.preferred_found
            else " (preferred not offered)"
        )
        _say(f"  chain up to {result.chain}{how}")
    for line in result.cleanup:
        console.print(_render.verdict(False, "", f"cleanup: {line}"))


@contextmanager
def _no_pass_running(store: Store) -> Iterator[None]:
    """Hold the autopilot's pass lock while issuing: a pass (a timer's ``certfleet renew``,
    ``certfleet serve``) may be issuing the same lineage, so the two never run at once."""
    from certfleet.autopilot.lock import PassBusy, pass_lock

    lock = pass_lock(store)
    try:
        lock.acquire()
    except PassBusy as exc:
        raise EnvError(
            "an autopilot pass is running" + (f" ({exc.holder})" if exc.holder else "") + ": nothing issued",
            hint="the pass issues every due lineage; run certfleet issue again when it has ended",
        ) from exc
    try:
        yield
    finally:
        lock.release()


@app.command(
    "issue",
    epilog="Examples: certfleet issue web --dry-run  ·  certfleet issue web && certfleet deploy web",
)
@json_errors
def issue_cmd(
    lineage: LineageArg,
    *,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only the preflight: CAA, http-01 probes, DNS credentials.")
    ] = False,
    no_preflight: Annotated[bool, typer.Option("--no-preflight", help="Order without the preflight.")] = False,
    as_json: JsonOpt = False,
) -> int:
    """Obtain the lineage's certificate by ACME (its issuers in order) and store it as a new version."""
    from certfleet.acme.issue import dry_run as preflight_only
    from certfleet.acme.issue import issue
    from certfleet.acme.lookup import DnsSettings

    dns = DnsSettings.from_env()
    with open_store() as store:
        if dry_run:
            report = asyncio.run(preflight_only(store, lineage, dns=dns))
            emit(report, as_json, _render_preflight)
            return int(ExitCode.OK if report.ok else ExitCode.PROBLEMS)
        progress = None if as_json else _progress
        with _no_pass_running(store):
            result = asyncio.run(issue(store, lineage, progress=progress, dns=dns, check_first=not no_preflight))
    now = utc_now()
    emit(result, as_json, lambda r: _render_issue(r, now=now))
    return int(ExitCode.OK if result.ok else ExitCode.PROBLEMS)


# -- revoke ----------------------------------------------------------------------------------------


@app.command("revoke", epilog="Example: certfleet revoke web --version 3 --reason keyCompromise")
@json_errors
def revoke_cmd(
    lineage: LineageArg,
    *,
    reason: Annotated[
        str,
        typer.Option(
            "--reason",
            help="keyCompromise, superseded, cessationOfOperation, affiliationChanged, privilegeWithdrawn, unspecified",
        ),
    ],
    version: Annotated[int | None, typer.Option("--version", help="The version (default: the active one).")] = None,
    as_json: JsonOpt = False,
) -> int:
    """Revoke a version at its CA; it is never activated or deployed again."""
    from certfleet.acme.model import RevocationReason
    from certfleet.acme.revoke import revoke

    why = RevocationReason.parse(reason)
    with open_store() as store:
        result = revoke(store, lineage, why, version=version)

    def render(r: RevokeResult) -> None:
        rec = r.record
        told = f"the CA ({rec.issuer}) revoked it" if r.told_ca else "marked revoked in the store"
        _say(f"version {rec.version} of {rec.lineage} revoked ({rec.reason.value}): {told}")
        if r.note:
            _say(f"  note: {r.note}")
        if r.was_active:
            _say(f"  it was the active version: `certfleet issue {rec.lineage}`, then `certfleet deploy {rec.lineage}`")

    emit(result, as_json, render)
    return 0
