"""The commands that read certificate packages: inspect, verify, chain, convert, match, names.

Each command reads its inputs at the edge (files, passwords, the clock: to the second, as the
reports show it), calls the library, and renders the result: through ``certfleet.cli._render``
for people, through the result's ``to_dict()`` for ``--json``. Library modules are imported
inside the commands, so that starting one command does not pay for the others (``verify --each``
is benchmarked whole-process).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from certfleet.cli import _render as views
from certfleet.cli._common import (
    JsonOpt,
    PasswordFileOpt,
    PasswordOpt,
    app,
    emit,
    passwords,
    read_inputs,
    write_json,
)
from certfleet.cli._each import EachOptions, EachResult, check_leaf_file, run_each
from certfleet.cli._inputs import load_trust_files as _trust
from certfleet.cli._inputs import parse_at, read_pool_files, read_secret
from certfleet.clock import utc_now
from certfleet.errors import ExitCode, InputError, OperationFailed
from certfleet.export import OutputFormat

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

    from certfleet.chain import ChainResult
    from certfleet.export import WrittenFile
    from certfleet.formats import Pool

__all__ = ["EachResult", "check_leaf_file", "parse_at"]

# --- options shared by several commands ---------------------------------------------------------

# str, not Path: Typer builds a pydantic adapter for every Path value, which costs seconds for the
# 10,000 leaves of a `verify --each` batch
FilesArg = Annotated[
    list[str],
    typer.Argument(
        metavar="FILE", help="Certificate, key, CSR or package files, in any format (read by content); - is stdin."
    ),
]
TrustOpt = Annotated[
    list[Path] | None,
    typer.Option("--trust", metavar="FILE", help="Also trust the roots in this file (repeatable).", show_default=False),
]
TrustOnlyOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--trust-only",
        metavar="FILE",
        help="Trust only the roots in this file, not Mozilla's (repeatable).",
        show_default=False,
    ),
]
SystemTrustOpt = Annotated[
    bool, typer.Option("--system-trust", help="Start from this system's roots instead of Mozilla's (certifi).")
]
NoFetchOpt = Annotated[
    bool, typer.Option("--no-fetch", help="Never fetch a missing intermediate from the leaf's AIA URL.")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Write the files even when the chain has errors.")]


def _exit(code: ExitCode) -> None:
    if code is not ExitCode.OK:
        raise typer.Exit(int(code))


# --- inspect ------------------------------------------------------------------------------------


@app.command(
    "inspect",
    epilog="Example: certfleet inspect godaddy-package.zip www.example.com.key",
)
def inspect_cmd(
    *,
    files: FilesArg,
    password: PasswordOpt = None,
    password_file: PasswordFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show every certificate, key and CSR in the files, and which key belongs to which."""
    from certfleet.inspection import inspect

    pool = read_pool_files(files, password, password_file)
    report = inspect(pool, now=utc_now().replace(microsecond=0))
    emit(report, as_json, views.inspection)


# --- verify -------------------------------------------------------------------------------------


