"""The console application: settings, the request guards (auth, CSRF, size limit), rendering.

Every route refuses an anonymous request except the login form, the one-time setup link, the
client deployment fetch and the static files. Requests authenticate with the session cookie (and
then every unsafe method carries the session's CSRF token) or with an API bearer token.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from certfleet.console.accounts import Accounts, Actor, LoginThrottled, SessionInfo
from certfleet.console.clients import Clients, LinkRefused
from certfleet.errors import CertfleetError, EnvError, InputError, LimitError, OperationFailed
from certfleet.problems import EXPIRING_DAYS

if TYPE_CHECKING:
    from certfleet.console.service import Console
    from certfleet.console.tls import TLSContexts
    from certfleet.store import Store

__all__ = [
    "API_PREFIX",
    "SESSION_COOKIE",
    "ConsoleSettings",
    "Unauthenticated",
    "create_app",
    "utc_now",
]

access_log = logging.getLogger("certfleet.console.access")

HERE = Path(__file__).parent
API_PREFIX = "/api/v1"
# __Host-: the browser only keeps it when Secure, Path=/ and no Domain, so no subdomain can plant one
SESSION_COOKIE = "__Host-certfleet_session"
FORM_COOKIE = "__Host-certfleet_form"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_FIELDS = 200
MAX_FORM_FILES = 20
# paths whose last part is a secret: the access log shows only the prefix
_SECRET_PATHS = re.compile(r"^(/setup/|/client/)[^/?]*")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """How the console behaves; the defaults are what ``certfleet serve`` uses."""

    upload_limit: int = 10 * 1024 * 1024
    session_idle: dt.timedelta = dt.timedelta(minutes=30)
    session_max: dt.timedelta = dt.timedelta(hours=12)
    setup_ttl: dt.timedelta = dt.timedelta(hours=1)
    probe_timeout: float = 3.0
    probe_ttl: float = 30.0  # seconds a node's probe result is reused by the dashboard and /metrics
    import_ttl: dt.timedelta = dt.timedelta(minutes=15)  # an import shown but not confirmed is dropped
    extra_trust: tuple[x509.Certificate, ...] = field(default=(), repr=False)  # besides Mozilla + the store's
    expiring_days: int = EXPIRING_DAYS  # warn when a certificate has fewer days left
    fetch_aia: bool = True


class Unauthenticated(Exception):
    pass


class BodyTooLarge(Exception):
    pass


class _Refusal(Exception):
    """A request refused before it reached a route (bad CSRF token)."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


def console_of(request: Request) -> Console:
    """The application's :class:`~certfleet.console.service.Console`."""
    console: Console = request.app.state.console
    return console


def wants_json(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX) or request.url.path == "/metrics"


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# -- ASGI middleware ------------------------------------------------------------------------------


