"""The console's accounts, an admin's: the Accounts page and ``/api/v1/accounts`` do what
``certfleet account`` does: list (role, lineages, whether logins wait, the last login), add,
remove (asked first; never one's own account, never the last admin), reset a password and lift
login waits. A password is typed twice or generated; a generated one is a secret, shown once: on
the page the form leads to (it waits in :mod:`~certfleet.console.services.reveals`, never in a
URL), or in the API's answer. No password reaches a log line, the audit trail or a page after
that one; a refused form is shown again without its passwords. Every change is audited by the
service, as the command line's are."""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import FormData

from certfleet.console.core import Console
from certfleet.console.deps import API_PREFIX, AdminDep, ConsoleDep, FormDep, checked_csrf, form_text
from certfleet.console.roles import ACCOUNT_ROLES, Role, parse_role
from certfleet.console.routes.answers import confirm_page, confirmed, done_messages, page_status, redirect, refusal
from certfleet.console.routes.api import ERRORS, LineageName
from certfleet.console.security import generate_password
from certfleet.console.services.audit import Actor
from certfleet.console.templating import render
from certfleet.errors import CertfleetError, InputError

__all__ = ["api", "router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(checked_csrf)])
api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(checked_csrf)], responses=ERRORS)
JSON = dict[str, Any]
# what the page after a redirect asks the reveals for: (account, password, "added" or "reset")
_PASSWORD = "account-password"  # noqa: S105 (a kind of reveal, not a secret)
_SPLIT = re.compile(r"[\s,]+")


def _by(actor: Actor) -> str:
    return f"console:{actor.audit_name}"


# -- the page -------------------------------------------------------------------------------------------


def _context(console: Console, actor: Actor, **extra: Any) -> dict[str, Any]:
    return {
        "title": "Accounts",
        "here": "accounts",
        "accounts": console.accounts.accounts(),
        "roles": [r.value for r in ACCOUNT_ROLES],
        "me": actor.username,
        "v": {"username": "", "role": Role.VIEWER.value, "lineages": "", "generate": False},
        "wide": True,
        **extra,
    }


def _refused(request: Request, console: Console, actor: Actor, exc: CertfleetError, **extra: Any) -> Response:
    """The page again, the refusal above it; what was typed kept, but never a password."""
    ctx = _context(console, actor, **extra)
    ctx["messages"] = refusal(exc)
    return render(request, "accounts.html", ctx, status_code=page_status(exc))


def _lineages(text: str) -> list[str] | None:
    names = [n for n in _SPLIT.split(text.strip()) if n]
    return names or None


def _password(form: FormData) -> tuple[str, bool]:
    """The password the form asks for, and whether it was generated (shown once, after)."""
    if form_text(form, "generate", 10) == "on":
        return generate_password(), True
    password = form_text(form, "password", 2000)
    if not password:
        raise InputError("type the password twice, or tick “Generate a password”")
    if password != form_text(form, "password2", 2000):
        raise InputError("the two passwords differ", hint="type the same password in both fields")
    return password, False


@router.get("/accounts", response_class=HTMLResponse)
def accounts(request: Request, console: ConsoleDep, actor: AdminDep) -> Response:
    # a generated password comes here after its form's redirect, once: shown in this response only
    new = console.reveals.take(actor.account_id, _PASSWORD, request.query_params.get("new", ""), tuple)
    ctx = _context(console, actor, messages=done_messages(request))
    if new is not None:
        ctx["revealed"] = {"username": new[0], "password": new[1], "what": new[2]}
    return render(request, "accounts.html", ctx)