@app.command(
    "verify",
    epilog=(
        "Examples: certfleet verify fullchain.pem --name www.example.com  ·  "
        "certfleet verify --each leaves/*.pem --untrusted inter.pem --trust-only root.pem --json"
    ),
)
def verify_cmd(
    *,
    files: FilesArg,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            "-n",
            metavar="NAME",
            help="The DNS name or IP a client connects to (default: the leaf's first name).",
        ),
    ] = None,
    trust: TrustOpt = None,
    trust_only: TrustOnlyOpt = None,
    system_trust: SystemTrustOpt = False,
    at: Annotated[
        str | None,
        typer.Option("--at", metavar="TIME", help="Verify at this time (ISO 8601; UTC unless an offset is given)."),
    ] = None,
    each: Annotated[
        bool, typer.Option("--each", help="Verify each file as its own leaf, against --untrusted and the roots.")
    ] = False,
    untrusted: Annotated[
        list[Path] | None,
        typer.Option(
            "--untrusted", metavar="FILE", help="Intermediates a client may use (repeatable).", show_default=False
        ),
    ] = None,
    password: PasswordOpt = None,
    password_file: PasswordFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify like a strict TLS client (a phone): never fetches, checks the name, the time and serverAuth.

    Exit 0 when valid, 1 when not. With --each, every file is a leaf of its own; --json then
    prints one JSON object per leaf, one per line.
    """
    if each:
        # certfleet.cli.main runs the same without Typer (certfleet._batch.options reads these options)
        options = EachOptions(
            files=tuple(files),
            name=name,
            trust=tuple(trust or ()),
            trust_only=tuple(trust_only or ()),
            system_trust=system_trust,
            at=at,
            untrusted=tuple(untrusted or ()),
            password=tuple(password or ()),
            password_file=password_file,
            as_json=as_json,
        )
        _exit(run_each(options))
        return
    from certfleet.chain import no_certificate, pick_leaf
    from certfleet.formats import read_pool
    from certfleet.verify import verify_chain

    when = parse_at(at)
    store = _trust(trust, trust_only, system_trust)
    pw = passwords(password, password_file)
    extra = read_pool(read_inputs(untrusted or []), passwords=pw) if untrusted else None
    intermediates = [item.cert for item in extra.unique_certificates()] if extra is not None else []

    pool = read_pool(read_inputs([Path(f) for f in files]), passwords=pw)
    if not pool.unique_certificates():
        raise no_certificate(pool)
    chosen, _ = pick_leaf(pool.unique_certificates(), pool_keys=pool.keys)
    leaf = chosen.cert
    others = [item.cert for item in pool.unique_certificates() if item.cert != leaf]
    result = verify_chain(leaf, [*others, *intermediates], store, name=name, at=when)
    unread = (*pool.problems(), *(extra.problems() if extra is not None else ()))
    if unread:  # what could not be read beside what was: said with the verdict
        result = dataclasses.replace(result, problems=(*unread, *result.problems))
    emit(result, as_json, lambda r: views.verification(r, at=when, trust=store))
    _exit(ExitCode.OK if result.valid else ExitCode.PROBLEMS)


# --- chain --------------------------------------------------------------------------------------


def _build(
    *,
    files: Sequence[str],
    key: Path | None,
    no_fetch: bool,
    trust: list[Path] | None,
    trust_only: list[Path] | None,
    system_trust: bool,
    password: list[str] | None,
    password_file: Path | None,
    now: dt.datetime,
) -> tuple[ChainResult, Pool]:
    from certfleet.aia import HttpFetcher
    from certfleet.chain import build_chain
    from certfleet.formats import read_pool

    pw = passwords(password, password_file)
    pool = read_pool(read_inputs([Path(f) for f in files]), passwords=pw)
    key_obj: PrivateKeyTypes | None = None
    key_source: str | None = None
    if key is not None:
        key_pool = read_pool(read_inputs([key]), passwords=pw)
        if not key_pool.keys:
            raise InputError("holds no private key", source=str(key), hint="give the key file made with the CSR")
        key_obj, key_source = key_pool.keys[0].key, key_pool.keys[0].source
        pool = pool.merge(key_pool)
    store = _trust(trust, trust_only, system_trust)
    result = build_chain(
        pool, store, now=now, fetcher=None if no_fetch else HttpFetcher(), key=key_obj, key_source=key_source
    )
    return result, pool


@app.command(
    "chain",
    epilog="Example: certfleet chain godaddy.zip --key www.example.com.key --out fullchain.pem",
)
def chain_cmd(
    *,
    files: FilesArg,
    key: Annotated[
        Path | None, typer.Option("--key", metavar="FILE", help="The private key; it picks the leaf.")
    ] = None,
    no_fetch: NoFetchOpt = False,
    trust: TrustOpt = None,
    trust_only: TrustOnlyOpt = None,
    system_trust: SystemTrustOpt = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="PATH", help="Write the chain to serve (leaf first, no root) to this PEM file."),
    ] = None,
    force: ForceOpt = False,
    at: Annotated[
        str | None,
        typer.Option("--at", metavar="TIME", help="Judge the chain at this time (ISO 8601; UTC unless an offset)."),
    ] = None,
    password: PasswordOpt = None,
    password_file: PasswordFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the ordered chain to serve: leaf first, each issued by the next, root left out.

    Says what was dropped and why, and what was fetched. Exit 1 when the chain is incomplete or
    has errors.
    """
    from certfleet.export import pem
    from certfleet.fsutil import atomic_write

    now = parse_at(at)
    result, _ = _build(
        files=files,
        key=key,
        no_fetch=no_fetch,
        trust=trust,
        trust_only=trust_only,
        system_trust=system_trust,
        password=password,
        password_file=password_file,
        now=now,
    )
    failed = views.chain_failed(result)
    written: list[str] = []
    if out is not None and (not failed or force):
        atomic_write(out, pem(*result.chain))
        written.append(str(out))
    if as_json:
        payload = result.to_dict()
        if out is not None:
            payload["written"] = written
        write_json(payload)
    else:
        views.chain_report(result, written, now=now)
        if out is not None and not written:
            views.say(f"not written: {out} (the chain has errors; --force writes it anyway)", style="bold red")
    _exit(ExitCode.PROBLEMS if failed else ExitCode.OK)


