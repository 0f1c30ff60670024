"""The outermost layer of the console: who is asking (before any body is read), the body limit
that goes with it, HEAD wherever GET is, security headers, and an access log that never shows a
secret (one-time links carry their token in the path)."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Mapping
from urllib.parse import quote

from anyio import to_thread
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from certfleet.console.core import Console
from certfleet.console.deps import API_PREFIX, SESSION_COOKIE, identify, is_public
from certfleet.console.roles import Role
from certfleet.console.services.clients import CLIENT_PATH
from certfleet.errors import EnvError

__all__ = ["SMALL_BODY", "BodyTooLarge", "Guard"]

# what a request may send when it is not an operator's: a login form, a token's name
SMALL_BODY = 64 * 1024

access_log = logging.getLogger("certfleet.console.access")

# paths whose last part is a secret: the access log shows only the prefix
_SECRET_PATHS = re.compile(r"^(/setup/|/client/)[^/?]*")


class BodyTooLarge(Exception):
    pass


class Guard:
    """Outermost layer: authentication before the body, body size limits, HEAD, security headers,
    and an access log without secrets."""

    def __init__(self, app: ASGIApp, *, limit: int, console: Console) -> None:
        self.app = app
        self.limit = limit
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        path: str = scope.get("path", "")
        method: str = scope.get("method", "-")
        status = {"code": 0}
        nonce = secrets.token_urlsafe(16)
        state = scope.setdefault("state", {})
        state["nonce"] = nonce
        head = method == "HEAD" and not path.startswith(CLIENT_PATH)
        if head:
            # HEAD wherever GET is: the GET's answer without its body (a client's one-time link
            # answers HEAD itself: its GET uses the link up)
            scope = {**scope, "method": "GET"}

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for k, v in _security_headers(nonce, path).items():
                    if k.encode() not in present:
                        headers.append((k.encode(), v.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and head:
                message = {**message, "body": b""}
            await send(message)

        try:
            limit = self.limit
            if not is_public(path):
                refusal = await self._authenticate(scope, state)
                if refusal is not None:
                    await refusal(scope, receive, send_wrapped)
                    return
                if not state["actor"].may(Role.OPERATOR):
                    limit = min(limit, SMALL_BODY)
            else:
                limit = min(limit, SMALL_BODY)
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                await self._too_large(scope, send_wrapped, limit)
                return
            seen = 0

            async def receive_bounded() -> Message:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        state["too_large"] = True
                        raise BodyTooLarge
                return message

            try:
                await self.app(scope, receive_bounded, send_wrapped)
            except BodyTooLarge:
                if status["code"] == 0:
                    await self._too_large(scope, send_wrapped, limit)
        finally:
            client = scope.get("client") or ("-", 0)
            access_log.info(
                '%s "%s %s" %s %.0fms',
                client[0],
                method,
                _SECRET_PATHS.sub(r"\1…", path)[:200],
                status["code"] or "-",
                (time.monotonic() - started) * 1000,
            )

    async def _authenticate(self, scope: Scope, state: dict[str, object]) -> ASGIApp | None:
        """Put who is asking in the request's state; or the answer that refuses it: nobody (the
        API 401, pages the login form), or a metrics token anywhere but /metrics (403)."""
        headers = {k: v for k, v in scope.get("headers", []) if k in (b"authorization", b"cookie")}
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        cookie = _cookie(headers.get(b"cookie", b"").decode("latin-1"), SESSION_COOKIE)
        path: str = scope.get("path", "")
        api = path.startswith(API_PREFIX) or path == "/metrics"
        try:
            found = await to_thread.run_sync(identify, self.console, authorization, cookie)
        except EnvError as exc:  # the store is busy or unreadable: say so, as the routes do
            body = {"error": str(exc), "hint": exc.hint or "try again in a moment", "code": type(exc).__name__}
            return JSONResponse(body, status_code=503, headers={"retry-after": "2"})
        if found is None:
            if api:
                return JSONResponse(
                    {"error": "authentication required", "hint": "log in, or send an API token as a bearer token"},
                    status_code=401,
                    headers={"www-authenticate": 'Bearer realm="certfleet"'},
                )
            target = quote(path, safe="/") if scope.get("method") == "GET" else "/"
            return RedirectResponse(f"/login?next={target}", status_code=303)
        state["actor"], state["session"] = found
        if found[0].role is Role.METRICS and path != "/metrics":
            return JSONResponse(
                {"error": "a metrics token reads /metrics only", "hint": "use another token", "code": "forbidden"},
                status_code=403,
            )
        return None

    async def _too_large(self, scope: Scope, send: Send, limit: int) -> None:
        if limit >= 1024 * 1024:
            message = f"the upload is too large: the limit is {limit / (1024 * 1024):g} MiB"
        else:
            message = f"the request is too large: the limit is {limit // 1024} KiB"
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


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip().strip('"')
    return ""


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
