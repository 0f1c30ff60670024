"""The typed dependencies of the routes: the console, the account behind a request, its CSRF check,
and the form it sent.

Requests authenticate with the session cookie (then every unsafe method carries the session's CSRF
token, as the form field ``csrf_token`` or the header ``X-CSRF-Token``) or with an API bearer token
(no CSRF token needed: a browser never sends one by itself).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData, UploadFile

from certfleet.console import security
from certfleet.console.core import Console
from certfleet.console.services.accounts import SessionInfo
from certfleet.console.services.audit import Actor
from certfleet.errors import InputError

__all__ = [
    "API_PREFIX",
    "FORM_COOKIE",
    "SESSION_COOKIE",
    "ActorDep",
    "ConsoleDep",
    "FormDep",
    "Refusal",
    "Unauthenticated",
    "authenticate",
    "checked_csrf",
    "client_address",
    "console_of",
    "form_text",
    "read_form",
    "wants_json",
]

API_PREFIX = "/api/v1"
# __Host-: the browser only keeps it when Secure, Path=/ and no Domain, so no subdomain can plant one
SESSION_COOKIE = "__Host-certfleet_session"
FORM_COOKIE = "__Host-certfleet_form"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_FIELDS = 200
MAX_FORM_FILES = 20


class Unauthenticated(Exception):
    """No valid session or token: pages redirect to the login form, the API answers 401."""


class Refusal(Exception):
    """A request refused before it reached its route (a bad CSRF token)."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


def console_of(request: Request) -> Console:
    """The application's :class:`~certfleet.console.core.Console`."""
    console: Console = request.app.state.console
    return console


def wants_json(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX) or request.url.path == "/metrics"


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def read_form(request: Request) -> FormData:
    """The form sent with the request, read once (Starlette keeps it for the next reader)."""
    return await request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)


def form_text(form: FormData, name: str, limit: int = 10_000) -> str:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return ""
    if len(value) > limit:
        raise InputError(f"the field {name} is longer than {limit} characters")
    return value


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def authenticate(request: Request) -> Actor:
    """Who is asking: the bearer token's account, or the session cookie's. Checked once per request."""
    cached: Actor | None = getattr(request.state, "actor", None)
    if cached is not None:
        return cached
    console = console_of(request)
    token = _bearer(request)
    if token is not None:
        actor = console.accounts.bearer(token)
        if actor is None:
            raise Unauthenticated
        request.state.actor, request.state.session = actor, None
        return actor
    session: SessionInfo | None = console.accounts.session(request.cookies.get(SESSION_COOKIE, ""))
    if session is None:
        raise Unauthenticated
    request.state.actor, request.state.session = session.actor, session
    return session.actor


ActorDep = Annotated[Actor, Depends(authenticate)]


async def checked_csrf(request: Request, actor: ActorDep) -> Actor:
    """The account, once an unsafe request made with the session cookie proved it comes from one of
    the console's own pages (the session's CSRF token)."""
    session: SessionInfo | None = getattr(request.state, "session", None)
    if session is None or request.method in SAFE_METHODS:
        return actor
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        sent = form_text(await read_form(request), "csrf_token", 200)
    if not sent or not security.same(sent, session.csrf_token):
        raise Refusal(
            403,
            "the form is missing its security token or it does not match your session",
            "reload the page and try again",
        )
    return actor


async def _console(request: Request) -> Console:
    return console_of(request)  # async: FastAPI runs a plain def dependency in a worker thread


ConsoleDep = Annotated[Console, Depends(_console)]
FormDep = Annotated[FormData, Depends(read_form)]