@router.post("/accounts")
def account_add(request: Request, console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    username = form_text(form, "username", 200).strip()
    role_text = form_text(form, "role", 20)
    lineages_text = form_text(form, "lineages", 8000)
    try:
        password, generated = _password(form)
        info = console.accounts.add(
            username, password, parse_role(role_text, account=True), lineages=_lineages(lineages_text), by=_by(actor)
        )
    except CertfleetError as exc:
        generate = form_text(form, "generate", 10) == "on"
        values = {"username": username, "role": role_text, "lineages": lineages_text, "generate": generate}
        return _refused(request, console, actor, exc, v=values)
    if generated:
        key = console.reveals.put(actor.account_id, _PASSWORD, (info.username, password, "added"))
        return redirect("/accounts", query={"new": key}, anchor="new-password")
    return redirect("/accounts", "account-added", info.username)


@router.post("/accounts/unlock")
def unlock_all(console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    """Lift the login waits of one client address, or of every account and address."""
    address = form_text(form, "address", 64).strip() or None
    console.accounts.unlock(None, address=address, by=_by(actor))
    return redirect("/accounts", "logins-unlocked", f"address {address}" if address else "every account and address")


@router.get("/accounts/{username}/remove", response_class=HTMLResponse)
def account_remove_confirm(request: Request, username: str, console: ConsoleDep, actor: AdminDep) -> Response:
    try:
        info = console.accounts.check_removable(username, asker=actor.username)
    except CertfleetError as exc:  # one's own account, the last admin, an unknown one: said at once
        return _refused(request, console, actor, exc)
    details = ["Its sessions end at once, and every API token it made stops working."]
    if info.tokens:
        details.append(f"It has {info.tokens} live API token(s).")
    details.append("Its entries in the audit trail stay.")
    return confirm_page(
        request,
        title=f"Remove account {info.username}",
        question=f"Remove the account {info.username} ({info.role.value})?",
        details=details,
        action=f"/accounts/{info.username}/remove",
        button="Remove the account",
        back="/accounts",
    )


@router.post("/accounts/{username}/remove")
def account_remove(request: Request, username: str, console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    if not confirmed(form):
        return RedirectResponse(f"/accounts/{username}/remove", status_code=303)
    try:
        info = console.accounts.remove(username, by=_by(actor), asker=actor.username)
    except CertfleetError as exc:
        return _refused(request, console, actor, exc)
    return redirect("/accounts", "account-removed", info.username)


@router.get("/accounts/{username}/password", response_class=HTMLResponse)
def password_form(request: Request, username: str, console: ConsoleDep, actor: AdminDep) -> Response:
    info = console.accounts.account(username)
    return render(
        request,
        "account_password.html",
        {"title": f"New password for {info.username}", "here": "accounts", "account": info, "me": actor.username},
    )


@router.post("/accounts/{username}/password")
def password_reset(request: Request, username: str, console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    info = console.accounts.account(username)
    own = info.username == actor.username
    try:
        password, generated = _password(form)
        if generated and own:
            raise InputError(
                "type your own new password: a generated one could not be shown to you, as your session ends with it"
            )
        console.accounts.reset_password(info.username, password, by=_by(actor))
    except CertfleetError as exc:
        ctx = {"title": f"New password for {info.username}", "here": "accounts", "account": info, "me": actor.username}
        ctx["messages"] = refusal(exc)
        return render(request, "account_password.html", ctx, status_code=page_status(exc))
    if own:  # its sessions ended, this one too: in again with the new password
        return RedirectResponse("/login?next=/accounts", status_code=303)
    if generated:
        key = console.reveals.put(actor.account_id, _PASSWORD, (info.username, password, "reset"))
        return redirect("/accounts", query={"new": key}, anchor="new-password")
    return redirect("/accounts", "password-reset", info.username)


@router.post("/accounts/{username}/unlock")
def account_unlock(username: str, console: ConsoleDep, actor: AdminDep) -> Response:
    console.accounts.unlock(username, by=_by(actor))
    return redirect("/accounts", "account-unlocked", username)


# -- the API --------------------------------------------------------------------------------------------


class AccountIn(BaseModel):
    username: str = Field(min_length=1, max_length=64, examples=["ops"])
    password: str = Field(min_length=1, max_length=1024)
    role: Literal["viewer", "operator", "admin"]
    lineages: list[LineageName] | None = Field(None, max_length=100, description="every lineage when left out")


class PasswordIn(BaseModel):
    password: str | None = Field(
        None, min_length=1, max_length=1024, description="the new password; generated (and answered once) when left out"
    )


@api.get("/accounts", summary="The console's accounts (admin)")
def api_accounts(console: ConsoleDep, _: AdminDep) -> list[JSON]:
    return [a.to_dict() for a in console.accounts.accounts()]


@api.post("/accounts", status_code=201, summary="Add an account with a role, optionally kept to lineages (admin)")
def api_account_add(console: ConsoleDep, body: AccountIn, actor: AdminDep) -> JSON:
    info = console.accounts.add(body.username, body.password, Role(body.role), lineages=body.lineages, by=_by(actor))
    return info.to_dict()


@api.delete(
    "/accounts/{username}",
    summary="Remove an account, its sessions and tokens (admin); never the caller's own, never the last admin",
)
def api_account_remove(console: ConsoleDep, username: str, actor: AdminDep) -> JSON:
    console.accounts.remove(username, by=_by(actor), asker=actor.username)
    return {"removed": username}


@api.post(
    "/accounts/{username}/password",
    summary="Give an account a new password (admin): its sessions end and its logins wait no more; "
    "a generated password is in this response only",
)
def api_password_reset(console: ConsoleDep, username: str, actor: AdminDep, body: PasswordIn | None = None) -> JSON:
    given = body.password if body is not None else None
    password = given if given is not None else generate_password()
    info = console.accounts.reset_password(username, password, by=_by(actor))
    out: JSON = {"account": info.username, "password": "changed"}
    if given is None:
        out["generated_password"] = password
    return out


@api.post(
    "/accounts/{username}/unlock",
    summary="Lift the login waits of an account, from every client address (admin)",
)
def api_unlock(console: ConsoleDep, username: str, actor: AdminDep) -> JSON:
    count = console.accounts.unlock(username, by=_by(actor))
    return {"account": username, "address": None, "cleared": count}
