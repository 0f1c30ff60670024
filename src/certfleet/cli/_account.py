"""``certfleet account``: the console's accounts, for whoever owns the machine and its store. It is
also the way back in when the only administrator is locked out or has lost the password."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from certfleet.cli._common import JsonOpt, app, console, emit, open_store
from certfleet.errors import InputError

if TYPE_CHECKING:
    from certfleet.console.services.accounts import AccountInfo, Accounts
    from certfleet.store import Store

account_app = typer.Typer(help="The console's accounts: add, list, remove, reset a password, lift a login wait.")
app.add_typer(account_app, name="account", rich_help_panel="Console")

UsernameArg = Annotated[str, typer.Argument(help="The account's name.")]
PasswordFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help="Read the new password from the first line of this file; without it, the password is "
        "asked for (twice) on a terminal, or read from the first line of standard input.",
    ),
]


def _accounts(store: Store) -> Accounts:
    from certfleet.clock import utc_now
    from certfleet.console.services.accounts import Accounts
    from certfleet.console.services.audit import Audit

    return Accounts(store.session, audit=Audit(store), clock=utc_now)


def _who(store: Store) -> str:
    return f"cli:{store.actor}"


def _new_password(path: Path | None) -> str:
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InputError(f"cannot read the password file {path}: {exc.strerror or exc}") from exc
        return lines[0] if lines else ""
    if sys.stdin.isatty():
        password: str = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
        return password
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def _say(text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def _line(info: AccountInfo) -> str:
    scope = ",".join(sorted(info.lineages)) if info.lineages is not None else "every lineage"
    last = info.last_login_at.strftime("%Y-%m-%d %H:%M") if info.last_login_at else "never"
    locked = "  LOCKED" if info.locked else ""
    return f"{info.username:<24} {info.role.value:<9} {scope:<24} last login {last}  tokens {info.tokens}{locked}"


@dataclass(frozen=True, slots=True)
class AccountList:
    accounts: tuple[AccountInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"accounts": [a.to_dict() for a in self.accounts]}


@account_app.command("add", epilog="Example: certfleet account add alice --role operator --lineage web")
def account_add(
    username: UsernameArg,
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin.")],
    lineage: Annotated[
        list[str] | None,
        typer.Option("--lineage", "-l", help="Keep the account to this lineage (repeatable); every lineage when none."),
    ] = None,
    password_file: PasswordFileOpt = None,
    *,
    as_json: JsonOpt = False,
) -> None:
    """Add a console account with a role (the first account is the administrator)."""
    from certfleet.console.roles import parse_role

    chosen = parse_role(role, account=True)
    with open_store() as store:
        info = _accounts(store).add(
            username, _new_password(password_file), chosen, lineages=lineage or None, by=_who(store)
        )
    emit(info, as_json, lambda i: _say(f"added {_line(i)}"))


@account_app.command("list")
def account_list(*, as_json: JsonOpt = False) -> None:
    """List the console's accounts, their roles, and whether their logins wait now."""
    with open_store() as store:
        result = AccountList(tuple(_accounts(store).accounts()))

    def render(r: AccountList) -> None:
        if not r.accounts:
            console.print("no account yet: `certfleet serve` prints the link that creates the administrator")
        for info in r.accounts:
            _say(_line(info))

    emit(result, as_json, render)


@account_app.command("remove")
def account_remove(username: UsernameArg, *, as_json: JsonOpt = False) -> None:
    """Remove an account; its sessions and API tokens end with it (the last admin stays)."""
    with open_store() as store:
        info = _accounts(store).remove(username, by=_who(store))
    emit({"removed": info.username}, as_json, lambda _: console.print(f"removed account {info.username}"))


@account_app.command("reset-password")
def account_reset_password(
    username: UsernameArg, password_file: PasswordFileOpt = None, *, as_json: JsonOpt = False
) -> None:
    """Give an account a new password: its sessions end, and its logins wait no more."""
    with open_store() as store:
        info = _accounts(store).reset_password(username, _new_password(password_file), by=_who(store))
    emit(
        {"account": info.username, "password": "changed"},
        as_json,
        lambda _: console.print(f"new password for {info.username}; its sessions have ended"),
    )


@account_app.command("unlock", epilog="Example: certfleet account unlock admin")
def account_unlock(
    username: Annotated[str | None, typer.Argument(help="The account; every account when left out.")] = None,
    address: Annotated[str | None, typer.Option("--address", help="Only the waits of this client address.")] = None,
    *,
    as_json: JsonOpt = False,
) -> None:
    """Lift the login waits of an account (from every address), of an address, or of everyone."""
    with open_store() as store:
        count = _accounts(store).unlock(username, address=address, by=_who(store))
    who = username or (f"address {address}" if address else "every account and address")
    emit(
        {"account": username, "address": address, "cleared": count},
        as_json,
        lambda _: console.print(f"logins of {who} wait no more ({count} count(s) cleared)", highlight=False),
    )
