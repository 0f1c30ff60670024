"""Reading by content: which format the bytes are, then the reader for it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from certfleet.errors import CertfleetError, LimitError
from certfleet.formats._common import MAX_INPUT_BYTES, Budget, MiB, NothingUsable, is_zip
from certfleet.formats._der import DerKind, read_der, sniff
from certfleet.formats._model import InputFormat, Pool, combine
from certfleet.formats._pem import BEGIN, read_pem

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # Notepad's "Unicode"
_DER_FORMATS = {DerKind.PKCS7: InputFormat.PKCS7, DerKind.PKCS12: InputFormat.PKCS12}


def read_bytes(name: str, data: bytes, *, passwords: Sequence[bytes] = ()) -> Pool:
    """Everything ``data`` holds; ``name`` is the source named in the pool and in errors.

    Raises ``FormatError``, ``PasswordError`` or ``LimitError`` with ``source`` set (to
    ``"pkg.zip!member"`` for a zip member).
    """
    _check_passwords(passwords)
    return _read(name, data, tuple(passwords), depth=0, budget=Budget())


def read_pool(inputs: Iterable[tuple[str, bytes]], *, passwords: Sequence[bytes] = ()) -> Pool:
    """One pool from many inputs ``(name, bytes)``, in the order given; each must hold something."""
    _check_passwords(passwords)
    given = tuple(passwords)
    return combine([_read(name, data, given, depth=0, budget=Budget()) for name, data in inputs])


def detect_format(data: bytes) -> InputFormat | None:
    """What ``data`` looks like, from its first bytes, without decoding it; None when unknown."""
    data = _text(data)
    if is_zip(data):
        return InputFormat.ZIP
    if data[:1] == b"\x30" and (found := sniff(data)) is not None:
        return _DER_FORMATS.get(found.kind, InputFormat.DER)
    if BEGIN in data:
        return InputFormat.PEM
    return None


def _read(source: str, data: bytes, passwords: Sequence[bytes], *, depth: int, budget: Budget) -> Pool:
    try:
        return _dispatch(source, data, passwords, depth, budget)
    except CertfleetError as exc:
        exc.with_source(source)  # the innermost source wins: "pkg.zip!certs/inter.crt"
        raise


def _dispatch(source: str, data: bytes, passwords: Sequence[bytes], depth: int, budget: Budget) -> Pool:
    if len(data) > MAX_INPUT_BYTES:
        raise LimitError(
            f"larger than {MAX_INPUT_BYTES // MiB} MiB; not a certificate package",
            hint="give the certificate, key or package files themselves",
        )
    if not data.strip():
        raise NothingUsable("empty file", hint="download or export the file again")
    if is_zip(data):
        from certfleet.formats._zip import read_zip  # loaded on demand (see the package docstring)

        def member(name: str, content: bytes, level: int) -> Pool:
            return _read(name, content, passwords, depth=level, budget=budget)

        return read_zip(source, data, depth=depth, budget=budget, read_member=member)
    data = _text(data)
    # a PEM file may start with the character "0" (0x30), so DER wins only when its shape fits
    if data[:1] == b"\x30" and (sniff(data) is not None or BEGIN not in data):
        return read_der(source, data, passwords)
    if BEGIN in data:
        return read_pem(source, data, passwords)
    raise NothingUsable()


def _text(data: bytes) -> bytes:
    if data.startswith(_UTF8_BOM):
        return data[len(_UTF8_BOM) :]
    if data[:2] in _UTF16_BOMS:
        try:
            return data.decode("utf-16").encode("ascii", "replace")
        except UnicodeDecodeError:
            return data
    return data


def _check_passwords(passwords: Sequence[bytes]) -> None:
    if isinstance(passwords, bytes | str) or not all(isinstance(p, bytes) for p in passwords):
        raise TypeError("passwords must be a sequence of bytes")
