"""The console holds under abuse from the same machine: slow or half-open connections and a process
out of file descriptors do not stop its administrator, and do not flood its log."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from support.console import Served, serve

NOFILE = 256  # far below the connections held, as in the reproduction
HELD = 300


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the bootstrap certificate: trust is not what is tested here
    return ctx


def _get(served: Served, path: str, timeout: float) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", served.port, context=_tls(), timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@contextmanager
def _held(sockets: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield sockets
    finally:
        for sock in sockets:
            with suppress(OSError):
                sock.close()


def _half_headers(served: Served, count: int) -> list[socket.socket]:
    """TLS connections that each sent half a request's headers, and nothing more."""
    ctx = _tls()
    out = []
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        try:
            tls = ctx.wrap_socket(raw, server_hostname="localhost")
            tls.sendall(b"GET /login HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        except OSError:  # the server let go of it already
            raw.close()
            continue
        out.append(tls)
    return out


@pytest.mark.peer
def test_a_legitimate_request_answers_while_hundreds_of_half_open_connections_are_held(tmp_path: Path) -> None:
    with serve(tmp_path / "home", nofile=NOFILE) as served, _held(_half_headers(served, HELD)) as held:
        assert len(held) > NOFILE // 2  # the attack reached the server
        started = time.monotonic()
        assert _get(served, "/login", timeout=20) == 200
        elapsed = time.monotonic() - started
        assert served.proc.poll() is None
        log = served.err()
    assert len(log) < 20_000, log[-3000:]
    assert "Traceback" not in log
    print(f"answered in {elapsed:.2f} s with {len(held)} half-open connections held")


@pytest.mark.peer
def test_running_out_of_descriptors_is_said_once_and_passes(tmp_path: Path) -> None:
    with serve(tmp_path / "home", nofile=NOFILE) as served:
        # plain TCP connections that never start TLS: each holds a descriptor until its handshake
        # times out, and there are more of them than the process may open
        raw = []
        for _ in range(HELD):
            with suppress(OSError):
                raw.append(socket.create_connection(("127.0.0.1", served.port), timeout=5))
        with _held(raw):
            time.sleep(3)
            log = served.err()
            assert _get(served, "/login", timeout=60) == 200
        assert _get(served, "/login", timeout=30) == 200
        log = served.err()
    assert log.count("out of file descriptors") <= 2, log[-3000:]
    assert "Traceback" not in log and "socket.accept() out of system resource" not in log
    assert len(log) < 20_000, log[-3000:]
