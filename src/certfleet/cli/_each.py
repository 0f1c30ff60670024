"""``certfleet verify --each``: many leaves, each verified on its own, one result line per leaf.

A batch of thousands of leaves is measured whole-process against ``openssl verify``
(``bench/verify_each.py``), so it starts without Typer, pydantic and Rich, which cost more than
checking a thousand leaves: :func:`parse_args` reads ``verify``'s options from :data:`OPTIONS`,
a table that a test holds equal to the Typer command's own parameters (``cli/_core.py``, which
keeps the help text), and leaves anything it does not know (``--help``, a typo, ``-nNAME``) to
Typer. Both then run :func:`run_each`.

Above about a hundred leaves, and with two cores or more, one forked child shares the work: both
processes take chunks of leaves from one queue, so neither waits long for the other, and the
output keeps the order of the files.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from json.encoder import encode_basestring_ascii
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any, NoReturn, cast

from certfleet.cli._inputs import MAX_INPUT_BYTES, load_trust_files, load_untrusted_files, parse_at, passwords
from certfleet.errors import CertfleetError, ExitCode, InputError

if TYPE_CHECKING:
    from cryptography import x509

    from certfleet._batch.verifier import BatchVerifier
    from certfleet.problems import Problem
    from certfleet.verify import Verification

__all__ = [
    "OPTIONS",
    "Arity",
    "EachOptions",
    "EachRequest",
    "EachResult",
    "check_leaf_file",
    "check_leaf_files",
    "parse_args",
    "run_each",
]

# below this many leaves a second process costs more to start than it saves
_PARALLEL_MIN_LEAVES = 128
# leaves per chunk of the shared queue: enough chunks for both processes to end together
_CHUNK_LEAVES = 64
_MIN_CHUNK_LEAVES = 8
# the queue of chunks is written whole into a pipe before anyone reads it: one page at most
_MAX_CHUNKS = 1024
_TOKEN = 4  # bytes per chunk number in the queue
# files read before their leaves are decoded and verified together (see check_leaf_files)
_GROUP_LEAVES = 64
_GROUP_BYTES = 1024 * 1024


# --- the options ----------------------------------------------------------------------------------


class Arity(Enum):
    FLAG = "flag"
    ONE = "one"  # given again, the last one counts
    MANY = "many"  # repeatable


# `certfleet verify`'s options by parameter name, as Typer declares them in cli/_core.py
OPTIONS: Mapping[str, tuple[tuple[str, ...], Arity]] = MappingProxyType(
    {
        "name": (("--name", "-n"), Arity.ONE),
        "trust": (("--trust",), Arity.MANY),
        "trust_only": (("--trust-only",), Arity.MANY),
        "system_trust": (("--system-trust",), Arity.FLAG),
        "at": (("--at",), Arity.ONE),
        "each": (("--each",), Arity.FLAG),
        "untrusted": (("--untrusted",), Arity.MANY),
        "password": (("--password", "-p"), Arity.MANY),
        "password_file": (("--password-file",), Arity.ONE),
        "as_json": (("--json",), Arity.FLAG),
    }
)
_SPELLINGS = {spelling: (dest, arity) for dest, (spellings, arity) in OPTIONS.items() for spelling in spellings}


@dataclass(frozen=True)
class EachOptions:
    """What ``verify --each`` was asked: the leaf files and ``verify``'s options."""

    files: tuple[str, ...]
    name: str | None = None
    trust: tuple[Path, ...] = ()
    trust_only: tuple[Path, ...] = ()
    system_trust: bool = False
    at: str | None = None
    untrusted: tuple[Path, ...] = ()
    password: tuple[str, ...] = ()
    password_file: Path | None = None
    as_json: bool = False


@dataclass(frozen=True)
class EachRequest:
    options: EachOptions
    debug: bool


