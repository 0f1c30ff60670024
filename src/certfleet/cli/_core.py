"""The core commands: inspect, verify, chain, convert, key, csr, match, names.

Each command reads its inputs at the edge (files, passwords, the clock), calls the library, and
renders the result: through ``certfleet.cli._render`` for people, through the result's
``to_dict()`` for ``--json``. Library modules are imported inside the commands, so that starting
one command does not pay for the others (``verify --each`` is benchmarked whole-process).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, NoReturn

import typer
from rich.text import Text

from certfleet.cli import _render as views
from certfleet.cli._common import (
    MAX_INPUT_BYTES,
    JsonOpt,
    PasswordFileOpt,
    PasswordOpt,
    app,
    console_err,
    emit,
    passwords,
    read_inputs,
)
from certfleet.errors import CertfleetError, ExitCode, InputError, OperationFailed

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

    from certfleet.chain import ChainResult
    from certfleet.csr import CsrInfo
    from certfleet.formats import Pool
    from certfleet.keys import MatchResult
    from certfleet.names import Coverage, NamePlan
    from certfleet.problems import Problem
    from certfleet.trust import TrustStore
    from certfleet.verify import Verifier

__all__ = ["EachResult", "check_leaf_file", "parse_at"]

_MAX_AT_CHARS = 64
# below this many leaves a second process costs more to start than it saves
_PARALLEL_MIN_LEAVES = 400

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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def parse_at(text: str | None) -> dt.datetime:
    """``--at``: ISO 8601 date or date-time; UTC when no offset is given; now when None."""
    if text is None:
        return _now()
    value = text.strip()
    hint = "write it as 2026-05-01, 2026-05-01T12:00 or 2026-05-01T12:00:00+02:00"
    if len(value) > _MAX_AT_CHARS:
        raise InputError("--at is too long to be a date", hint=hint)
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise InputError(f"--at {value!r} is not an ISO 8601 date or time", hint=hint) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC)


def _exit(code: ExitCode) -> None:
    if code is not ExitCode.OK:
        raise typer.Exit(int(code))


def _read_pool(files: Sequence[str | Path], password: list[str] | None, password_file: Path | None) -> Pool:
    from certfleet.formats import read_pool

    return read_pool(read_inputs([Path(f) for f in files]), passwords=passwords(password, password_file))


def _trust(trust: list[Path] | None, trust_only: list[Path] | None, system: bool) -> TrustStore:
    from certfleet.trust import load_trust

    if trust_only and system:
        raise InputError("--trust-only and --system-trust cannot be used together", hint="choose one set of roots")
    return load_trust(read_inputs(trust or []), read_inputs(trust_only or []), system=system)


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


def _dump(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


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


@dataclass(frozen=True, slots=True)
class EachResult:
    """One leaf of ``verify --each``: a JSON Lines record."""

    file: str
    valid: bool
    name: str | None
    sha256: str | None
    problems: tuple[Problem, ...] = ()
    error: str | None = None  # the file could not be read as a certificate

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.file,
            "valid": self.valid,
            "name": self.name,
            "problems": [p.to_dict() for p in self.problems],
            "sha256": self.sha256,
        }
        if self.error is not None:
            out["error"] = self.error
        return out

    def line(self) -> str:
        """The human view: one line."""
        if self.error is not None:
            return f"error    {self.file}: {self.error}"
        if self.valid:
            return f"valid    {self.file}  {self.name}"
        first = self.problems[0] if self.problems else None
        why = f": {first.code.value}: {first.message}" if first else ""
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"INVALID  {self.file}  {self.name or '-'}{why}{more}"


_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


def _leaf_from(name: str, data: bytes, pw: Sequence[bytes]) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The leaf of one file (its first certificate) and any other certificates it holds."""
    from cryptography import x509

    # the common case, one PEM certificate, skips format detection
    if data.count(b"-----BEGIN ") == 1 and _PEM_CERT in data:
        try:
            return x509.load_pem_x509_certificate(data), []
        except ValueError:
            pass  # let the full reader say what is wrong with it
    from certfleet.formats import read_bytes

    pool = read_bytes(name, data, passwords=pw)
    certs = [item.cert for item in pool.unique_certificates()]
    if not certs:
        raise InputError("holds no certificate", source=name, hint="give the leaf certificate files")
    return certs[0], certs[1:]


def check_leaf_file(verifier: Verifier, path: str, name: str | None, pw: Sequence[bytes] = ()) -> EachResult:
    """Read and verify one leaf file; an unreadable file is reported, not raised (a batch never aborts)."""
    from certfleet.certinfo import fingerprint
    from certfleet.verify import Verifier

    try:
        with open(path, "rb") as fh:
            # read(n) allocates n bytes up front: a 20 MiB bound costs more than the read itself
            size = os.fstat(fh.fileno()).st_size
            data = fh.read(min(size, MAX_INPUT_BYTES) + 1 if size else MAX_INPUT_BYTES + 1)
        if len(data) > MAX_INPUT_BYTES:
            raise InputError(f"larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB; not a certificate")
        leaf, extra = _leaf_from(path, data, pw)
        if extra:
            verifier = Verifier(verifier.trust, [*verifier.untrusted, *extra], at=verifier.at)
        result = verifier.verify(leaf, name)
    except IsADirectoryError:
        return EachResult(path, False, name, None, error="is a folder, not a file")
    except OSError as exc:
        return EachResult(path, False, name, None, error=f"cannot read: {exc.strerror}")
    except CertfleetError as exc:
        # a zip member is named in full; the file itself is already in the record
        where = f"{exc.source}: " if exc.source not in (None, path) else ""
        return EachResult(path, False, name, None, error=where + exc.message)
    return EachResult(path, result.valid, result.name, fingerprint(leaf), result.problems)