class Guard:
    """Outermost layer: body size limit, security headers, and an access log without secrets."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        path: str = scope.get("path", "")
        status = {"code": 0}
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["nonce"] = nonce

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for k, v in _security_headers(nonce, path).items():
                    if k.encode() not in present:
                        headers.append((k.encode(), v.encode()))
                message = {**message, "headers": headers}
            await send(message)

        declared = _content_length(scope)
        try:
            if declared is not None and declared > self.limit:
                await self._too_large(scope, send_wrapped)
                return
            seen = 0

            async def receive_bounded() -> Message:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > self.limit:
                        scope["state"]["too_large"] = True
                        raise BodyTooLarge
                return message

            try:
                await self.app(scope, receive_bounded, send_wrapped)
            except BodyTooLarge:
                if status["code"] == 0:
                    await self._too_large(scope, send_wrapped)
        finally:
            client = scope.get("client") or ("-", 0)
            access_log.info(
                '%s "%s %s" %s %.0fms',
                client[0],
                scope.get("method", "-"),
                _SECRET_PATHS.sub(r"\1…", path)[:200],
                status["code"] or "-",
                (time.monotonic() - started) * 1000,
            )

    async def _too_large(self, scope: Scope, send: Send) -> None:
        mib = self.limit / (1024 * 1024)
        message = f"the upload is too large: the limit is {mib:g} MiB"
        hint = "a certificate package is a few KiB; send only the CA's files"
        api = scope.get("path", "").startswith(API_PREFIX)
        if api:
            body = JSONResponse({"error": message, "hint": hint, "code": "too-large"}, status_code=413).body
            ctype = b"application/json"
        else:
            body = (
                "<!doctype html><meta charset=utf-8><title>Upload too large</title>"
                f'<link rel="stylesheet" href="/static/console.css"><main><div class="card"><h1>Upload too large</h1>'
                f'<div class="alert" role="alert">{message}</div><p class="muted">{hint}</p>'
                '<p><a href="/import">Back</a></p></div></main>'
            ).encode()
            ctype = b"text/html; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", ctype),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for k, v in scope.get("headers", []):
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


def _security_headers(nonce: str, path: str) -> Mapping[str, str]:
    headers = {
        "content-security-policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
        "referrer-policy": "no-referrer",
        "strict-transport-security": "max-age=31536000",
        "cross-origin-opener-policy": "same-origin",
    }
    if not path.startswith("/static/"):
        # pages show fingerprints, names and one-time links: none of it belongs in a cache
        headers["cache-control"] = "no-store"
    return headers


# -- authentication -------------------------------------------------------------------------------


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def read_form(request: Request) -> FormData:
    return await request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)


def form_text(form: FormData, name: str, limit: int = 10_000) -> str:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return ""
    if len(value) > limit:
        raise InputError(f"the field {name} is longer than {limit} characters")
    return value


async def authenticate(request: Request) -> Actor:
    """Who is asking, checked once per request; also checks CSRF for unsafe methods by cookie."""
    cached = getattr(request.state, "actor", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
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
    if request.method not in SAFE_METHODS:
        sent = request.headers.get("x-csrf-token")
        if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            sent = form_text(await read_form(request), "csrf_token", 200)
        from certfleet.console.security import same

        if not sent or not same(sent, session.csrf_token):
            raise _Refusal(
                403,
                "the form is missing its security token or it does not match your session",
                "reload the page and try again",
            )
    request.state.actor, request.state.session = session.actor, session
    return session.actor


# -- rendering ------------------------------------------------------------------------------------

templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals["site"] = "certfleet"


def render(request: Request, name: str, context: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    console = console_of(request)
    session: SessionInfo | None = getattr(request.state, "session", None)
    base: dict[str, Any] = {
        "actor": getattr(request.state, "actor", None),
        "csrf": session.csrf_token if session else context.get("csrf", ""),
        "nonce": request.scope.get("state", {}).get("nonce", ""),
        "messages": context.pop("messages", []),
        "served_fingerprint": console.served_fingerprint(),
        "here": context.get("here", ""),
        "title": context.get("title", "certfleet"),
        "now": console.now(),
        "expiring_days": console.settings.expiring_days,
    }
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


def _status_for(exc: CertfleetError) -> int:
    if isinstance(exc, LoginThrottled):
        return 429
    if isinstance(exc, LinkRefused):
        return 410
    if isinstance(exc, LimitError):
        return 413
    if isinstance(exc, EnvError):
        return 503
    if isinstance(exc, OperationFailed):
        return 422
    return 400


def error_response(request: Request, status: int, message: str, hint: str = "", code: str = "error") -> Response:
    if wants_json(request):
        return JSONResponse({"error": message, "hint": hint, "code": code}, status_code=status)
    return render(
        request,
        "error.html",
        {"title": "Refused" if status < 500 else "Unavailable", "message": message, "hint": hint},
        status_code=status,
    )


# -- the app --------------------------------------------------------------------------------------


def create_app(
    store: Store,
    *,
    settings: ConsoleSettings | None = None,
    clock: Callable[[], dt.datetime] = utc_now,
    tls: TLSContexts | None = None,
) -> FastAPI:
    """The console as an ASGI app over ``store`` (served by ``certfleet serve``, or a test client)."""
    from certfleet.console import api, metrics, pages, public
    from certfleet.console.service import Console

    settings = settings or ConsoleSettings()
    app = FastAPI(
        title="certfleet console API",
        version="1",
        description="Everything the certfleet console pages do, as JSON. Authenticate with a bearer token "
        "(`Authorization: Bearer cft_...`) or the session cookie plus the `X-CSRF-Token` header.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind authentication
    )
    accounts = Accounts(
        store.session,
        clock=clock,
        session_idle=settings.session_idle,
        session_max=settings.session_max,
        setup_ttl=settings.setup_ttl,
    )
    app.state.console = Console(
        store, accounts=accounts, clients=Clients(store.session, clock=clock), settings=settings, clock=clock, tls=tls
    )

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(public.public)
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(metrics.router)

    @app.get(f"{API_PREFIX}/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        await authenticate(request)
        return JSONResponse(app.openapi())

    @app.exception_handler(Unauthenticated)
    async def _unauthenticated(request: Request, _: Exception) -> Response:
        if wants_json(request):
            return JSONResponse(
                {"error": "authentication required", "hint": "log in, or send an API token as a bearer token"},
                status_code=401,
                headers={"www-authenticate": 'Bearer realm="certfleet"'},
            )
        target = request.url.path if request.method == "GET" else "/"
        return RedirectResponse(f"/login?next={target}", status_code=303)

    @app.exception_handler(_Refusal)
    async def _refused(request: Request, exc: _Refusal) -> Response:
        return error_response(request, exc.status, exc.message, exc.hint, "csrf")

    @app.exception_handler(CertfleetError)
    async def _certfleet_error(request: Request, exc: CertfleetError) -> Response:
        status = _status_for(exc)
        response = error_response(request, status, str(exc), exc.hint or "", type(exc).__name__)
        if isinstance(exc, LoginThrottled):
            response.headers["retry-after"] = str(exc.retry_after)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.scope.get("state", {}).get("too_large"):
            raise BodyTooLarge  # FastAPI wrapped it while parsing; the guard answers with 413
        if exc.status_code == 404:
            # an unknown path says nothing to an anonymous caller
            try:
                await authenticate(request)
            except (Unauthenticated, _Refusal):
                return await _unauthenticated(request, Unauthenticated())
        return error_response(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(request, 422, f"invalid request: {where} {first.get('msg', '')}".strip(), code="invalid")

    app.add_middleware(Guard, limit=settings.upload_limit)
    return app