# --- convert ------------------------------------------------------------------------------------


@app.command(
    "convert",
    epilog=(
        "Examples: certfleet convert godaddy.zip www.key --to nginx --out /etc/nginx/tls  ·  "
        "certfleet convert server.pfx -p secret --to pkcs12 --legacy --out-password-file pw.txt --out old.pfx"
    ),
)
def convert_cmd(
    *,
    files: FilesArg,
    to: Annotated[
        str,
        typer.Option("--to", metavar="FORMAT", help=f"Output format: {', '.join(OutputFormat)}.", case_sensitive=False),
    ],
    out: Annotated[Path, typer.Option("--out", metavar="PATH", help="Output file, or folder for pem/apache/nginx.")],
    out_password: Annotated[
        str | None,
        typer.Option("--out-password", metavar="PASSWORD", help="Password for the PKCS#12 file or the written key."),
    ] = None,
    out_password_file: Annotated[
        Path | None,
        typer.Option("--out-password-file", metavar="FILE", help="Read the output password from this file."),
    ] = None,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="Write a PKCS#12 file without a password.")
    ] = False,
    legacy: Annotated[
        bool, typer.Option("--legacy", help="PKCS#12 with 3DES and a SHA-1 MAC (Windows Server 2016, old Java).")
    ] = False,
    friendly_name: Annotated[
        str | None,
        typer.Option("--friendly-name", metavar="NAME", help="The PKCS#12 alias that Windows and keytool show."),
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", metavar="FILE", help="The private key; it picks the leaf.")
    ] = None,
    no_fetch: NoFetchOpt = False,
    trust: TrustOpt = None,
    trust_only: TrustOnlyOpt = None,
    system_trust: SystemTrustOpt = False,
    force: ForceOpt = False,
    password: Annotated[
        list[str] | None,
        typer.Option(
            "--password",
            "-p",
            "--key-password",
            help="Password of the input key or PKCS#12 (repeatable). Also read from $CERTFLEET_PASSWORD.",
        ),
    ] = None,
    password_file: PasswordFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Read any package, build the chain, and write it in the format a server wants.

    pem/apache/nginx write a folder of PEM files (left mode 0700); haproxy one combined file;
    pkcs12 a .pfx (an output password is required, AES-256 unless --legacy). Key files are written
    mode 0600. `certfleet export` writes the same files from the store.
    """
    from certfleet.export import check_bundle, write_bundle

    kind = _output_format(to)
    secret = read_secret(out_password, out_password_file, "output password")
    if kind is OutputFormat.PKCS12 and secret is None and not no_password:
        raise InputError(
            "a PKCS#12 file needs a password",
            hint="give --out-password or --out-password-file (or --no-password for an unprotected file)",
        )
    check_bundle(kind, password=secret, legacy=legacy, friendly_name=friendly_name)

    now = utc_now().replace(microsecond=0)
    result, pool = _build(
        files=files,
        key=key,
        no_fetch=no_fetch,
        trust=trust,
        trust_only=trust_only,
        system_trust=system_trust,
        password=password,
        password_file=password_file,
        now=now,
    )
    if views.chain_failed(result) and not force:
        if not as_json:
            views.chain_report(result, now=now)
        else:
            write_json(_conversion(kind, (), result))
        raise OperationFailed(
            "nothing written: the chain is not complete or has errors",
            hint="fix what is listed above, or give --force to write the files anyway",
        )
    private_key = _key_for(kind, result, pool) if kind.holds_key else None
    if friendly_name is None and kind is OutputFormat.PKCS12:  # the source's alias, kept (keytool shows "1" without)
        friendly_name = pool.friendly_name(result.chain[0])
    written = write_bundle(
        kind,
        out,
        private_key,
        result.chain[0],
        result.chain[1:],
        password=secret,
        legacy=legacy,
        friendly_name=friendly_name,
    )
    emit(_conversion(kind, written, result), as_json, lambda _: views.conversion(result, kind, written, now=now))
    _exit(ExitCode.PROBLEMS if views.chain_failed(result) else ExitCode.OK)


def _conversion(kind: OutputFormat, written: Sequence[WrittenFile], result: ChainResult) -> dict[str, Any]:
    return {"to": kind.value, "written": [w.to_dict() for w in written], "chain": result.to_dict()}


def _output_format(text: str) -> OutputFormat:
    try:
        return OutputFormat(text.strip().lower())
    except ValueError:
        raise InputError(
            f"--to {text!r} is not a format certfleet writes", hint=f"use one of {', '.join(OutputFormat)}"
        ) from None


def _key_for(kind: OutputFormat, result: ChainResult, pool: Pool) -> PrivateKeyTypes:
    from certfleet.inspection import key_of

    found = key_of(pool.keys, result.chain[0])
    if found is not None:
        return found.key
    if pool.keys:
        raise InputError(
            "no key among the files belongs to the certificate",
            hint="give the key made with this certificate's CSR (certfleet match shows which is which)",
        )
    raise InputError(
        f"--to {kind} needs the private key, and none is among the files",
        hint="add the key file (the one made with the CSR), or --key KEY",
    )


# --- match --------------------------------------------------------------------------------------


@app.command("match", epilog="Example: certfleet match *.key *.crt *.csr")
def match_cmd(
    *,
    files: FilesArg,
    password: PasswordOpt = None,
    password_file: PasswordFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Say which key belongs to which certificate and CSR. Exit 1 on a key that matches none."""
    from certfleet.keys import match

    pool = read_pool_files(files, password, password_file)
    if not pool.keys:
        raise InputError("no private key among the files", hint="give the key files too (they are never printed)")
    result = match(pool)
    emit(result, as_json, views.match_result)
    _exit(ExitCode.OK if result.ok else ExitCode.PROBLEMS)


