"""How the pages answer a form. A form that changes something answers with a redirect to a page
(post/redirect/get: reloading that page makes nothing twice) that says what was done; a refused
form is shown again with the reason above it, in the console's words; removing anything asks
first, on a page of its own (no script needed), and a remove sent without that answer is sent to
that page."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import FormData

from certfleet.console.deps import form_text
from certfleet.console.hints import console_hint
from certfleet.console.roles import Forbidden
from certfleet.console.services.throttle import LoginThrottled
from certfleet.console.templating import render
from certfleet.errors import CertfleetError, ConflictError, LimitError

__all__ = ["DONE", "confirm_page", "confirmed", "done_messages", "page_status", "redirect", "refusal"]

# messages shown after a change, by code: never text taken from the request
DONE = {
    "node-saved": "Node {} saved.",
    "node-removed": "Node {} removed.",
    "token-revoked": "Token {} revoked.",
    "profile-saved": "Client profile {} saved.",
    "user-added": "Client user {} added.",
    "user-removed": "Client user {} removed.",
    "imported": "Certificate imported into {} and made active.",
    "activated": "Version activated for {}.",
    "anchor-added": "Trust anchor {} added: imports trust it from now on.",
    "anchor-known": "Trust anchor {} was trusted already.",
    "anchor-removed": "Trust anchor {} removed.",
    "alert-added": "Alert destination {} added.",
    "alert-removed": "Alert destination {} removed.",
    "alert-settings": "Alert settings saved.{}",
    "account-added": "Account {} added.",
    "account-removed": "Account {} removed: its sessions and API tokens have ended.",
    "password-reset": "New password for {}: its sessions have ended.",
    "account-unlocked": "Logins of {} wait no more.",
    "logins-unlocked": "Logins of {} wait no more.",
}
CONFIRM_FIELD = "confirm"


def done_messages(request: Request) -> list[tuple[str, str]]:
    code = request.query_params.get("done", "")
    if code in DONE:
        return [("good", DONE[code].format(request.query_params.get("name", "")[:80]))]
    return []


def refusal(exc: CertfleetError) -> list[tuple[str, str]]:
    """Why a form was refused, shown above it: the error's line and its hint, in the console's words."""
    hint = console_hint(exc.hint)
    return [("bad", f"{exc}" + (f" — {hint}" if hint else ""))]


def page_status(exc: CertfleetError) -> int:
    """The status of a form shown again with why it was refused (the API's statuses)."""
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, LoginThrottled):
        return 429
    if isinstance(exc, LimitError):
        return 413
    return 403 if isinstance(exc, Forbidden) else 400


def redirect(
    path: str, done: str | None = None, name: str = "", anchor: str = "", query: dict[str, str] | None = None
) -> RedirectResponse:
    params = dict(query or {})
    if done:
        params.update(done=done, name=name[:80])
    if params:
        path = f"{path}?{urlencode(params, quote_via=quote)}"
    return RedirectResponse(path + (f"#{quote(anchor)}" if anchor else ""), status_code=303)


def confirmed(form: FormData) -> bool:
    """Whether the form is the answer of a confirmation page."""
    return form_text(form, CONFIRM_FIELD, 10) == "yes"


def confirm_page(
    request: Request, *, title: str, question: str, details: list[str], action: str, button: str, back: str
) -> HTMLResponse:
    """Ask before a removal: what goes, what stays, and the one button that does it."""
    return render(
        request,
        "confirm.html",
        {
            "title": title,
            "question": question,
            "details": details,
            "action": action,
            "button": button,
            "back": back,
            "field": CONFIRM_FIELD,
        },
    )
