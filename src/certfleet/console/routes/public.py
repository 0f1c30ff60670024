"""The pages that need no login: logging in, the one-time setup link that creates the first
account, and a client fetching its configuration with its one-time deployment link."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from certfleet.console.deps import FORM_COOKIE, SESSION_COOKIE, ConsoleDep, FormDep, client_address, form_text
from certfleet.console.security import MIN_PASSWORD, same
from certfleet.console.services.accounts import LoginRefused
from certfleet.console.services.clients import CLIENT_PATH, LinkRefused
from certfleet.console.templating import render
from certfleet.errors import InputError

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


def _local_path(target: str) -> str:
    """Where to go after logging in: a path on this console, never another site."""
    if not target.startswith("/") or target.startswith(("//", "/\\")) or "\\" in target or len(target) > 300:
        return "/"
    return target


def _form_cookie(response: Response, value: str) -> None:
    response.set_cookie(FORM_COOKIE, value, httponly=True, secure=True, samesite="strict", path="/", max_age=3600)


def _anonymous_form_ok(request: Request, sent: str) -> bool:
    """Login and setup have no session yet: their token is a double-submitted cookie."""
    cookie = request.cookies.get(FORM_COOKIE, "")
    return bool(cookie) and bool(sent) and same(cookie, sent)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, console: ConsoleDep) -> Response:
    token = request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(32)
    error = ""
    if not console.accounts.has_accounts():
        error = "No account exists yet: open the setup link that `certfleet serve` printed."
    response = render(
        request,
        "login.html",
        {
            "title": "Log in",
            "csrf": token,
            "error": error,
            "username": "",
            "next": _local_path(request.query_params.get("next", "/")),
        },
    )
    _form_cookie(response, token)
    return response


@router.post("/login")
def login(request: Request, console: ConsoleDep, form: FormDep) -> Response:
    if not _anonymous_form_ok(request, form_text(form, "csrf_token", 200)):
        return render(
            request,
            "login.html",
            {"title": "Log in", "csrf": request.cookies.get(FORM_COOKIE, ""), "username": "",
             "error": "The form expired: please log in again.", "next": "/"},
            status_code=403,
        )  # fmt: skip
    username = form_text(form, "username", 200)
    try:
        token, _ = console.accounts.login(username, form_text(form, "password", 2000), address=client_address(request))
    except LoginRefused as exc:
        return render(
            request,
            "login.html",
            {
                "title": "Log in",
                "csrf": request.cookies.get(FORM_COOKIE, ""),
                "error": str(exc),
                "username": username,
                "next": _local_path(request.query_params.get("next", "/")),
            },
            status_code=401,
        )
    response = RedirectResponse(_local_path(request.query_params.get("next", "/")), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        secure=True,
        samesite="strict",
        path="/",
        max_age=int(console.settings.session_max.total_seconds()),
    )
    response.delete_cookie(FORM_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.get("/setup/{token}", response_class=HTMLResponse)
def setup_form(request: Request, token: str, console: ConsoleDep) -> Response:
    valid = console.accounts.setup_token_valid(token)
    form_token = request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(32)
    response = render(
        request,
        "setup.html",
        {"title": "Set up", "valid": valid, "csrf": form_token, "min_password": MIN_PASSWORD, "username": "admin"},
        status_code=200 if valid else 410,
    )
    _form_cookie(response, form_token)
    return response


@router.post("/setup/{token}")
def setup(request: Request, token: str, console: ConsoleDep, form: FormDep) -> Response:
    username = form_text(form, "username", 200)
    ctx: dict[str, Any] = {
        "title": "Set up",
        "valid": True,
        "csrf": request.cookies.get(FORM_COOKIE, ""),
        "min_password": MIN_PASSWORD,
        "username": username,
    }
    if not _anonymous_form_ok(request, form_text(form, "csrf_token", 200)):
        return render(request, "setup.html", {**ctx, "error": "The form expired: please try again."}, status_code=403)
    password = form_text(form, "password", 2000)
    if password != form_text(form, "password2", 2000):
        return render(request, "setup.html", {**ctx, "error": "The two passwords differ."}, status_code=400)
    try:
        console.accounts.create_first_admin(token, username, password)
    except LoginRefused:
        return render(request, "setup.html", {**ctx, "valid": False}, status_code=410)
    except InputError as exc:
        return render(request, "setup.html", {**ctx, "error": str(exc)}, status_code=400)
    return RedirectResponse("/login", status_code=303)


@router.head(CLIENT_PATH + "{token}")
def client_head(token: str) -> Response:
    """A HEAD says nothing about a link and never uses it up (link checkers and previewers send one)."""
    return Response(status_code=200, headers={"cache-control": "no-store"})


@router.get(CLIENT_PATH + "{token}", response_class=HTMLResponse)
def client_page(request: Request, token: str, console: ConsoleDep) -> Response:
    """The page a deployment link opens. It uses nothing up: mail previews and link scanners open
    every link they see; the configuration waits for the button (a POST) the client sends."""
    try:
        info = console.clients.peek(token)
    except LinkRefused as exc:
        return render(
            request,
            "client_link.html",
            {"title": "Deployment link", "refused": str(exc), "hint": exc.hint or ""},
            status_code=410,
        )
    return render(request, "client_link.html", {"title": "Deployment link", "info": info})


@router.post(CLIENT_PATH + "{token}")
def client_fetch(request: Request, token: str, console: ConsoleDep) -> Response:
    """A client fetches its configuration with its one-time link (no account: the link is the key)."""
    try:
        ctype, body, _ = console.clients.fetch(
            token, address=client_address(request), certificate=console.certificates.client_values
        )
    except LinkRefused as exc:
        return PlainTextResponse(f"{exc}\n{exc.hint or ''}\n", status_code=410, headers={"cache-control": "no-store"})
    return Response(
        body,
        media_type=ctype,
        headers={"cache-control": "no-store", "pragma": "no-cache", "content-disposition": "inline"},
    )
