"""The ``certfleet`` command line: a thin face over the library.

Commands live in one module per area (``_core``, ``_make``, ``_fleet``, ``_status``, ``_acme``, ``_renew``,
``_deploy``, ``_worker``, ``_check``, ``_serve``, ``_store``, ``_account``)
and register themselves on the Typer app of ``_common``. :func:`main` imports only
the module of the command asked for (all of them for the overview, or for a command it does not know), and
runs ``verify --each`` without Typer at all (see ``_each``). Every :class:`CertfleetError` is
mapped to one printed line, a hint and the exit code of DESIGN.md; a traceback only with
``--debug``.
"""

from __future__ import annotations

import functools
import gc
import importlib
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from certfleet.cli._state import state
from certfleet.errors import CertfleetError, ExitCode

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["COMMANDS", "app", "main", "run", "state"]

# every command and command group, and the module that registers it
COMMANDS: dict[str, str] = {
    "inspect": "_core",
    "verify": "_core",
    "chain": "_core",
    "convert": "_core",
    "key": "_make",
    "csr": "_make",
    "match": "_core",
    "names": "_core",
    "init": "_fleet",
    "apply": "_fleet",
    "export-fleet": "_fleet",
    "request": "_fleet",
    "import": "_fleet",
    "status": "_status",
    "history": "_status",
    "audit": "_status",
    "export": "_fleet",
    "node": "_fleet",
    "trust": "_fleet",
    "deploy": "_deploy",
    "worker": "_worker",
    "jobs": "_worker",
    "rollback": "_deploy",
    "check": "_check",
    "watch": "_check",
    "serve": "_serve",
    "issuer": "_acme",
    "lineage": "_acme",
    "issue": "_acme",
    "revoke": "_acme",
    "store": "_store",
    "renew": "_renew",
    "alert": "_renew",
    "account": "_account",
}
# in the order the overview lists them
_MODULES = (
    "_core",
    "_make",
    "_fleet",
    "_status",
    "_acme",
    "_renew",
    "_deploy",
    "_worker",
    "_check",
    "_serve",
    "_store",
    "_account",
)


