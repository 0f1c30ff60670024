"""The typed dependencies of the routes: the console, the account behind a request, the role a
route needs, its CSRF check, and the form it sent.

Requests authenticate with the session cookie (then every unsafe method carries the session's CSRF
token, as the form field ``csrf_token`` or the header ``X-CSRF-Token``) or with an API bearer token
(no CSRF token needed: a browser never sends one by itself). The outermost middleware
authenticates before any body is read (:func:`identify`); the routes then say which role they
need::

    @router.post("/things", dependencies=allow(Role.OPERATOR))
    def add_thing(...): ...

    @router.delete("/things/{id}")
    def remove_thing(actor: AdminDep, ...): ...

Every route declares its role (a test reads them all, and docs/console.md lists them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.datastructures import FormData, UploadFile

from certfleet.console import security
from certfleet.console.core import Console
from certfleet.console.roles import Role
from certfleet.console.services.accounts import SessionInfo
from certfleet.console.services.audit import Actor
from certfleet.console.services.clients import CLIENT_PATH
from certfleet.errors import InputError

__all__ = [
    "API_PREFIX",
    "FORM_COOKIE",
    "PUBLIC_PATHS",
    "SESSION_COOKIE",
    "ActorDep",
    "AdminDep",
    "ConsoleDep",
    "FormDep",
    "OperatorDep",
    "Refusal",
    "RoleRequirement",
    "Unauthenticated",
    "ViewerDep",
    "allow",
    "authenticate",
    "checked_csrf",
    "client_address",
    "console_of",
    "form_text",
    "identify",
    "is_public",
    "read_form",
    "require",
    "wants_json",
]

API_PREFIX = "/api/v1"
# __Host-: the browser only keeps it when Secure, Path=/ and no Domain, so no subdomain can plant one
SESSION_COOKIE = "__Host-certfleet_session"
FORM_COOKIE = "__Host-certfleet_form"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# what answers without an account: the login form, the setup link, a client's one-time link, static
PUBLIC_PATHS = ("/login", "/setup/", CLIENT_PATH, "/static/")
MAX_FORM_FIELDS = 200
MAX_FORM_FILES = 20


class Unauthenticated(Exception):
    """No valid session or token: pages redirect to the login form, the API answers 401."""


class Refusal(Exception):
    """A request refused before it reached its route (a bad CSRF token)."""

    def __init__(self, status: int, message: str, hint: str = "", code: str = "forbidden") -> None:
        super().__init__(message)
        self.status, self.message, self.hint, self.code = status, message, hint, code


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


def is_public(path: str) -> bool:
    """Whether ``path`` answers without an account."""
    return path == "/login" or path.startswith(PUBLIC_PATHS[1:])


def _bearer(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def identify(console: Console, authorization: str, session_cookie: str) -> tuple[Actor, SessionInfo | None] | None:
    """Who sent a request with these headers: the bearer token's actor, or the session cookie's
    (and its session); None for nobody. Reads the store: run it off the event loop."""
    token = _bearer(authorization)
    if token is not None:
        actor = console.tokens.bearer(token)
        return (actor, None) if actor is not None else None
    session = console.accounts.session(session_cookie)
    return (session.actor, session) if session is not None else None


def _state(request: Request) -> Mapping[str, Any]:
    state: Mapping[str, Any] = request.scope.setdefault("state", {})
    return state


async def authenticate(request: Request) -> Actor:
    """Who is asking: the bearer token's account, or the session cookie's. Checked once per
    request, normally by the outermost middleware before the body is read."""
    cached: Actor | None = _state(request).get("actor")
    if cached is not None:
        return cached
    from anyio import to_thread

    found = await to_thread.run_sync(
        identify,
        console_of(request),
        request.headers.get("authorization", ""),
        request.cookies.get(SESSION_COOKIE, ""),
    )
    if found is None:
        raise Unauthenticated
    request.state.actor, request.state.session = found
    return found[0]


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
            "csrf",
        )
    return actor


class RoleRequirement:
    """A route's dependency: the request's actor, once it holds ``role`` (else 403). The CSRF
    check runs first, so an unsafe request from a page proves it came from the console."""

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(self, actor: Annotated[Actor, Depends(checked_csrf)]) -> Actor:
        if not actor.may(self.role):
            raise Refusal(
                403,
                f"this needs the {self.role.value} role; {actor.audit_name} has the {actor.role.value} role",
                "ask an administrator" if actor.role is not Role.METRICS else "a metrics token reads /metrics only",
            )
        return actor

    def __repr__(self) -> str:
        return f"require(Role.{self.role.name})"


# one object per role, so that FastAPI's per-request cache runs each check once
_REQUIREMENTS = {role: RoleRequirement(role) for role in Role}


def require(role: Role) -> RoleRequirement:
    """The dependency that lets a request through only with ``role`` or above."""
    return _REQUIREMENTS[role]


def allow(role: Role) -> list[Any]:
    """``dependencies=allow(Role.VIEWER)``: a route that needs ``role`` but not the actor itself."""
    return [Depends(require(role))]


ViewerDep = Annotated[Actor, Depends(require(Role.VIEWER))]
OperatorDep = Annotated[Actor, Depends(require(Role.OPERATOR))]
AdminDep = Annotated[Actor, Depends(require(Role.ADMIN))]


async def _console(request: Request) -> Console:
    return console_of(request)  # async: FastAPI runs a plain def dependency in a worker thread


ConsoleDep = Annotated[Console, Depends(_console)]
FormDep = Annotated[FormData, Depends(read_form)]
