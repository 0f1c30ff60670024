"""What every command shares: the app, options, passwords, reading files, printing results."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from certfleet.cli._inputs import MAX_INPUT_BYTES, PASSWORD_ENV, passwords, read_inputs
from certfleet.cli._state import state

if TYPE_CHECKING:
    from certfleet.store import Store

__all__ = [
    "MAX_INPUT_BYTES",
    "PASSWORD_ENV",
    "JsonOpt",
    "LineageArg",
    "PasswordFileOpt",
    "PasswordOpt",
    "app",
    "console",
    "console_err",
    "emit",
    "open_store",
    "passwords",
    "read_inputs",
    "state",
    "write_json",
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
LineageArg = Annotated[str, typer.Argument(help="The lineage: one named certificate over time, e.g. web.")]


def open_store() -> Store:
    """The store of this machine, opened (a context manager). A deploy whose last write failed
    left its results in a recovery file: they are recorded first."""
    from certfleet.store import Store

    store = Store.open()
    _record_recovered(store)
    return store


def _record_recovered(store: Store) -> None:
    from certfleet.errors import CertfleetError
    from certfleet.fleet.recovery import record_recovered, recovery_folders

    if not any(folder.is_dir() for folder in recovery_folders(store.home)):
        return
    try:
        for found in record_recovered(store):
            console_err.print(
                f"recorded deployment #{found.deployment} of {found.lineage} from {found.path} "
                "(the deploy could not record its end itself)",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    except CertfleetError as exc:
        console_err.print(
            f"warning: a deploy's results wait in a recovery file; the store cannot take them yet: {exc}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def write_json(payload: Any) -> None:
    """Print ``payload`` as indented JSON; what is not JSON (dates, paths) as its ``str()``."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    state.wrote_json = True


def emit(result: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print ``result`` as JSON (via its ``to_dict()``) or through ``render``."""
    if as_json:
        write_json(result.to_dict() if hasattr(result, "to_dict") else result)
    else:
        render(result)


def say(text: str, *, markup: bool = False) -> None:
    """One line of a report; user values (names, paths, commands) are never read as Rich markup."""
    console.print(text, markup=markup, soft_wrap=True, highlight=False)


def short_fp(fp: str | None) -> str:
    """A fingerprint as reports show it: its first 16 hex digits."""
    return f"{fp[:16]}…" if fp else "-"


def when(value: dt.datetime | None) -> str:
    """A time as reports show it, in UTC to the minute."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"
