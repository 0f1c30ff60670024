"""The ``certfleet`` command line: a thin face over the library.

Commands live in one module per area (``_core``, ``_fleet``, ``_check``, ``_serve``) and register
themselves on :data:`app`. :func:`main` maps every :class:`CertfleetError` to one printed line, a
hint and the exit code of DESIGN.md; a traceback only with ``--debug``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

import click
import typer
from cryptography.utils import CryptographyDeprecationWarning
from rich.markup import escape

from certfleet.cli._common import app, console_err, state
from certfleet.errors import CertfleetError, ExitCode

__all__ = ["app", "main"]


def _register() -> None:
    # imported for their side effect: each module adds its commands to ``app``
    import importlib

    for name in ("_core", "_fleet", "_deploy", "_check", "_serve"):
        try:
            importlib.import_module(f"certfleet.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"certfleet.cli.{name}":
                raise


def main(argv: Sequence[str] | None = None) -> int:
    # certifi's bundle and CA packages hold certificates with a zero serial; cryptography warns
    # about each one, which says nothing useful to someone reading a certificate package
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
    _register()
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="certfleet", standalone_mode=False)
    except CertfleetError as exc:
        if state.debug:
            raise
        # messages name files and endpoints such as "[::1]:443": never read them as markup
        console_err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        if exc.hint:
            console_err.print(f"[dim]hint:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
        return int(exc.exit_code)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        console_err.print("aborted")
        return int(ExitCode.BAD_INPUT)
    except click.ClickException as exc:
        exc.show()
        return int(ExitCode.BAD_INPUT)
    except typer.exceptions.TyperException as exc:
        # typer >= 0.26 raises its own copy of click's usage errors, not click's
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            console_err.print(str(exc), highlight=False, markup=False)
        return int(ExitCode.BAD_INPUT)
    except KeyboardInterrupt:
        console_err.print("interrupted")
        return 130
    except OSError as exc:
        if state.debug:
            raise
        # a file or socket the library did not expect to fail; still one line, never a traceback
        console_err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return int(ExitCode.ENVIRONMENT)
    except Exception as exc:
        if state.debug:
            raise
        console_err.print(
            f"[bold red]unexpected error:[/] {escape(type(exc).__name__)}: {escape(str(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        console_err.print("[dim]hint:[/] run again with --debug for the traceback, and report it", highlight=False)
        return int(ExitCode.ENVIRONMENT)
    return int(result) if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())
