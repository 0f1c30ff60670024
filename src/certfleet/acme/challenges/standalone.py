"""http-01 answered by certfleet itself, for a name served by the machine certfleet runs on when
no web server listens there (as certbot's ``--standalone``): a small HTTP server, up only while
the CA checks the tokens.

``http-01:standalone[:[HOST:]PORT]``: port 80 on every IPv4 address by default (the CA always
comes to port 80; another port only behind a redirect or for a test CA).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from certfleet.acme.challenges._base import Solver, SolverContext, Task
from certfleet.acme.model import ChallengeType
from certfleet.errors import EnvError, InputError

__all__ = ["StandaloneSolver"]

PREFIX = "/.well-known/acme-challenge/"


class _Handler(BaseHTTPRequestHandler):
    tokens: ClassVar[dict[str, str]] = {}  # replaced per server by a subclass

    def do_GET(self) -> None:
        value = self.tokens.get(self.path[len(PREFIX) :]) if self.path.startswith(PREFIX) else None
        body = (value or "not found").encode("ascii")
        self.send_response(200 if value is not None else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(ConnectionError):  # a validator that hung up early
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the CA's fetches are not the user's business


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # the CA checks every token at once: socketserver's backlog of 5 would drop most of them
    request_queue_size = 256

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that misbehaves is the CA's problem to report, not a traceback on stderr


class StandaloneSolver(Solver):
    kind = ChallengeType.HTTP01

    def __init__(self, spec: str, context: SolverContext) -> None:
        super().__init__(spec, context)
        host, _, port = spec.rpartition(":") if ":" in spec else ("", "", spec)
        if port and not port.isdigit():
            raise InputError(f"http-01:standalone:{spec}: the port is not a number", hint="http-01:standalone:80")
        self.address = (host, int(port or 80))
        self._server: _Server | None = None
        self._tokens: dict[str, str] = {}

    @property
    def label(self) -> str:
        return f"http-01:standalone:{self.address[0] or '*'}:{self.address[1]}"

    def validate(self, names: Sequence[str]) -> None:
        wild = [n for n in names if n.startswith("*.")]
        if wild:
            raise InputError(f"{wild[0]} is a wildcard: only dns-01 can prove it")

    def where(self, name: str) -> str:
        return f"{self.label} (certfleet answers)"

    async def present(self, tasks: Sequence[Task]) -> None:
        self._tokens.update({t.token: t.value for t in tasks})
        if self._server is None:
            tokens = self._tokens
            handler = type("Handler", (_Handler,), {"tokens": tokens})
            try:
                self._server = await asyncio.to_thread(_Server, self.address, handler)
            except OSError as exc:
                raise EnvError(
                    f"cannot listen on port {self.address[1]} for http-01: {exc.strerror}",
                    hint="stop the web server that holds it and use its webroot instead (a node's --webroot)",
                ) from exc
            threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="certfleet-http-01", daemon=True
            ).start()

    async def cleanup(self, tasks: Sequence[Task]) -> list[str]:
        for task in tasks:
            self._tokens.pop(task.token, None)
        if not self._tokens and self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.shutdown)
            server.server_close()
        return []