# --- names --------------------------------------------------------------------------------------


@app.command(
    "names",
    epilog="Example: certfleet names www.example.com mbg.example.com example.com --cert current.crt",
)
def names_cmd(
    *,
    names: Annotated[
        list[str], typer.Argument(metavar="NAME", help="The DNS names and IPs the certificate must cover.")
    ],
    cert: Annotated[
        Path | None, typer.Option("--cert", metavar="FILE", help="Also check which names this certificate covers.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", help="The CA's maximum number of names.", min=1, max=1000)
    ] = 15,
    wildcards: Annotated[
        bool,
        typer.Option(
            "--wildcards/--no-wildcards",
            help="Let the plan use wildcards where two or more names share a parent (as `request --wildcards`).",
        ),
    ] = False,
    password: PasswordOpt = None,
    password_file: PasswordFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Plan the names of a certificate (SAN list or wildcards, against the CA's limit), and check coverage."""
    from certfleet.names import NamesReport, coverage, plan

    names_plan = plan(names, limit=limit, wildcards=wildcards)
    cover = None
    if cert is not None:
        from certfleet.chain import pick_leaf

        pool = read_pool_files([cert], password, password_file)
        try:
            leaf, _ = pick_leaf(pool.unique_certificates(), pool_keys=pool.keys)
        except InputError as exc:
            raise exc.with_source(str(cert)) from None
        cover = coverage(leaf.cert, names)
    report = NamesReport(names_plan, cover, str(cert) if cert is not None else None)
    emit(report, as_json, views.names_report)
    _exit(ExitCode.OK if report.ok else ExitCode.PROBLEMS)
