"""The core commands: inspect, verify, chain, convert, key, csr, match, names.

Each command reads its inputs at the edge (files, passwords, the clock), calls the library, and
renders the result: through ``certfleet.cli._render`` for people, through the result's
``to_dict()`` for ``--json``. Library modules are imported inside the commands, so that starting
one command does not pay for the others (``verify --each`` is benchmarked whole-process).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
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
from certfleet.cli._inputs import now as _now
from certfleet.cli._inputs import parse_at
from certfleet.errors import ExitCode, InputError, OperationFailed

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

    from certfleet.chain import ChainResult
    from certfleet.csr import CsrInfo
    from certfleet.formats import Pool
    from certfleet.keys import MatchResult
    from certfleet.names import Coverage, NamePlan

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


def _read_pool(files: Sequence[str | Path], password: list[str] | None, password_file: Path | None) -> Pool:
    from certfleet.formats import read_pool

    return read_pool(read_inputs([Path(f) for f in files]), passwords=passwords(password, password_file))


def _secret(value: str | None, file: Path | None, what: str) -> bytes | None:
    """A password for something we write: from the option, or the first line of a file."""
    if value is not None and file is not None:
        raise InputError(f"give the {what} once: as an option or as a file, not both")
    if file is not None:
        return _first_line(file)
    return value.encode() if value is not None else None


def _first_line(file: Path) -> bytes:
    try:
        lines = file.read_bytes().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read password file: {exc.strerror}", source=str(file)) from exc
    return lines[0] if lines else b""


# --- inspect ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inspection:
    """Everything found in the inputs, with which key belongs to which certificate and CSR."""

    pool: Pool
    now: dt.datetime
    match: MatchResult

    def to_dict(self) -> dict[str, Any]:
        from certfleet.certinfo import describe
        from certfleet.csr import describe_csr
        from certfleet.keys import key_matches

        pool = self.pool
        certs = []
        for item in pool.certificates:
            entry = item.to_dict()
            entry["days_left"] = describe(item.cert).days_left(self.now)
            certs.append(entry)
        keys = []
        for pk in pool.keys:
            entry = pk.to_dict()
            entry["certificates"] = [
                {"sha256": describe(pc.cert).sha256, "source": pc.source}
                for pc in pool.unique_certificates()
                if key_matches(pk.key, pc.cert)
            ]
            entry["csrs"] = [pc.source for pc in pool.csrs if key_matches(pk.key, pc.csr)]
            keys.append(entry)
        csrs = []
        for pc in pool.csrs:
            entry = {**describe_csr(pc.csr).to_dict(), "source": pc.source, "format": pc.format.value}
            entry["key"] = next((pk.source for pk in pool.keys if key_matches(pk.key, pc.csr)), None)
            csrs.append(entry)
        return {
            "certificates": certs,
            "keys": keys,
            "csrs": csrs,
            "ignored": list(pool.ignored),
            "problems": [p.to_dict() for p in self.match.problems],
        }


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
    from certfleet.keys import match

    pool = _read_pool(files, password, password_file)
    report = Inspection(pool=pool, now=_now(), match=match(pool))
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
    from certfleet.chain import build_chain
    from certfleet.formats import read_pool
    from certfleet.verify import verify_chain

    when = parse_at(at)
    store = _trust(trust, trust_only, system_trust)
    pw = passwords(password, password_file)
    extra = read_pool(read_inputs(untrusted or []), passwords=pw) if untrusted else None
    intermediates = [item.cert for item in extra.unique_certificates()] if extra is not None else []

    pool = read_pool(read_inputs([Path(f) for f in files]), passwords=pw)
    leaf = build_chain(pool, store, now=when).leaf
    others = [item.cert for item in pool.unique_certificates() if item.cert != leaf]
    result = verify_chain(leaf, [*others, *intermediates], store, name=name, at=when)
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
        pool, store, now=_now(), fetcher=None if no_fetch else HttpFetcher(), key=key_obj, key_source=key_source
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

    result, _ = _build(
        files=files,
        key=key,
        no_fetch=no_fetch,
        trust=trust,
        trust_only=trust_only,
        system_trust=system_trust,
        password=password,
        password_file=password_file,
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
        views.chain_report(result, written)
        if out is not None and not written:
            views.say(f"not written: {out} (the chain has errors; --force writes it anyway)", style="bold red")
    _exit(ExitCode.PROBLEMS if failed else ExitCode.OK)


# --- convert ------------------------------------------------------------------------------------

_FORMATS = ("pem", "der", "pkcs7", "pkcs12", "apache", "nginx", "haproxy")


@dataclass(frozen=True)
class Conversion:
    """What ``convert`` wrote, and the chain it wrote from."""

    to: str
    written: tuple[tuple[str, bool], ...]  # (path, holds the private key)
    chain: ChainResult

    def to_dict(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "written": [{"path": p, "private": private} for p, private in self.written],
            "chain": self.chain.to_dict(),
        }


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
        str, typer.Option("--to", metavar="FORMAT", help=f"Output format: {', '.join(_FORMATS)}.", case_sensitive=False)
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

    pem/apache/nginx write a folder of PEM files; haproxy one combined file; pkcs12 a .pfx (an
    output password is required, AES-256 unless --legacy). Key files are written mode 0600.
    """
    from certfleet import export
    from certfleet.fsutil import atomic_write, write_private

    kind = to.strip().lower()
    if kind not in _FORMATS:
        raise InputError(f"--to {to!r} is not a format certfleet writes", hint=f"use one of {', '.join(_FORMATS)}")
    secret = _secret(out_password, out_password_file, "output password")
    if kind == "pkcs12":
        if secret is None and not no_password:
            raise InputError(
                "a PKCS#12 file needs a password",
                hint="give --out-password or --out-password-file (or --no-password for an unprotected file)",
            )
        if secret is not None and not secret:
            raise InputError("the output password is empty", hint="give a password, or --no-password")
    elif kind in {"der", "pkcs7"} and secret is not None:
        raise InputError(f"--to {kind} holds no key, so there is nothing to protect with --out-password")
    if (legacy or friendly_name is not None) and kind != "pkcs12":
        raise InputError("--legacy and --friendly-name apply to --to pkcs12 only")

    result, pool = _build(
        files=files,
        key=key,
        no_fetch=no_fetch,
        trust=trust,
        trust_only=trust_only,
        system_trust=system_trust,
        password=password,
        password_file=password_file,
    )
    if views.chain_failed(result) and not force:
        if not as_json:
            views.chain_report(result)
        else:
            write_json(Conversion(kind, (), result).to_dict())
        raise OperationFailed(
            "nothing written: the chain is not complete or has errors",
            hint="fix what is listed above, or give --force to write the files anyway",
        )
    leaf, chain = result.chain[0], result.chain[1:]
    private_key = _key_for(kind, result, pool, key)
    written: list[tuple[str, bool]] = []
    if kind == "der":
        atomic_write(out, export.der(leaf))
        written.append((str(out), False))
    elif kind == "pkcs7":
        atomic_write(out, export.pkcs7(list(result.chain)))
        written.append((str(out), False))
    elif kind == "pkcs12":
        assert private_key is not None  # noqa: S101 (_key_for refuses pkcs12 without a key)
        data = export.pkcs12(
            private_key, leaf, list(chain), password=secret or None, legacy=legacy, friendly_name=friendly_name
        )
        write_private(out, data)
        written.append((str(out), True))
    elif kind == "haproxy":
        assert private_key is not None  # noqa: S101
        files_ = export.layout_files(kind, private_key, leaf, list(chain), key_password=secret)
        write_private(out, files_["combined.pem"])
        written.append((str(out), True))
    else:
        assert private_key is not None  # noqa: S101
        files_ = export.layout_files(kind, private_key, leaf, list(chain), key_password=secret)
        private = export.private_files(kind)
        _make_folder(out)
        for file_name, data in files_.items():
            target = out / file_name
            if file_name in private:
                write_private(target, data)
            else:
                atomic_write(target, data)
            written.append((str(target), file_name in private))
    emit(Conversion(kind, tuple(written), result), as_json, views.conversion)
    _exit(ExitCode.PROBLEMS if views.chain_failed(result) else ExitCode.OK)


