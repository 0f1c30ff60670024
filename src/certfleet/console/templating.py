"""The pages' templates, and the HTML or JSON form of an error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from certfleet.console.deps import console_of, wants_json
from certfleet.console.hints import Face, console_hint
from certfleet.console.roles import Role
from certfleet.console.services.accounts import SessionInfo

__all__ = ["error_response", "error_title", "render", "templates"]

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.globals["site"] = "certfleet"
templates.env.globals["Role"] = Role  # a page shows what the account may do: actor.may(Role("operator"))
templates.env.filters["hint"] = console_hint

# an error page's title, by status: what happened, in a word or two
_TITLES = {
    404: "Not found",
    405: "Not allowed",
    410: "Gone",
    413: "Too large",
    429: "Too many attempts",
}


def render(request: Request, name: str, context: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    """``name`` with ``context``, and what every page shows: the account, its CSRF token, messages."""
    console = console_of(request)
    session: SessionInfo | None = getattr(request.state, "session", None)
    base: dict[str, Any] = {
        "actor": getattr(request.state, "actor", None),
        "csrf": session.csrf_token if session else context.get("csrf", ""),
        "nonce": request.scope.get("state", {}).get("nonce", ""),
        "messages": context.pop("messages", []),
        "served_fingerprint": console.served_fingerprint_for(request.url.hostname),
        "here": context.get("here", ""),
        "title": context.get("title", "certfleet"),
        "now": console.clock(),
        "expiring_days": console.settings.expiring_days,
    }
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


def error_title(status: int) -> str:
    return _TITLES.get(status, "Refused" if status < 500 else "Unavailable")


def error_response(request: Request, status: int, message: str, hint: str = "", code: str = "error") -> Response:
    """The error as JSON for the API and ``/metrics``, else as a page; its hint in that face's words."""
    if wants_json(request):
        return JSONResponse({"error": message, "hint": console_hint(hint, Face.API), "code": code}, status_code=status)
    return render(
        request,
        "error.html",
        {"title": error_title(status), "message": message, "hint": console_hint(hint)},
        status_code=status,
    )
