"""Leaf files: each read, its leaf verified, its result a record (:class:`EachResult`), in groups.

A file that cannot be read as a certificate is a record too, with its error: a batch never
aborts for one file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, cast

from certfleet.errors import CertfleetError, InputError

if TYPE_CHECKING:
    from cryptography import x509

    from certfleet._batch.verifier import BatchVerifier
    from certfleet.problems import Problem
    from certfleet.verify import Verification

__all__ = ["GROUP_BYTES", "GROUP_LEAVES", "EachResult", "check_leaf_file", "check_leaf_files", "read_file"]

# files read before their leaves are decoded and verified together (see check_leaf_files)
GROUP_LEAVES = 64
GROUP_BYTES = 1024 * 1024


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


def read_file(path: str, limit: int) -> bytes:
    """The file's bytes, at most one more than ``limit`` (the caller says it is too large)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        # a read allocates what it asks for: a leaf takes one read of a chunk, and one of a byte
        # that finds the end
        data = os.read(fd, _READ_CHUNK)
        more = os.read(fd, 1) if data else b""
        if not more:
            return data
        parts = [data, more]
        left = limit + 1 - len(data) - len(more)
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
    # imported here, not at the top: the commands' help loads this module too (cli/_core.py);
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


def check_leaf_file(
    verifier: BatchVerifier, path: str, name: str | None, pw: Sequence[bytes] = (), *, limit: int
) -> EachResult:
    """Read and verify one leaf file of at most ``limit`` bytes; an unreadable file is reported,
    not raised (a batch never aborts)."""
    return check_leaf_files(verifier, (path,), name, pw, limit=limit)[0]


def check_leaf_files(
    verifier: BatchVerifier,
    paths: Sequence[str],
    name: str | None,
    pw: Sequence[bytes] = (),
    *,
    limit: int,
    group_leaves: int = GROUP_LEAVES,
    group_bytes: int = GROUP_BYTES,
) -> list[EachResult]:
    """:func:`check_leaf_file` for each of ``paths``, in order.

    The files of a group (``group_leaves`` files, or fewer that hold ``group_bytes``) are read
    one after another before any is decoded, and the group's leaves then go to
    :meth:`BatchVerifier.verify_many` together: every system call leaves the interpreter's
    caches cold, and a run of them costs less than the same calls spread out.
    """
    results: list[EachResult] = []
    start = 0
    while start < len(paths):
        contents: list[bytes | EachResult] = []
        size = 0
        # a group is bounded in bytes too: hostile files may each be as large as the limit
        while start < len(paths) and len(contents) < group_leaves and size < group_bytes:
            path = paths[start]
            start += 1
            try:
                data = read_file(path, limit)
            except OSError as exc:
                contents.append(_unreadable(path, name, exc))
                continue
            size += len(data)
            contents.append(data)
        group = paths[start - len(contents) : start]
        results.extend(_check_group(verifier, group, contents, name, pw=pw, limit=limit))
    return results


def _check_group(
    verifier: BatchVerifier,
    paths: Sequence[str],
    contents: Sequence[bytes | EachResult],
    name: str | None,
    *,
    pw: Sequence[bytes],
    limit: int,
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
            if len(data) > limit:
                raise InputError(f"larger than {limit // (1024 * 1024)} MiB; not a certificate")
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
