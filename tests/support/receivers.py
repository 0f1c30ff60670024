"""Where alerts land in tests: a real SMTP server (aiosmtpd) and a webhook receiver, both on
loopback, each keeping what it was sent.

    with SmtpSink() as smtp, WebhookSink() as hook:
        ... Apprise URLs smtp.url, hook.url ...; smtp.subjects(), hook.titles()
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from support import require_peer
from support.servers import free_port

__all__ = ["SmtpSink", "WebhookSink"]


class SmtpSink:
    """aiosmtpd on 127.0.0.1, no TLS, no authentication: every message is kept."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        message = email.message_from_bytes(data, policy=email.policy.default)
        with self._lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 OK"

    @property
    def url(self) -> str:
        """Apprise's mailto:// URL for this server: its port, plain SMTP."""
        return f"mailto://127.0.0.1:{self.port}?from=certfleet@example.test&to=pki@example.test&mode=insecure"

    def subjects(self) -> list[str]:
        with self._lock:
            return [str(m["Subject"]) for m in self.messages]

    def bodies(self) -> list[str]:
        out = []
        with self._lock:
            for m in self.messages:
                part = m.get_body(preferencelist=("plain", "html"))
                out.append(part.get_content() if part is not None else "")
        return out

    def __enter__(self) -> Self:
        require_peer("an SMTP server")
        self._controller.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._controller.stop()


class WebhookSink:
    """An HTTP server on 127.0.0.1 that keeps the JSON body of every POST (Apprise's json://)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.posts: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                sink.posts.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-sink", daemon=True)

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/certfleet"

    def titles(self) -> list[str]:
        return [str(p.get("title")) for p in list(self.posts)]

    def __enter__(self) -> Self:
        require_peer("a webhook receiver")
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
