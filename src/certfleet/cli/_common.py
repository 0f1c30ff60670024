"""What every command shares: the app, options, passwords, reading files, printing results."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from certfleet.errors import InputError

__all__ = [
    "JsonOpt",
    "PasswordFileOpt",
    "PasswordOpt",
    "app",
    "console",
    "console_err",
    "emit",
    "passwords",
    "read_inputs",
    "state",
]

PASSWORD_ENV = "CERTFLEET_PASSWORD"  # noqa: S105 (the name of a variable, not a password)
# a file named on the command line is read whole; anything larger is not a certificate package
MAX_INPUT_BYTES = 20 * 1024 * 1024


@dataclass
class _State:
    debug: bool = False


state = _State()
console = Console(highlight=False, soft_wrap=False)
console_err = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="certfleet",
    help="One web certificate, every server: read, fix, verify, write and deploy TLS certificates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    state.debug = debug


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON (same content as the report).")]
PasswordOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--password",
        "-p",
        help=f"Password for encrypted keys or PKCS#12 (repeatable). Also read from ${PASSWORD_ENV}.",
    ),
]
PasswordFileOpt = Annotated[
    Path | None, typer.Option("--password-file", help="Read the password from the first line of this file.")
]


def passwords(password: list[str] | None, password_file: Path | None) -> list[bytes]:
    """Every password the user gave, in the order tried: options, then file, then environment."""
    out = [p.encode() for p in password or []]
    if password_file is not None:
        try:
            first = password_file.read_bytes().splitlines()
        except OSError as exc:
            raise InputError(f"cannot read password file: {exc.strerror}", source=str(password_file)) from exc
        out.append(first[0] if first else b"")
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        out.append(env.encode())
    return out


def read_inputs(paths: list[Path]) -> list[tuple[str, bytes]]:
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
            from certfleet.errors import LimitError

            raise LimitError(
                f"larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB; not a certificate package",
                source=name,
            )
        out.append((name, data))
    return out


def emit(result: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print ``result`` as JSON (via its ``to_dict()``) or through ``render``."""
    if as_json:
        payload = result.to_dict() if hasattr(result, "to_dict") else result
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    else:
        render(result)