def __getattr__(name: str) -> Any:
    # ``certfleet.cli.app``: the Typer app with every command on it, made on first use
    if name == "app":
        from certfleet.cli._common import app

        _register(_MODULES)
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _register(modules: Sequence[str]) -> None:
    # imported for their side effect: each module adds its commands to the app
    for name in modules:
        try:
            importlib.import_module(f"certfleet.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"certfleet.cli.{name}":
                raise
    from certfleet.cli._common import app

    # the overview lists commands by area, whichever area a process happened to load first
    app.registered_commands.sort(key=lambda info: _area(getattr(info.callback, "__module__", "")))


def _area(module: str) -> int:
    name = module.rpartition(".")[2]
    return _MODULES.index(name) if name in _MODULES else len(_MODULES)


# commands that read the store, print and end: what they make lives until the process ends
_READERS = frozenset({"status", "history", "audit"})


def _command(args: Sequence[str]) -> str | None:
    return next((arg for arg in args if arg != "--debug"), None)


def _collect_seldom() -> None:
    """The cyclic garbage collector runs once per 100,000 new objects rather than per 700.

    A command that builds its report and ends frees almost nothing before it ends, so the
    collector's passes find nothing to free; over the objects SQLAlchemy, cryptography and a
    report of 1,000 nodes make, they were a sixth of the CPU of ``status`` (280 passes). What is
    freed by reference counting (most of it) is freed as before.
    """
    gc.set_threshold(100_000, 50, 100)


def _modules_for(args: Sequence[str]) -> Sequence[str]:
    """The command modules ``certfleet ARGS`` needs: the one of its command, else every one."""
    for arg in args:
        if arg != "--debug":
            module = COMMANDS.get(arg)
            return (module,) if module is not None else _MODULES
    return _MODULES


def main(argv: Sequence[str] | None = None) -> int:
    from cryptography.utils import CryptographyDeprecationWarning

    # certifi's bundle and CA packages hold certificates with a zero serial; cryptography warns
    # about each one, which says nothing useful to someone reading a certificate package
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
    # a name attribute out of its bounds (a country code of three letters, a common name of 65
    # characters): cryptography warns each time it decodes one; lint reports it (malformed-name)
    warnings.filterwarnings("ignore", message="Attribute's length must be", category=UserWarning)
    args = list(sys.argv[1:] if argv is None else argv)
    state.wrote_json = False
    state.closed = False
    if _command(args) in _READERS:
        _collect_seldom()
    try:
        return _dispatch(args)
    except CertfleetError as exc:
        if state.debug:
            raise
        _error(str(exc), exc.hint)
        return _refused(args, str(exc), exc.hint, exc.source, exc.exit_code)
    except KeyboardInterrupt:
        _console_err().print("interrupted")
        return 130
    except OSError as exc:
        if state.debug:
            raise
        # a file or socket the library did not expect to fail; still one line, never a traceback
        _error(str(exc), None)
        return _refused(args, str(exc), None, None, ExitCode.ENVIRONMENT)
    except Exception as exc:
        if state.debug:
            raise
        from rich.markup import escape

        console_err = _console_err()
        console_err.print(
            f"[bold red]unexpected error:[/] {escape(type(exc).__name__)}: {escape(str(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        hint = "run again with --debug for the traceback, and report it"
        console_err.print(f"[dim]hint:[/] {hint}", highlight=False)
        return _refused(args, f"unexpected error: {type(exc).__name__}: {exc}", hint, None, ExitCode.ENVIRONMENT)


def _refused(args: Sequence[str], message: str, hint: str | None, source: str | None, code: ExitCode) -> int:
    """The exit code of an error; with --json, the error is a JSON object on stdout as well."""
    options = args[: args.index("--")] if "--" in args else args
    if "--json" in options and not state.wrote_json:
        import json

        error = {"error": message, "hint": hint, "source": source, "exit_code": int(code)}
        try:
            sys.stdout.write(json.dumps(error, indent=2) + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass  # stdout is gone: the error is on stderr, and the exit code says it
    return int(code)


def _dispatch(args: list[str]) -> int:
    if "--each" not in args:  # parse_args answers None without it; the batch's modules stay unloaded
        return _run_typer(args)
    from certfleet._batch import options

    request = options.parse_args(args)
    if request is None:
        return _run_typer(args)
    from certfleet.cli._each import run_each

    state.debug = request.debug
    state.batch = True
    try:
        return int(run_each(request.options))
    except (EOFError, KeyboardInterrupt):
        # what Click makes of an interrupted command, so both ways of running it answer alike
        sys.stderr.write("\n")
        return _aborted()


def _run_typer(args: list[str]) -> int:
    import click
    import typer

    from certfleet.cli._common import app

    _register(_modules_for(args))
    command = typer.main.get_command(app)
    _plain_types(command)
    try:
        result = command.main(args=args, prog_name="certfleet", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        return _aborted()
    except click.ClickException as exc:
        exc.show()
        return int(ExitCode.BAD_INPUT)
    except typer.exceptions.TyperException as exc:
        # typer >= 0.26 raises its own copy of click's usage errors, not click's
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            _console_err().print(str(exc), highlight=False, markup=False)
        return int(ExitCode.BAD_INPUT)
    return int(result) if isinstance(result, int) else 0


def _plain_types(command: Any) -> None:
    """Help without Typer's ``<bool>`` beside every flag and ``<list[str]>`` beside every
    repeatable option: a flag shows no value, a repeatable one the type of one value. (Typer
    vendors its own click, so its commands and options are recognized by what they have.)"""
    for param in command.params:
        _plain_type(param)
    make_help = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = make_help(ctx)
        if option is not None:
            _plain_type(option)
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _plain_types(sub)


def _plain_type(param: Any) -> None:
    if getattr(param, "_runtime_param", False) is None and hasattr(param, "type_descriptor"):
        param._runtime_param = _DeclaredAsIs(param)
    shown = getattr(param, "display_type_rich", None)
    if shown is None:
        return
    if getattr(param, "is_flag", False):
        param.display_type_rich = _no_value
    else:
        param.display_type_rich = functools.partial(_one_value, shown)


class _DeclaredAsIs:
    """A parameter's coercion that passes a value Typer would give back unchanged as it is.

    Typer coerces every value through a pydantic adapter it builds on first use, and importing
    pydantic takes a tenth of a second of a command's start. A value left out (None), a default of
    the declared number type within its bounds, or a string for a plain ``str`` needs no adapter;
    anything else (a number or a choice typed on the command line, a path, a list) goes to
    Typer's own coercion, built then, with its own checks and messages.
    """

    def __init__(self, param: Any) -> None:
        self.param = param
        self.full: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:
            return () if param.multiple or param.nargs == -1 else None
        if _as_declared(param.type_descriptor, value):
            return value
        if self.full is None:
            from typer._coercion import build_runtime_param

            self.full = build_runtime_param(param.type_descriptor)
        return self.full.coerce(value, param=param, ctx=ctx)


def _as_declared(descriptor: Any, value: Any) -> bool:
    declared, info = descriptor.annotation, descriptor.parameter_info
    if getattr(info, "parser", None) is not None or getattr(info, "click_type", None) is not None:
        return False
    if declared is str:
        return type(value) is str
    if declared in (int, float) and type(value) is declared:
        low, high = getattr(info, "min", None), getattr(info, "max", None)
        return (low is None or value >= low) and (high is None or value <= high)
    return False


def _no_value(ctx: Any) -> None:
    return None


def _one_value(shown: Callable[[Any], str | None], ctx: Any) -> str | None:
    text = shown(ctx)
    return re.sub(r"<list\[(.*)\]>", r"<\1>", text) if text else text


def _console_err() -> Console:
    from certfleet.cli._common import console_err

    return console_err


def _error(message: str, hint: str | None) -> None:
    from rich.markup import escape

    console_err = _console_err()
    # messages name files and endpoints such as "[::1]:443": never read them as markup
    console_err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        console_err.print(f"[dim]hint:[/] {escape(hint)}", highlight=False, soft_wrap=True)


def _aborted() -> int:
    _console_err().print("aborted")
    return int(ExitCode.BAD_INPUT)


def run() -> None:
    code = main()
    if state.batch or state.closed:
        # The interpreter's teardown frees a batch's records and every module one by one: a
        # twentieth of a 10,000-leaf run, a sixth of the CPU of `status` of 1,000 nodes. A batch
        # (or a command that says it closed what it opened) holds no file, lock or child open
        # by now and registers no exit handler, so once the output is out the process may simply
        # end; a failed flush takes the ordinary exit, which reports it.
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            sys.exit(code)
        os._exit(code)
    sys.exit(code)