def _key_for(kind: str, result: ChainResult, pool: Pool, key: Path | None) -> PrivateKeyTypes | None:
    if kind in {"der", "pkcs7"}:
        return None
    from certfleet.keys import key_matches

    leaf = result.chain[0]
    for pk in pool.keys:
        if key_matches(pk.key, leaf):
            return pk.key
    if pool.keys:
        raise InputError(
            "no key among the files belongs to the certificate",
            hint="give the key made with this certificate's CSR (certfleet match shows which is which)",
        )
    raise InputError(
        f"--to {kind} needs the private key, and none is among the files",
        hint="add the key file (the one made with the CSR), or --key KEY",
    )


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise InputError("exists and is not a folder", source=str(path), hint="give a folder for --out") from exc
    except OSError as exc:
        raise InputError(f"cannot create the folder: {exc.strerror}", source=str(path)) from exc
    if not path.is_dir():
        raise InputError("exists and is not a folder", source=str(path), hint="give a folder for --out")


# --- key ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyWritten:
    path: str
    type: str
    public_key_id: str
    encrypted: bool

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "type": self.type, "public_key_id": self.public_key_id, "encrypted": self.encrypted}


def _write_key(key: PrivateKeyTypes, path: Path, passphrase: bytes | None, force: bool) -> KeyWritten:
    from certfleet.certinfo import key_type
    from certfleet.export import key_pem
    from certfleet.fsutil import write_private
    from certfleet.keys import public_key_id

    if path.exists() and not force:
        raise InputError(
            "already exists; a key is never overwritten by accident",
            source=str(path),
            hint="choose another path, or give --force",
        )
    write_private(path, key_pem(key, passphrase))
    return KeyWritten(str(path), key_type(key.public_key()), public_key_id(key), passphrase is not None)


