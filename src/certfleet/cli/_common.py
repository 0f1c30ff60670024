"""What every command shares: the app, options, passwords, reading files, printing results."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from certfleet.cli import state
from certfleet.cli._inputs import MAX_INPUT_BYTES, PASSWORD_ENV, passwords, read_inputs

__all__ = [
    "MAX_INPUT_BYTES",
    "PASSWORD_ENV",
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


def emit(result: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print ``result`` as JSON (via its ``to_dict()``) or through ``render``."""
    if as_json:
        payload = result.to_dict() if hasattr(result, "to_dict") else result
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    else:
        render(result)
