"""The console application: its services, its routes, the answers to errors, its outermost guard.

Every route refuses an anonymous request except the login form, the one-time setup link, the
client deployment fetch and the static files (see :mod:`certfleet.console.deps`), and each says
which role it needs. Redirects are relative: nothing a request says about the host is echoed.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from certfleet.clock import Clock, utc_now
from certfleet.console.core import Console
from certfleet.console.deps import API_PREFIX, Refusal, Unauthenticated, ViewerDep, authenticate, wants_json
from certfleet.console.middleware import BodyTooLarge, Guard
from certfleet.console.roles import Forbidden
from certfleet.console.routes import accounts, api, autopilot, issuers, lifecycle, metrics, pages, public, queue
from certfleet.console.services.clients import LinkRefused
from certfleet.console.services.throttle import LoginThrottled
from certfleet.console.settings import ConsoleSettings
from certfleet.console.templating import error_response
from certfleet.console.tls import TLSContexts
from certfleet.errors import (
    CertfleetError,
    ConflictError,
    EnvError,
    LimitError,
    NotFoundError,
    OperationFailed,
)
from certfleet.store import Store

__all__ = ["create_app"]


def _status_for(exc: CertfleetError) -> int:
    if isinstance(exc, LoginThrottled):
        return 429
    if isinstance(exc, LinkRefused):
        return 410
    if isinstance(exc, LimitError):
        return 413
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, EnvError):
        return 503
    if isinstance(exc, OperationFailed):
        return 422
    return 400


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(app: FastAPI, scope: dict[str, object]) -> str:
    """The methods some route answers at the request's path (``Allow`` on a 405)."""
    routes = [r for r in app.router.routes if not isinstance(r, Mount)]
    methods = {
        method
        for method in _METHODS
        if any(r.matches({**scope, "type": "http", "method": method})[0] is Match.FULL for r in routes)
    }
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def _slash_redirect(request: Request) -> Response | None:
    """``/nodes/`` → ``/nodes``: relative, so no Host header is echoed (and never ``//host``)."""
    path = request.url.path
    if request.method not in ("GET", "HEAD") or not path.endswith("/") or path == "/":
        return None
    target = "/" + path.strip("/")
    if target.startswith(("//", "/\\")) or "\\" in target:
        return None
    query = request.url.query
    return RedirectResponse(target + (f"?{query}" if query else ""), status_code=308)


def create_app(
    store: Store,
    *,
    settings: ConsoleSettings | None = None,
    clock: Clock = utc_now,
    tls: TLSContexts | None = None,
) -> FastAPI:
    """The console as an ASGI app over ``store`` (served by ``certfleet serve``, or a test client)."""
    settings = settings or ConsoleSettings()
    app = FastAPI(
        title="certfleet console API",
        version="1",
        description="Everything the certfleet console pages do, as JSON. Authenticate with a bearer token "
        "(`Authorization: Bearer cft_...`) or the session cookie plus the `X-CSRF-Token` header.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind authentication
        redirect_slashes=False,  # Starlette's would build an absolute URL from the Host header
    )
    app.state.console = Console.over(store, settings=settings, clock=clock, tls=tls)

    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    app.include_router(public.router)
    app.include_router(pages.router)
    app.include_router(lifecycle.router)
    app.include_router(issuers.router)
    app.include_router(accounts.router)
    app.include_router(api.router)
    app.include_router(accounts.api)
    app.include_router(autopilot.router)
    app.include_router(autopilot.api)
    app.include_router(issuers.api_router)
    app.include_router(queue.router)
    app.include_router(queue.api)
    app.include_router(metrics.router)

    @app.get(f"{API_PREFIX}/openapi.json", include_in_schema=False)
    async def openapi(_: ViewerDep) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.exception_handler(Unauthenticated)
    async def _unauthenticated(request: Request, _: Exception) -> Response:
        if wants_json(request):
            return JSONResponse(
                {"error": "authentication required", "hint": "log in, or send an API token as a bearer token"},
                status_code=401,
                headers={"www-authenticate": 'Bearer realm="certfleet"'},
            )
        target = quote(request.url.path, safe="/") if request.method == "GET" else "/"
        return RedirectResponse(f"/login?next={target}", status_code=303)

    @app.exception_handler(Refusal)
    async def _refused(request: Request, exc: Refusal) -> Response:
        return error_response(request, exc.status, exc.message, exc.hint, exc.code)

    @app.exception_handler(CertfleetError)
    async def _certfleet_error(request: Request, exc: CertfleetError) -> Response:
        status = _status_for(exc)
        response = error_response(request, status, str(exc), exc.hint or "", type(exc).__name__)
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int):
            response.headers["retry-after"] = str(retry_after)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.scope.get("state", {}).get("too_large"):
            raise BodyTooLarge  # FastAPI wrapped it while parsing; the guard answers with 413
        if exc.status_code == 404:
            # an unknown path says nothing to an anonymous caller
            try:
                await authenticate(request)
            except Unauthenticated:
                return await _unauthenticated(request, Unauthenticated())
            redirect = _slash_redirect(request)
            if redirect is not None:
                return redirect
        response = error_response(request, exc.status_code, str(exc.detail))
        if exc.status_code == 405:
            response.headers["allow"] = _allowed_methods(app, dict(request.scope))
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(request, 422, f"invalid request: {where} {first.get('msg', '')}".strip(), code="invalid")

    app.add_middleware(Guard, limit=settings.upload_limit, console=app.state.console)
    return app
