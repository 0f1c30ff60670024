"""``certfleet watch``: rounds of checks exposed as Prometheus metrics, scraped over HTTP on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from certfleet.endpoint import Endpoint, parse_endpoint
from certfleet.errors import InputError
from certfleet.metrics import CheckMetrics, MetricsServer, parse_listen
from certfleet.trust import TrustStore
from certfleet.watch import Watcher
from support.tls import Faults, Nginx, faults, free_port, has_ipv6_loopback, nginx, roots

pytestmark = pytest.mark.peer
__all__ = ["faults", "nginx", "roots"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: Samples, metric: str, **labels: str) -> float | None:
    for (sample, found), value in samples.items():
        if sample == metric and all(pair in found for pair in labels.items()):
            return value
    return None


def test_once_prints_the_metrics(cli: Any, nginx: Nginx, roots: Path) -> None:
    good, expired = nginx.target("good"), nginx.target("expired")
    closed = f"127.0.0.1:{free_port()}"
    result = cli("watch", "--once", "--trust-only", roots, "--name", "www.example.test", good, expired, closed)
    assert result.code == 1  # the expired and the closed endpoints fail
    samples = _samples(result.out)
    assert _value(samples, "certfleet_endpoint_probe_success", target=good) == 1.0
    assert _value(samples, "certfleet_endpoint_probe_success", target=closed) == 0.0
    assert _value(samples, "certfleet_endpoint_chain_valid", target=good) == 1.0
    assert _value(samples, "certfleet_endpoint_chain_valid", target=expired) == 0.0
    assert _value(samples, "certfleet_endpoint_problems", target=expired, code="expired") == 1.0
    assert _value(samples, "certfleet_endpoint_problems", target=closed, code="unreachable") == 1.0
    assert _value(samples, "certfleet_endpoint_problems", target=good) is None
    left = _value(samples, "certfleet_endpoint_cert_expiry_seconds", target=good)
    assert left is not None
    assert 88 * 86400 < left <= 90 * 86400
    stamp = _value(samples, "certfleet_endpoint_cert_expiry_timestamp_seconds", target=good)
    assert stamp is not None
    assert stamp > time.time() + 88 * 86400
    assert (_value(samples, "certfleet_endpoint_cert_expiry_seconds", target=expired) or 0) < 0
    assert _value(samples, "certfleet_endpoint_cert_expiry_seconds", target=closed) is None
    assert _value(samples, "certfleet_endpoint_tls_info", target=good, tls_version="TLSv1.3") == 1.0
    assert _value(samples, "certfleet_check_endpoints", state="failing") == 2.0
    assert _value(samples, "certfleet_check_endpoints", state="ok") == 1.0
    assert _value(samples, "certfleet_check_runs_total") == 1.0
    duration = _value(samples, "certfleet_check_duration_seconds")
    assert duration is not None
    assert duration > 0


def test_once_serves_metrics_that_a_scrape_reads(nginx: Nginx, roots: Path) -> None:
    good = nginx.target("good")
    command = [sys.executable, "-m", "certfleet", "watch", "--once", "--listen", "127.0.0.1:0", "--interval", "60"]
    command += ["--trust-only", str(roots), "--name", "www.example.test", good]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert "serving metrics on http://127.0.0.1:" in first, first
        url = first.split("serving metrics on ", 1)[1].strip()
        body = ""
        deadline = time.monotonic() + 60
        while "certfleet_endpoint_probe_success{" not in body:
            assert time.monotonic() < deadline, body
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
                body = response.read().decode()
            time.sleep(0.05)
        # the scrape that saw the round is what --once waits for: the process ends by itself
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0
    samples = _samples(body)
    assert _value(samples, "certfleet_endpoint_probe_success", target=good, name="www.example.test") == 1.0
    assert _value(samples, "certfleet_endpoint_chain_valid", target=good) == 1.0
    assert _value(samples, "certfleet_check_runs_total") == 1.0
    assert any(name.startswith("process_") for name, _ in samples)


async def test_rounds_replace_the_series(nginx: Nginx, faults: Faults) -> None:
    registry = CollectorRegistry()
    current: list[Endpoint] = [
        parse_endpoint(nginx.target("good"), name="www.example.test", label="web1"),
        parse_endpoint(nginx.target("incomplete"), name="www.example.test", label="web2"),
    ]
    rounds: list[int] = []
    watcher = Watcher(
        lambda: list(current),
        TrustStore.from_pem(faults.roots_pem),
        CheckMetrics(registry),
        interval=1,
        on_round=lambda report: rounds.append(len(report.endpoints)),
    )
    await watcher.round()
    first = _samples(generate_latest(registry).decode())
    assert _value(first, "certfleet_endpoint_problems", node="web2", code="incomplete-chain") == 1.0
    # web2 is fixed (it leaves the list): its series go at once, none lingers
    current.pop()
    last = await watcher.run(rounds=2)
    assert last is not None
    assert rounds == [2, 1, 1]
    second = _samples(generate_latest(registry).decode())
    assert _value(second, "certfleet_endpoint_problems", node="web2") is None
    assert _value(second, "certfleet_endpoint_probe_success", node="web2") is None
    assert _value(second, "certfleet_endpoint_probe_success", node="web1") == 1.0
    assert _value(second, "certfleet_check_runs_total") == 3.0


async def test_a_failed_round_is_reported_and_the_next_one_runs(nginx: Nginx, faults: Faults) -> None:
    calls: list[int] = []
    errors: list[str] = []

    def targets() -> list[Endpoint]:
        calls.append(1)
        if len(calls) == 1:
            raise InputError("the target list cannot be read")
        return [parse_endpoint(nginx.target("good"), name="www.example.test")]

    metrics = CheckMetrics(CollectorRegistry())
    watcher = Watcher(
        targets, TrustStore.from_pem(faults.roots_pem), metrics, interval=1, on_error=lambda e: errors.append(str(e))
    )
    last = await watcher.run(rounds=2)
    assert errors == ["the target list cannot be read"]
    assert last is not None
    assert last.endpoints[0].ok
    assert metrics.has_report


def test_interval_below_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError):
        Watcher([], TrustStore(certs=()), CheckMetrics(), interval=0.1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9109", ("127.0.0.1", 9109)), ("[::1]:0", ("::1", 0)), ("localhost:80", ("localhost", 80))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9109", "127.0.0.1", "::1:9109", "[::1]9109", "host:port", "127.0.0.1:70000", ""])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(InputError):
        parse_listen(text)


def test_metrics_server_on_ipv6_loopback() -> None:
    if not has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback address (::1 cannot be bound)")
    registry = CollectorRegistry()
    server = MetricsServer("[::1]:0", registry, CheckMetrics(registry))
    try:
        assert server.url.startswith("http://[::1]:")
        with urllib.request.urlopen(server.url, timeout=10) as response:
            body = response.read().decode()
    finally:
        server.close()
    assert "certfleet_check_runs_total 0.0" in body
    assert not server.served_report.is_set()  # no round yet: nothing worth waiting for was served


def test_listen_on_a_busy_port_is_an_environment_error(cli: Any) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = cli("watch", "--once", "--listen", f"127.0.0.1:{port}", "127.0.0.1:1")
    assert result.code == 3
    assert "cannot listen" in result.err
