"""A front for Pebble that stands in for a newer CA: Debian's Pebble 2.4.0 has no ACME Renewal
Information (RFC 9773), so this HTTPS server on loopback passes every request through to Pebble
and adds what such a CA would offer:

* ``renewalInfo`` in the directory, and answers at ``/renewal-info/<CertID>`` with the window the
  test chose (:attr:`AriFront.window`, or one per CertID) and a ``Retry-After``;
* it keeps every new order's payload (:attr:`AriFront.orders`), so a test sees what ``replaces``
  named, and refuses an order that replaces a CertID of :attr:`AriFront.already_replaced` as such
  a CA does (``alreadyReplaced``, 409);
* :meth:`AriFront.down` and :meth:`AriFront.up`: the CA stops answering (connections refused),
  then comes back on the same address.

Pebble writes every URL it hands out with the request's ``Host``, and checks each signed request's
``url`` against it: the front forwards the ``Host`` the client sent, so the client only ever talks
to the front. Its own certificate comes from a test root (:attr:`AriFront.ca_bundle`).

    with AriFront(tmp_path / "front", pebble) as front:
        front.window = (start, end)
        ... issuer add ... --acme front.directory --ca-bundle front.ca_bundle ...
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from certfleet.testing import TestCA
from support import require_peer
from support.pebble import PebbleServer
from support.servers import free_port

__all__ = ["AriFront"]

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade"}


def _rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64json(text: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


class AriFront:
    """Pebble behind an HTTPS front that offers renewal information (see the module's words)."""

    def __init__(self, workdir: Path, pebble: PebbleServer, *, host: str = "127.0.0.1") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.pebble = pebble
        self.host = host
        self.port = free_port(host)
        root = TestCA.root("ARI Front Test Root")
        leaf = root.leaf("localhost", host)
        self.cert, self.key = workdir / "front.crt", workdir / "front.key"
        self.cert.write_bytes(leaf.cert_pem() + leaf.chain_pem())
        self.key.write_bytes(leaf.key_pem())
        self.key.chmod(0o600)
        self.ca_bundle = workdir / "front-root.pem"
        self.ca_bundle.write_bytes(root.cert_pem())
        self.offer_ari = True
        self.window: tuple[dt.datetime, dt.datetime] | None = None  # for every certificate
        self.windows: dict[str, tuple[dt.datetime, dt.datetime]] = {}  # by CertID
        self.explanation: str | None = None
        self.retry_after = 3600
        self.orders: list[dict[str, Any]] = []  # payloads of new orders, in order
        self.asked: list[str] = []  # CertIDs asked for renewal information
        self.already_replaced: set[str] = set()  # orders naming these in ``replaces`` are refused
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._upstream = ssl.create_default_context(cafile=str(pebble.ca_bundle))

    @property
    def directory(self) -> str:
        return f"https://{self.host}:{self.port}/dir"

    # -- running --------------------------------------------------------------------------------

    def up(self) -> Self:
        require_peer("an ACME front")
        if self._server is not None:
            return self
        front = self

        class Handler(_Handler):
            owner = front

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="ari-front", daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        """Stop answering: new connections are refused until :meth:`up`."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    # -- what the front answers ---------------------------------------------------------------------

    def renewal_info(self, cert_id: str) -> tuple[int, dict[str, str], bytes]:
        self.asked.append(cert_id)
        window = self.windows.get(cert_id) or self.window
        if window is None:
            problem = {"type": "urn:ietf:params:acme:error:malformed", "detail": "no such certificate"}
            return 404, {"Content-Type": "application/problem+json"}, json.dumps(problem).encode()
        body: dict[str, Any] = {"suggestedWindow": {"start": _rfc3339(window[0]), "end": _rfc3339(window[1])}}
        if self.explanation:
            body["explanationURL"] = self.explanation
        headers = {"Content-Type": "application/json", "Retry-After": str(self.retry_after)}
        return 200, headers, json.dumps(body).encode()

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPSConnection(self.pebble.host, self.pebble.port, context=self._upstream, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.getheaders(), answer.read()
        finally:
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    owner: AriFront
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _pass(self) -> None:
        front = self.owner
        body = self._body()
        path = self.path
        if self.command == "GET" and path.startswith("/renewal-info/") and front.offer_ari:
            status, headers, data = front.renewal_info(path.removeprefix("/renewal-info/"))
            self._answer(status, list(headers.items()), data)
            return
        if self.command == "POST" and path.rstrip("/").endswith("/order-plz") and body:
            order = _b64json(json.loads(body)["payload"])
            front.orders.append(order)
            if order.get("replaces") in front.already_replaced:
                self._refuse(409, "alreadyReplaced", "the certificate was replaced already")
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        status, answer_headers, data = front.forward(self.command, path, headers, body)
        if self.command == "GET" and path == "/dir" and status == 200 and front.offer_ari:
            directory = json.loads(data)
            directory["renewalInfo"] = f"https://{self.headers['Host']}/renewal-info"
            data = json.dumps(directory).encode()
        self._answer(status, answer_headers, data)

    def _refuse(self, status: int, code: str, detail: str) -> None:
        # a fresh nonce from Pebble, as every ACME answer carries one
        _, headers, _ = self.owner.forward("HEAD", "/nonce-plz", {"Host": self.headers["Host"]}, None)
        nonce = [(k, v) for k, v in headers if k.lower() == "replay-nonce"]
        problem = json.dumps({"type": f"urn:ietf:params:acme:error:{code}", "detail": detail, "status": status})
        self._answer(status, [("Content-Type", "application/problem+json"), *nonce], problem.encode())

    do_GET = do_POST = do_HEAD = _pass
