"""The outermost layer of the console: the upload limit, security headers, and an access log that
never shows a secret (one-time links carry their token in the path)."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Mapping

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from certfleet.console.deps import API_PREFIX

__all__ = ["BodyTooLarge", "Guard"]

access_log = logging.getLogger("certfleet.console.access")

# paths whose last part is a secret: the access log shows only the prefix
_SECRET_PATHS = re.compile(r"^(/setup/|/client/)[^/?]*")


class BodyTooLarge(Exception):
    pass


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
