"""``verify``'s options, read without Typer: the table, and :func:`parse_args`.

A batch of thousands of leaves is measured whole-process against ``openssl verify``
(``bench/verify_each.py``), so it starts without Typer, pydantic and Rich, which cost more than
checking a thousand leaves. :data:`OPTIONS` is a table of ``verify``'s options that a test holds
equal to the Typer command's own parameters (``cli/_core.py``, which keeps the help text);
:func:`parse_args` reads them as Click does and leaves anything it does not know (``--help``, a
typo, ``-nNAME``) to Typer. Both ways end in the same :class:`EachOptions`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import MappingProxyType

__all__ = ["OPTIONS", "Arity", "EachOptions", "EachRequest", "parse_args"]


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