PassphraseOpt = Annotated[
    str | None,
    typer.Option("--passphrase", metavar="PASSPHRASE", help="Encrypt the key with this passphrase (AES-256)."),
]
PassphraseFileOpt = Annotated[
    Path | None,
    typer.Option("--passphrase-file", metavar="FILE", help="Read the passphrase from the first line of this file."),
]


@app.command("key", epilog="Example: certfleet key --type ec:p256 --out www.example.com.key")
def key_cmd(
    *,
    out: Annotated[Path, typer.Option("--out", metavar="PATH", help="Where to write the key (mode 0600).")],
    type_: Annotated[
        str, typer.Option("--type", metavar="TYPE", help="rsa:2048, rsa:3072, rsa:4096, ec:p256 or ec:p384.")
    ] = "ec:p256",
    passphrase: PassphraseOpt = None,
    passphrase_file: PassphraseFileOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Make a new private key for a web certificate, written mode 0600 from the start."""
    from certfleet.keys import generate_key, parse_key_spec

    spec = parse_key_spec(type_)
    secret = _secret(passphrase, passphrase_file, "passphrase")
    result = _write_key(generate_key(spec), out, secret, force)
    emit(result, as_json, views.key_written)


# --- csr ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsrWritten:
    path: str
    csr: CsrInfo
    plan: NamePlan
    key: KeyWritten | None  # the key made for it, when --new-key

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "csr": self.csr.to_dict(),
            "plan": self.plan.to_dict(),
            "key": self.key.to_dict() if self.key is not None else None,
        }


@app.command(
    "csr",
    epilog=(
        "Example: certfleet csr --new-key ec:p256 --key-out www.key --name www.example.com "
        '--name mbg.example.com --subject "C=CA,ST=Ontario,L=Ottawa,O=Example Inc" --out www.csr'
    ),
)
def csr_cmd(
    *,
    out: Annotated[Path, typer.Option("--out", metavar="PATH", help="Where to write the CSR (PEM).")],
    name: Annotated[
        list[str] | None, typer.Option("--name", "-n", metavar="NAME", help="A DNS name or IP to cover (repeatable).")
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", metavar="FILE", help="An existing private key to make the CSR with.")
    ] = None,
    new_key: Annotated[
        str | None,
        typer.Option("--new-key", metavar="TYPE", help="Make a new key of this type (rsa:2048, ec:p256, ...)."),
    ] = None,
    key_out: Annotated[
        Path | None, typer.Option("--key-out", metavar="FILE", help="Where to write the new key (mode 0600).")
    ] = None,
    subject: Annotated[
        str | None,
        typer.Option(
            "--subject", metavar="SUBJECT", help='Subject fields, e.g. "C=CA,ST=Ontario,L=Ottawa,O=Example,CN=..."'
        ),
    ] = None,
    country: Annotated[str | None, typer.Option("--country", metavar="CC", help="C: two letters.")] = None,
    state: Annotated[str | None, typer.Option("--state", metavar="TEXT", help="ST: state or province.")] = None,
    locality: Annotated[str | None, typer.Option("--locality", metavar="TEXT", help="L: city.")] = None,
    org: Annotated[str | None, typer.Option("--org", metavar="TEXT", help="O: organization.")] = None,
    cn: Annotated[str | None, typer.Option("--cn", metavar="NAME", help="CN (default: the first name).")] = None,
    passphrase: PassphraseOpt = None,
    passphrase_file: PassphraseFileOpt = None,
    password: PasswordOpt = None,
    password_file: PasswordFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a certificate signing request (SHA-256) with every name as a subjectAltName."""
    import dataclasses

    from certfleet.csr import Subject, build_csr, describe_csr
    from certfleet.fsutil import atomic_write
    from certfleet.keys import generate_key, parse_key_spec
    from certfleet.names import plan

    if (key is None) == (new_key is None):
        raise InputError("give either --key KEY or --new-key TYPE --key-out KEY", hint="certfleet csr --help")
    if new_key is not None and key_out is None:
        raise InputError("--new-key needs --key-out: where to keep the new key", hint="e.g. --key-out www.key")
    subj = Subject.parse(subject) if subject else Subject()
    given = {"country": country, "state": state, "locality": locality, "organization": org, "common_name": cn}
    for field_name, value in given.items():
        if value is not None:
            if getattr(subj, field_name) is not None:
                raise InputError(f"the subject field {field_name} is given twice (in --subject and as an option)")
            subj = dataclasses.replace(subj, **{field_name: value})
    names = list(name or [])
    key_report: KeyWritten | None = None
    private_key: PrivateKeyTypes
    if key is not None:
        pool = _read_pool([key], password, password_file)
        if not pool.keys:
            raise InputError("holds no private key", source=str(key), hint="give the key file")
        private_key = pool.keys[0].key
    else:
        assert new_key is not None and key_out is not None  # noqa: S101 (checked above)
        private_key = generate_key(parse_key_spec(new_key))
    csr = build_csr(private_key, names, subj)
    info = describe_csr(csr)
    # the names exactly as requested, counted against the usual CA limit
    names_plan = plan([*info.dns_names, *info.ip_addresses], wildcards=False)
    if new_key is not None and key_out is not None:
        key_report = _write_key(private_key, key_out, _secret(passphrase, passphrase_file, "passphrase"), False)
    from cryptography.hazmat.primitives import serialization

    atomic_write(out, csr.public_bytes(serialization.Encoding.PEM))
    report = CsrWritten(str(out), info, names_plan, key_report)
    emit(report, as_json, views.csr_written)


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

    pool = _read_pool(files, password, password_file)
    if not pool.keys:
        raise InputError("no private key among the files", hint="give the key files too (they are never printed)")
    result = match(pool)
    emit(result, as_json, views.match_result)
    _exit(ExitCode.OK if result.ok else ExitCode.PROBLEMS)


# --- names --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamesReport:
    plan: NamePlan
    coverage: Coverage | None  # with --cert
    cert: str | None

    @property
    def ok(self) -> bool:
        return self.plan.fits and (self.coverage is None or self.coverage.complete)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "coverage": self.coverage.to_dict() if self.coverage is not None else None,
            "cert": self.cert,
        }


def _leaf_of(pool: Pool, source: str) -> x509.Certificate:
    from certfleet.certinfo import describe

    certs = [item.cert for item in pool.unique_certificates()]
    leaves = [c for c in certs if not describe(c).is_ca]
    if len(leaves) > 1:
        raise InputError(f"holds {len(leaves)} server certificates", source=source, hint="give the file of one")
    if not certs:
        raise InputError("holds no certificate", source=source, hint="give the certificate file")
    return leaves[0] if leaves else certs[0]


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
    no_wildcards: Annotated[bool, typer.Option("--no-wildcards", help="Never propose a wildcard.")] = False,
    password: PasswordOpt = None,
    password_file: PasswordFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Plan the names of a certificate (SAN list or wildcards, against the CA's limit), and check coverage."""
    from certfleet.names import coverage, plan

    names_plan = plan(names, limit=limit, wildcards=not no_wildcards)
    cover = None
    if cert is not None:
        pool = _read_pool([cert], password, password_file)
        cover = coverage(_leaf_of(pool, str(cert)), names)
    report = NamesReport(names_plan, cover, str(cert) if cert is not None else None)
    emit(report, as_json, views.names_report)
    _exit(ExitCode.OK if report.ok else ExitCode.PROBLEMS)
