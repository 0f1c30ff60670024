"""AIA fetching over a real HTTP server on 127.0.0.1: formats, size cap, redirects, timeouts."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from certfleet.aia import HttpFetcher, ca_issuers_urls, fetch_issuers, parse_issuers
from certfleet.errors import NetworkError
from conftest import PKI

Route = Callable[[BaseHTTPRequestHandler], None]


def body(data: bytes, content_type: str = "application/pkix-cert") -> Route:
    def send(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return send


def redirect(location: str) -> Route:
    def send(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return send


def status(code: int) -> Route:
    def send(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return send


def unsized(data: bytes) -> Route:
    """A body without Content-Length, ended by closing the connection."""

    def send(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(data)
        handler.close_connection = True

    return send


@dataclass
class Server:
    """A tiny HTTP server on a free loopback port; ``routes`` maps a path to what it answers."""

    routes: dict[str, Route] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up on an oversize or trickling answer is what those tests do


@contextlib.contextmanager
def running_server() -> Iterator[Server]:
    """Serve ``Server.routes`` from a thread until the block ends."""
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            route = state.routes.get(self.path)
            if route is None:
                status(404)(self)
            else:
                route(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = _QuietServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    with running_server() as state:
        yield state


def _der(pki: PKI) -> bytes:
    return pki.inter.cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    "encoding",
    ["der", "pem", "pkcs7-der", "pkcs7-pem"],
)
def test_fetch_each_format(server: Server, pki: PKI, encoding: str) -> None:
    data = {
        "der": _der(pki),
        "pem": pki.inter.cert_pem(),
        "pkcs7-der": pkcs7.serialize_certificates([pki.inter.cert], serialization.Encoding.DER),
        "pkcs7-pem": pkcs7.serialize_certificates([pki.inter.cert], serialization.Encoding.PEM),
    }[encoding]
    server.routes["/inter"] = body(data)
    fetched = HttpFetcher(timeout=5)(server.url("/inter"))
    assert fetched == data
    assert parse_issuers(fetched) == [pki.inter.cert]


def test_an_answer_of_an_unknown_version_gives_no_issuer(pki: PKI) -> None:
    # cryptography refuses it with its own exception, not a ValueError: an answer, not a crash
    der = bytearray(_der(pki))
    der[der.index(b"\xa0\x03\x02\x01\x02") + 4] = 33
    assert parse_issuers(bytes(der)) == []


def test_fetch_issuers_follows_the_leaf_aia(server: Server, pki: PKI) -> None:
    server.routes["/ca/inter.p7c"] = body(
        pkcs7.serialize_certificates([pki.inter.cert, pki.root.cert], serialization.Encoding.DER)
    )
    leaf = pki.inter.leaf("www.example.test", aia_url=server.url("/ca/inter.p7c"))
    assert ca_issuers_urls(leaf.cert) == [server.url("/ca/inter.p7c")]
    fetched = fetch_issuers(leaf.cert, HttpFetcher(timeout=5))
    assert sorted(c.subject.rfc4514_string() for c in fetched) == sorted(
        c.subject.rfc4514_string() for c in (pki.inter.cert, pki.root.cert)
    )


def test_fetch_issuers_without_aia(pki: PKI) -> None:
    def never(url: str) -> bytes:
        raise AssertionError(f"fetched {url}")

    assert fetch_issuers(pki.leaf.cert, never) == []


@pytest.mark.parametrize("url", ["http://ca.example.test/inter\n.crt", "http://ca.example.test/a b.crt"])
def test_a_url_with_spaces_or_control_characters_is_not_followed(pki: PKI, url: str) -> None:
    leaf = pki.inter.leaf("www.example.test", aia_url=url)
    assert ca_issuers_urls(leaf.cert) == []


def test_fetch_issuers_skips_ldap(pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", aia_url="ldap://ldap.example.test/cn=CA?cACertificate")
    seen: list[str] = []

    def record(url: str) -> bytes:
        seen.append(url)
        return b""

    assert fetch_issuers(leaf.cert, record) == []
    assert seen == []


def test_fetch_issuers_garbage_is_a_network_error(server: Server, pki: PKI) -> None:
    server.routes["/inter.crt"] = body(b"<html>not found</html>", "text/html")
    leaf = pki.inter.leaf("www.example.test", aia_url=server.url("/inter.crt"))
    with pytest.raises(NetworkError, match="not a certificate or PKCS#7") as caught:
        fetch_issuers(leaf.cert, HttpFetcher(timeout=5))
    assert caught.value.source == server.url("/inter.crt")


@pytest.mark.parametrize("route", [body, unsized])
def test_oversize_answer_is_refused(server: Server, route: Callable[[bytes], Route]) -> None:
    server.routes["/big"] = route(b"0" * 5000)
    with pytest.raises(NetworkError, match="larger than 4096 bytes") as caught:
        HttpFetcher(timeout=5, max_bytes=4096)(server.url("/big"))
    assert str(caught.value).startswith(server.url("/big"))


def test_answer_of_exactly_max_bytes_is_read(server: Server) -> None:
    server.routes["/edge"] = unsized(b"1" * 4096)
    assert HttpFetcher(timeout=5, max_bytes=4096)(server.url("/edge")) == b"1" * 4096


def test_redirect_to_file_is_refused(server: Server) -> None:
    server.routes["/inter.crt"] = redirect("file:///etc/passwd")
    with pytest.raises(NetworkError, match="refused a redirect to file:///etc/passwd"):
        HttpFetcher(timeout=5)(server.url("/inter.crt"))


def test_redirect_to_ftp_is_refused(server: Server) -> None:
    server.routes["/inter.crt"] = redirect("ftp://127.0.0.1/inter.crt")
    with pytest.raises(NetworkError, match="refused a redirect to ftp:"):
        HttpFetcher(timeout=5)(server.url("/inter.crt"))


def test_same_scheme_redirects_are_followed(server: Server, pki: PKI) -> None:
    server.routes["/a"] = redirect("/b")
    server.routes["/b"] = redirect(server.url("/c"))
    server.routes["/c"] = body(_der(pki))
    assert HttpFetcher(timeout=5)(server.url("/a")) == _der(pki)


def test_more_than_three_redirects_are_refused(server: Server, pki: PKI) -> None:
    for hop in range(4):
        server.routes[f"/r{hop}"] = redirect(f"/r{hop + 1}")
    server.routes["/r4"] = body(_der(pki))
    with pytest.raises(NetworkError, match="too many redirects"):
        HttpFetcher(timeout=5)(server.url("/r0"))
    assert HttpFetcher(timeout=5)(server.url("/r1")) == _der(pki)  # three hops are fine


def test_http_error_is_a_network_error(server: Server) -> None:
    with pytest.raises(NetworkError, match="HTTP 404"):
        HttpFetcher(timeout=5)(server.url("/missing"))


def test_slow_server_hits_the_timeout(server: Server, pki: PKI) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        server.stop.wait(5)  # answers only once the test is over
        body(_der(pki))(handler)

    server.routes["/slow"] = slow
    with pytest.raises(NetworkError, match=r"timed out after 0\.3 s"):
        HttpFetcher(timeout=0.3)(server.url("/slow"))


def test_trickling_server_hits_the_deadline(server: Server) -> None:
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Connection", "close")
        handler.end_headers()
        # one byte at a time, each well within the per-read timeout, for longer than the deadline
        while not server.stop.is_set():
            handler.wfile.write(b"0")
            handler.wfile.flush()
            time.sleep(0.05)

    server.routes["/trickle"] = trickle
    with pytest.raises(NetworkError, match="timed out"):
        HttpFetcher(timeout=0.5)(server.url("/trickle"))


def test_unreachable_is_a_network_error() -> None:
    # a port that was free a moment ago: nothing listens there
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(NetworkError, match="could not fetch"):
        HttpFetcher(timeout=5)(f"http://127.0.0.1:{port}/inter.crt")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.crt", "data:,x", "ldap://h/x"])
def test_only_http_urls_are_fetched(url: str) -> None:
    with pytest.raises(NetworkError, match="only http and https"):
        HttpFetcher()(url)


@pytest.mark.parametrize(("timeout", "max_bytes"), [(0, 10), (1, 0), (-1, 10)])
def test_bad_limits_are_programmer_errors(timeout: float, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        HttpFetcher(timeout=timeout, max_bytes=max_bytes)
