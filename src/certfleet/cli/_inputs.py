"""What the command line reads at the edge: named files (bounded), passwords, ``--at``, the roots.

Nothing here imports Typer or Rich, so that ``verify --each`` can start without them
(see :mod:`certfleet.cli`); ``_common`` re-exports these for the other commands.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from certfleet.clock import utc_now
from certfleet.errors import InputError, LimitError

if TYPE_CHECKING:
    from cryptography import x509

    from certfleet.formats import Pool
    from certfleet.trust import TrustStore

__all__ = [
    "MAX_INPUT_BYTES",
    "PASSWORD_ENV",
    "load_trust_files",
    "load_untrusted_files",
    "parse_at",
    "passwords",
    "read_inputs",
    "read_pool_files",
    "read_secret",
]

PASSWORD_ENV = "CERTFLEET_PASSWORD"  # noqa: S105 (the name of a variable, not a password)
# a file named on the command line is read whole; anything larger is not a certificate package
MAX_INPUT_BYTES = 20 * 1024 * 1024
_MAX_AT_CHARS = 64


def parse_at(text: str | None) -> dt.datetime:
    """``--at``: ISO 8601 date or date-time; UTC when no offset is given; now (to the second, as
    reports show it) when None."""
    if text is None:
        return utc_now().replace(microsecond=0)
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


def passwords(password: Sequence[str] | None, password_file: Path | None) -> list[bytes]:
    """Every password the user gave, in the order tried: options, then file, then environment."""
    out = [p.encode() for p in password or []]
    if password_file is not None:
        out.append(_first_line(password_file))
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        out.append(env.encode())
    return out


def read_secret(value: str | None, file: Path | None, what: str) -> bytes | None:
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


def read_inputs(paths: Sequence[Path]) -> list[tuple[str, bytes]]:
    """Read each named file whole, bounded; '-' is standard input."""
    out: list[tuple[str, bytes]] = []
    for path in paths:
        name = str(path)
        if name == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
            name = "<stdin>"
        else:
            try:
                with path.open("rb") as fh:
                    data = fh.read(MAX_INPUT_BYTES + 1)
            except IsADirectoryError as exc:
                raise InputError("is a folder, not a file", source=name) from exc
            except OSError as exc:
                raise InputError(f"cannot read: {exc.strerror}", source=name) from exc
        if len(data) > MAX_INPUT_BYTES:
            raise LimitError(
                f"larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB; not a certificate package",
                source=name,
            )
        out.append((name, data))
    return out


def read_pool_files(files: Sequence[str | Path], password: Sequence[str] | None, password_file: Path | None) -> Pool:
    """What ``read_pool`` finds in the named files, with every password the user gave."""
    from certfleet.formats import read_pool

    return read_pool(read_inputs([Path(f) for f in files]), passwords=passwords(password, password_file))


def load_trust_files(trust: Sequence[Path] | None, trust_only: Sequence[Path] | None, system: bool) -> TrustStore:
    """The roots of ``--trust``, ``--trust-only`` and ``--system-trust``."""
    from certfleet.trust import load_trust

    if trust_only and system:
        raise InputError("--trust-only and --system-trust cannot be used together", hint="choose one set of roots")
    return load_trust(read_inputs(trust or []), read_inputs(trust_only or []), system=system)


def load_untrusted_files(paths: Sequence[Path] | None, pw: Sequence[bytes] = ()) -> list[x509.Certificate]:
    """The certificates of ``--untrusted`` files, each once, in order: what ``read_pool`` finds in them."""
    from certfleet.trust import read_certificates

    return read_certificates(read_inputs(paths or []), passwords=pw)