@dataclass
class _Tally:
    valid: int = 0
    invalid: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: _Tally) -> None:
        self.valid += other.valid
        self.invalid += other.invalid
        self.errors.extend(other.errors)


@dataclass(frozen=True)
class _Batch:
    """What every leaf of one ``verify --each`` is checked with."""

    verifier: Verifier
    name: str | None
    as_json: bool
    passwords: Sequence[bytes]

    def check(self, paths: Sequence[str]) -> tuple[str, _Tally]:
        """The output lines for ``paths``, in order, and their tally."""
        lines: list[str] = []
        tally = _Tally()
        for path in paths:
            result = check_leaf_file(self.verifier, path, self.name, self.passwords)
            if result.error is not None:
                tally.errors.append(f"{path}: {result.error}")
            elif result.valid:
                tally.valid += 1
            else:
                tally.invalid += 1
            lines.append(json.dumps(result.to_dict()) if self.as_json else result.line())
        return "".join(line + "\n" for line in lines), tally

    def check_forked(self, paths: Sequence[str]) -> tuple[str, _Tally]:
        """:meth:`check` with a forked child doing the second half while this process does the first.

        Fork shares the loaded modules and the verifier, which a spawned worker would rebuild
        (start-up is most of the cost at a few thousand leaves).
        """
        half = (len(paths) + 1) // 2
        with tempfile.TemporaryFile() as spill:
            gc.freeze()  # else the child's garbage collector writes to, and so copies, every page it scans
            try:
                pid = os.fork()
                if pid == 0:
                    self._child(spill, paths[half:])
                text, tally = self.check(paths[:half])
                _, status = os.waitpid(pid, 0)
            finally:
                gc.unfreeze()
            spill.seek(0)
            header = spill.readline()
            if status != 0 or not header:
                # the child died (killed, out of memory): check its share here instead
                rest, part = self.check(paths[half:])
            else:
                fields = json.loads(header)
                part = _Tally(fields["valid"], fields["invalid"], fields["errors"])
                rest = spill.read().decode()
        tally.add(part)
        return text + rest, tally

    def _child(self, spill: BinaryIO, paths: Sequence[str]) -> NoReturn:
        code = 1
        try:
            text, part = self.check(paths)
            header = json.dumps({"valid": part.valid, "invalid": part.invalid, "errors": part.errors})
            spill.write(header.encode() + b"\n" + text.encode())
            spill.flush()
            code = 0
        finally:
            # never return into the parent's code, nor run its exit handlers or flush its buffers
            os._exit(code)


def _forking(count: int) -> bool:
    """Whether a batch of ``count`` leaves is worth a second process."""
    if count < _PARALLEL_MIN_LEAVES or not hasattr(os, "fork"):
        return False
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return cpus >= 2


def _verify_each(paths: list[str], batch: _Batch) -> ExitCode:
    text, tally = batch.check_forked(paths) if _forking(len(paths)) else batch.check(paths)
    out = sys.stdout
    out.write(text)
    for line in tally.errors:
        console_err.print(Text.assemble(("error:", "bold red"), f" {line}"), highlight=False, soft_wrap=True)
    if not batch.as_json:
        errors = f", {len(tally.errors)} unreadable" if tally.errors else ""
        count = "1 leaf" if len(paths) == 1 else f"{len(paths)} leaves"
        out.write(f"{count}: {tally.valid} valid, {tally.invalid} invalid{errors}\n")
    out.flush()
    if tally.errors:
        return ExitCode.BAD_INPUT
    return ExitCode.PROBLEMS if tally.invalid else ExitCode.OK


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
    from certfleet.formats import read_pool

    when = parse_at(at)
    store = _trust(trust, trust_only, system_trust)
    pw = passwords(password, password_file)
    extra = read_pool(read_inputs(untrusted or []), passwords=pw) if untrusted else None
    intermediates = [item.cert for item in extra.unique_certificates()] if extra is not None else []
    from certfleet.verify import Verifier, parse_name, verify_chain

    if each:
        if name is not None:
            parse_name(name)  # a bad --name is one error, not one per leaf
        batch = _Batch(Verifier(store, intermediates, at=when), name, as_json, pw)
        _exit(_verify_each(list(files), batch))
        return
    from certfleet.chain import build_chain

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
        _dump(payload)
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
            _dump(Conversion(kind, (), result).to_dict())
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