def parse_args(args: Sequence[str]) -> EachRequest | None:
    """``[--debug] verify ARGS`` with ``--each`` among ARGS, read as Typer reads them; None otherwise."""
    start = 0
    while start < len(args) and args[start] == "--debug":
        start += 1
    if start >= len(args) or args[start] != "verify":
        return None
    files: list[str] = []
    one: dict[str, str] = {}
    many: dict[str, list[str]] = {}
    flags: set[str] = set()
    tokens = iter(args[start + 1 :])
    for token in tokens:
        if not token.startswith("-"):
            files.append(token)
            continue
        spelling, equals, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        known = _SPELLINGS.get(spelling)
        if known is None:  # "--help", "--", "-", "-nNAME", a typo: Typer says what it makes of them
            return None
        dest, arity = known
        if arity is Arity.FLAG:
            if equals:
                return None
            flags.add(dest)
            continue
        value = inline if equals else next(tokens, None)
        if not value or value.startswith("-"):
            return None
        if arity is Arity.MANY:
            many.setdefault(dest, []).append(value)
        else:
            one[dest] = value
    if not files or "each" not in flags:
        return None
    password_file = one.get("password_file")
    options = EachOptions(
        files=tuple(files),
        name=one.get("name"),
        trust=tuple(Path(p) for p in many.get("trust", ())),
        trust_only=tuple(Path(p) for p in many.get("trust_only", ())),
        system_trust="system_trust" in flags,
        at=one.get("at"),
        untrusted=tuple(Path(p) for p in many.get("untrusted", ())),
        password=tuple(many.get("password", ())),
        password_file=Path(password_file) if password_file is not None else None,
        as_json="as_json" in flags,
    )
    return EachRequest(options, debug=start > 0)


# --- one leaf ---------------------------------------------------------------------------------------


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

    def json_line(self) -> str:
        """``json.dumps(self.to_dict())``; a leaf without problems skips building the dict."""
        if self.problems or self.error is not None:
            return json.dumps(self.to_dict())
        return (
            f'{{"file": {_json_str(self.file)}, "valid": {"true" if self.valid else "false"}, '
            f'"name": {_json_str(self.name)}, "problems": [], "sha256": {_json_str(self.sha256)}}}'
        )

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


def _json_str(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


_READ_CHUNK = 64 * 1024
_PEM_BEGIN = b"-----BEGIN "
_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


def _read_file(path: str) -> bytes:
    """The file's bytes, at most one more than MAX_INPUT_BYTES (the caller says it is too large)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        # a read allocates what it asks for: a leaf takes one read of a chunk, and one of a byte
        # that finds the end
        data = os.read(fd, _READ_CHUNK)
        more = os.read(fd, 1) if data else b""
        if not more:
            return data
        parts = [data, more]
        left = MAX_INPUT_BYTES + 1 - len(data) - len(more)
        while left > 0:
            part = os.read(fd, min(left, _READ_CHUNK))
            if not part:
                break
            parts.append(part)
            left -= len(part)
    finally:
        os.close(fd)
    return b"".join(parts)


def _leaf_from(
    name: str, data: bytes, pw: Sequence[bytes]
) -> tuple[x509.Certificate, bytes | None, list[x509.Certificate]]:
    """The leaf of one file (its first certificate), its DER when at hand, and the file's other certificates."""
    # imported here, not at the top: the commands' help loads this module too (see cli/_core.py);
    # and "from package import module" would call into importlib's Python code for every leaf
    import cryptography.x509 as x509  # noqa: PLR0402

    import certfleet.certinfo as certinfo  # noqa: PLR0402

    # the common case, one PEM certificate, skips format detection; its DER also gives the
    # fingerprint without cryptography encoding the certificate again
    der = certinfo.lone_pem_der(data)
    if der is not None:
        try:
            return x509.load_der_x509_certificate(der), der, []
        except certinfo.UNPARSABLE:
            pass  # let the full reader say what is wrong with it
    elif data.count(_PEM_BEGIN) == 1 and _PEM_CERT in data:  # with text around it
        try:
            return x509.load_pem_x509_certificate(data), None, []
        except certinfo.UNPARSABLE:
            pass
    from certfleet.formats import read_bytes

    pool = read_bytes(name, data, passwords=pw)
    certs = [item.cert for item in pool.unique_certificates()]
    if not certs:
        raise InputError("holds no certificate", source=name, hint="give the leaf certificate files")
    return certs[0], None, certs[1:]


def check_leaf_file(verifier: BatchVerifier, path: str, name: str | None, pw: Sequence[bytes] = ()) -> EachResult:
    """Read and verify one leaf file; an unreadable file is reported, not raised (a batch never aborts)."""
    return check_leaf_files(verifier, (path,), name, pw)[0]


def check_leaf_files(
    verifier: BatchVerifier, paths: Sequence[str], name: str | None, pw: Sequence[bytes] = ()
) -> list[EachResult]:
    """:func:`check_leaf_file` for each of ``paths``, in order.

    The files of a group are read one after another before any is decoded, and the group's
    leaves then go to :meth:`BatchVerifier.verify_many` together: every system call leaves the
    interpreter's caches cold, and a run of them costs less than the same calls spread out.
    """
    results: list[EachResult] = []
    start = 0
    while start < len(paths):
        contents: list[bytes | EachResult] = []
        size = 0
        # a group is bounded in bytes too: hostile files may each be as large as MAX_INPUT_BYTES
        while start < len(paths) and len(contents) < _GROUP_LEAVES and size < _GROUP_BYTES:
            path = paths[start]
            start += 1
            try:
                data = _read_file(path)
            except OSError as exc:
                contents.append(_unreadable(path, name, exc))
                continue
            size += len(data)
            contents.append(data)
        results.extend(_check_group(verifier, paths[start - len(contents) : start], contents, name, pw))
    return results


def _check_group(
    verifier: BatchVerifier,
    paths: Sequence[str],
    contents: Sequence[bytes | EachResult],
    name: str | None,
    pw: Sequence[bytes],
) -> list[EachResult]:
    done: list[EachResult | None] = [None] * len(paths)
    leaves: list[x509.Certificate] = []
    ders: list[bytes | None] = []
    places: list[int] = []
    for index, (path, data) in enumerate(zip(paths, contents, strict=True)):
        if isinstance(data, EachResult):
            done[index] = data
            continue
        try:
            if len(data) > MAX_INPUT_BYTES:
                raise InputError(f"larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB; not a certificate")
            leaf, der, extra = _leaf_from(path, data, pw)
            if extra:  # a file with intermediates of its own: a verifier of its own
                from certfleet._batch.verifier import BatchVerifier

                own = BatchVerifier(verifier.trust, [*verifier.untrusted, *extra], at=verifier.at)
                verdict = own.verify_many((leaf,), name, ders=(der,))[0]
                if isinstance(verdict, CertfleetError):
                    raise verdict
                done[index] = _verified(path, leaf, der, verdict)
                continue
        except CertfleetError as exc:
            done[index] = _refused(path, name, exc)
            continue
        leaves.append(leaf)
        ders.append(der)
        places.append(index)
    verdicts = verifier.verify_many(leaves, name, ders=ders)
    for index, leaf, der, verdict in zip(places, leaves, ders, verdicts, strict=True):
        path = paths[index]
        done[index] = (
            _refused(path, name, verdict)
            if isinstance(verdict, CertfleetError)
            else _verified(path, leaf, der, verdict)
        )
    return cast(list[EachResult], done)  # every file has its record now


def _unreadable(path: str, name: str | None, exc: OSError) -> EachResult:
    if isinstance(exc, IsADirectoryError):
        return EachResult(path, False, name, None, error="is a folder, not a file")
    return EachResult(path, False, name, None, error=f"cannot read: {exc.strerror}")


def _refused(path: str, name: str | None, exc: CertfleetError) -> EachResult:
    # a zip member is named in full; the file itself is already in the record
    where = f"{exc.source}: " if exc.source not in (None, path) else ""
    return EachResult(path, False, name, None, error=where + exc.message)


def _verified(path: str, leaf: x509.Certificate, der: bytes | None, result: Verification) -> EachResult:
    if der is not None:
        sha256 = hashlib.sha256(der).hexdigest()
    else:
        from certfleet.certinfo import fingerprint

        sha256 = fingerprint(leaf)
    return EachResult(path, result.valid, result.name, sha256, result.problems)


# --- the batch ----------------------------------------------------------------------------------------


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

    verifier: BatchVerifier
    name: str | None
    as_json: bool
    passwords: Sequence[bytes]

    def check(self, paths: Sequence[str]) -> tuple[str, _Tally]:
        """The output lines for ``paths``, in order, and their tally."""
        lines: list[str] = []
        tally = _Tally()
        for result in check_leaf_files(self.verifier, paths, self.name, self.passwords):
            path = result.file
            if result.error is not None:
                tally.errors.append(f"{path}: {result.error}")
            elif result.valid:
                tally.valid += 1
            else:
                tally.invalid += 1
            lines.append(result.json_line() if self.as_json else result.line())
        lines.append("")
        return "\n".join(lines), tally

    def check_forked(self, paths: Sequence[str]) -> tuple[str, _Tally]:
        """:meth:`check`, shared with one forked child.

        Both processes take chunks of ``paths`` from one queue (a pipe holding every chunk's
        number) until it is empty, so one slowed by other work on the machine simply takes fewer;
        the child hands its chunks back through an anonymous file. Fork shares the loaded modules
        and the verifier, which a spawned worker would build again.
        """
        size = min(_CHUNK_LEAVES, max(_MIN_CHUNK_LEAVES, len(paths) // 32))
        size = max(size, -(-len(paths) // _MAX_CHUNKS))
        count = -(-len(paths) // size)
        queue, feed = os.pipe()
        spill = _anonymous_file()
        try:
            try:
                os.write(feed, b"".join(i.to_bytes(_TOKEN, "big") for i in range(count)))
            finally:
                os.close(feed)
            gc.freeze()  # else the child's garbage collector writes to, and so copies, every page it scans
            try:
                try:
                    pid: int | None = os.fork()
                except OSError:  # no second process to be had (a limit on processes): this one does all
                    pid = None
                if pid == 0:
                    self._child(queue, spill, paths, size)
                try:
                    done = self._take(queue, paths, size)
                except BaseException:
                    if pid is not None:
                        import signal

                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                    raise
                status = os.waitpid(pid, 0)[1] if pid is not None else -1
            finally:
                gc.unfreeze()
            if status == 0:
                spill.seek(0)
                done.update(_read_chunks(spill))
            # a child that died (killed, out of memory) left chunks undone: check them here
            for index in range(count):
                if index not in done:
                    done[index] = self.check(paths[index * size : (index + 1) * size])
        finally:
            os.close(queue)
            spill.close()
        tally = _Tally()
        for index in range(count):
            tally.add(done[index][1])
        return "".join(done[index][0] for index in range(count)), tally

    def _take(self, queue: int, paths: Sequence[str], size: int) -> dict[int, tuple[str, _Tally]]:
        done: dict[int, tuple[str, _Tally]] = {}
        # a read of a few bytes from a pipe is atomic: each chunk number goes to one process
        while token := os.read(queue, _TOKEN):
            index = int.from_bytes(token, "big")
            done[index] = self.check(paths[index * size : (index + 1) * size])
        return done

    def _child(self, queue: int, spill: IO[bytes], paths: Sequence[str], size: int) -> NoReturn:
        code = 1
        try:
            done = self._take(queue, paths, size)
            for index, (text, part) in done.items():
                body = text.encode("utf-8", "surrogateescape")
                header = json.dumps([index, part.valid, part.invalid, part.errors, len(body)])
                spill.write(header.encode() + b"\n" + body)
            spill.flush()
            code = 0
        finally:
            # never return into the parent's code, nor run its exit handlers or flush its buffers
            os._exit(code)


def _anonymous_file() -> IO[bytes]:
    if hasattr(os, "memfd_create"):
        return open(os.memfd_create("certfleet-each"), "w+b")
    import tempfile

    return tempfile.TemporaryFile()


def _read_chunks(spill: IO[bytes]) -> dict[int, tuple[str, _Tally]]:
    out: dict[int, tuple[str, _Tally]] = {}
    while header := spill.readline():
        index, valid, invalid, errors, length = json.loads(header)
        out[index] = (spill.read(length).decode("utf-8", "surrogateescape"), _Tally(valid, invalid, errors))
    return out


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
    if tally.errors:
        from rich.text import Text

        from certfleet.cli._common import console_err

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


def run_each(options: EachOptions) -> ExitCode:
    """Verify every file of ``options`` as a leaf of its own; print one line per leaf, in order."""
    from certfleet._batch.verifier import BatchVerifier
    from certfleet.verify import parse_name

    when = parse_at(options.at)
    store = load_trust_files(options.trust, options.trust_only, options.system_trust)
    pw = passwords(options.password, options.password_file)
    intermediates = load_untrusted_files(options.untrusted, pw)
    if options.name is not None:
        parse_name(options.name)  # a bad --name is one error, not one per leaf
    verifier = BatchVerifier(store, intermediates, at=when, reuse_proven=True)
    batch = _Batch(verifier, options.name, options.as_json, pw)
    return _verify_each(list(options.files), batch)
