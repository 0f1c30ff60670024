"""The TLS probe against real servers on loopback: nginx, and small STARTTLS/implicit-TLS servers."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from certfleet.probe import CertCache, StartTLS, default_starttls, format_target, probe
from certfleet.problems import ProblemCode, Severity
from certfleet.testing import TestCA as CA
from certfleet.testing import pem
from support.tls import (
    Mode,
    Nginx,
    Site,
    free_port,
    has_ipv6_loopback,
    run_nginx,
    serve_tls,
    silent_port,
    write_pair,
)

pytestmark = pytest.mark.peer


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA.root("probe Root").intermediate("probe Intermediate")


@pytest.fixture(scope="module")
def nginx(ca: CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    leaf = ca.leaf("www.example.test")
    root = ca.parent
    assert root is not None
    sites = [
        Site("good", leaf.fullchain_pem(), leaf.key_pem()),
        Site("leaf-only", leaf.cert_pem(), leaf.key_pem()),
        Site("leaf-root-inter", pem(leaf.cert, root.cert, ca.cert), leaf.key_pem()),
        Site("tls12", leaf.fullchain_pem(), leaf.key_pem(), protocols="TLSv1.2"),
    ]
    if has_ipv6_loopback():
        sites.append(Site("v6", leaf.fullchain_pem(), leaf.key_pem(), host="::1"))
    with run_nginx(tmp_path_factory.mktemp("nginx"), sites) as server:
        yield server


@pytest.fixture(scope="module")
def pair(ca: CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, x509.Certificate]:
    leaf = ca.leaf("mail.example.test")
    cert, key = write_pair(tmp_path_factory.mktemp("pair"), "mail", leaf.fullchain_pem(), leaf.key_pem())
    return cert, key, leaf.cert


async def test_good_chain_as_sent(nginx: Nginx, ca: CA) -> None:
    result = await probe("127.0.0.1", nginx.ports["good"], server_name="www.example.test")
    assert result.ok
    assert result.problems == ()
    assert [c.subject for c in result.chain] == [
        x509.Name.from_rfc4514_string("CN=www.example.test"),
        ca.cert.subject,
    ]
    assert result.tls_version in {"TLSv1.2", "TLSv1.3"}
    assert result.cipher
    assert result.server_name == "www.example.test"
    assert result.target == f"127.0.0.1:{nginx.ports['good']}"
    assert result.elapsed > 0
    assert len(result.chain_der) == 2


@pytest.mark.parametrize(
    ("site", "expected"),
    [("leaf-only", ["leaf"]), ("leaf-root-inter", ["leaf", "root", "inter"]), ("good", ["leaf", "inter"])],
)
async def test_chain_keeps_the_order_sent(nginx: Nginx, ca: CA, site: str, expected: list[str]) -> None:
    root = ca.parent
    assert root is not None
    subjects = {"inter": ca.cert.subject, "root": root.cert.subject}
    result = await probe("127.0.0.1", nginx.ports[site], server_name="www.example.test")
    assert result.ok
    got = ["leaf" if c.subject == result.chain[0].subject else c.subject for c in result.chain]
    assert got == [e if e == "leaf" else subjects[e] for e in expected]


async def test_cache_shares_parsed_intermediates(nginx: Nginx) -> None:
    cache = CertCache()
    first = await probe("127.0.0.1", nginx.ports["good"], certs=cache)
    second = await probe("127.0.0.1", nginx.ports["leaf-root-inter"], certs=cache)
    assert first.chain[1] is second.chain[2]
    assert first.chain[0] is second.chain[0]
    assert len(cache) == 3


async def test_ipv6_loopback(nginx: Nginx) -> None:
    if "v6" not in nginx.ports:
        pytest.skip("this machine has no IPv6 loopback address (::1 cannot be bound)")
    result = await probe("::1", nginx.ports["v6"], server_name="www.example.test")
    assert result.ok, result.problems
    assert result.target == f"[::1]:{nginx.ports['v6']}"
    assert len(result.chain) == 2


async def test_closed_port_is_unreachable() -> None:
    result = await probe("127.0.0.1", free_port(), timeout=5)
    assert not result.ok
    assert [p.code for p in result.problems] == [ProblemCode.UNREACHABLE]
    assert result.problems[0].severity is Severity.ERROR
    assert result.chain == ()


async def test_silent_port_times_out_and_is_reported() -> None:
    with silent_port() as port:
        result = await probe("127.0.0.1", port, timeout=0.5)
    assert not result.ok
    assert [p.code for p in result.problems] == [ProblemCode.TIMEOUT]
    assert "TLS handshake" in result.problems[0].message


@pytest.mark.parametrize(("mode", "starttls"), [(Mode.SMTP, StartTLS.SMTP), (Mode.IMAP, StartTLS.IMAP)])
async def test_starttls_upgrades(pair: tuple[Path, Path, x509.Certificate], mode: Mode, starttls: StartTLS) -> None:
    cert_file, key_file, leaf = pair
    with serve_tls(mode, cert_file, key_file) as server:
        result = await probe(server.host, server.port, server_name="mail.example.test", starttls=starttls)
    assert result.ok, result.problems
    assert result.starttls is starttls
    assert result.chain[0] == leaf
    assert len(result.chain) == 2
    assert server.server_names == ["mail.example.test"]


@pytest.mark.parametrize("port_name", ["ldaps", "sips"])
async def test_implicit_tls_ports(pair: tuple[Path, Path, x509.Certificate], port_name: str) -> None:
    # LDAPS and SIP over TLS speak TLS from the first byte, like HTTPS
    cert_file, key_file, leaf = pair
    with serve_tls(Mode.TLS, cert_file, key_file) as server:
        result = await probe(server.host, server.port, server_name="mail.example.test", starttls=StartTLS.NONE)
    assert result.ok, result.problems
    assert result.chain[0] == leaf
    assert default_starttls({"ldaps": 636, "sips": 5061}[port_name]) is StartTLS.NONE


@pytest.mark.parametrize(
    ("port", "expected"),
    [(25, StartTLS.SMTP), (587, StartTLS.SMTP), (143, StartTLS.IMAP), (465, StartTLS.NONE), (993, StartTLS.NONE),
     (636, StartTLS.NONE), (5061, StartTLS.NONE), (443, StartTLS.NONE)],
)  # fmt: skip
def test_default_starttls_by_port(port: int, expected: StartTLS) -> None:
    assert default_starttls(port) is expected


@pytest.mark.parametrize(
    ("mode", "starttls", "words"),
    [
        (Mode.SMTP_NO_STARTTLS, StartTLS.SMTP, "refused STARTTLS"),
        (Mode.SMTP, StartTLS.IMAP, "not an IMAP server"),
        (Mode.IMAP, StartTLS.SMTP, "not an SMTP server"),
        (Mode.PLAIN, StartTLS.NONE, "did not answer in TLS"),
        (Mode.FLOOD, StartTLS.SMTP, "longer than"),
    ],
)
async def test_failed_upgrade_is_a_handshake_failure(
    pair: tuple[Path, Path, x509.Certificate], mode: Mode, starttls: StartTLS, words: str
) -> None:
    cert_file, key_file, _ = pair
    with serve_tls(mode, cert_file, key_file) as server:
        result = await probe(server.host, server.port, starttls=starttls, timeout=5)
    assert not result.ok
    assert [p.code for p in result.problems] == [ProblemCode.HANDSHAKE_FAILED]
    assert words in result.problems[0].message
    assert result.problems[0].hint


async def test_sni_defaults_to_the_host_name_and_is_absent_for_an_ip(
    pair: tuple[Path, Path, x509.Certificate],
) -> None:
    cert_file, key_file, _ = pair
    with serve_tls(Mode.TLS, cert_file, key_file) as server:
        by_ip = await probe("127.0.0.1", server.port, starttls=StartTLS.NONE)
        by_name = await probe("localhost", server.port, starttls=StartTLS.NONE)
        without = await probe("localhost", server.port, starttls=StartTLS.NONE, server_name="")
    assert by_ip.ok
    assert by_ip.server_name is None
    assert by_name.server_name == "localhost"
    assert without.ok
    assert without.server_name is None
    assert server.server_names == [None, "localhost", None]


@pytest.mark.parametrize(("minimum", "ok"), [(ssl.TLSVersion.TLSv1_2, True), (ssl.TLSVersion.TLSv1_3, False)])
async def test_minimum_tls_version_is_honoured(
    pair: tuple[Path, Path, x509.Certificate], minimum: ssl.TLSVersion, ok: bool
) -> None:
    cert_file, key_file, _ = pair
    with serve_tls(Mode.TLS, cert_file, key_file, maximum=ssl.TLSVersion.TLSv1_2) as server:
        result = await probe(server.host, server.port, starttls=StartTLS.NONE, minimum_version=minimum)
    assert result.ok is ok
    if ok:
        assert result.tls_version == "TLSv1.2"
    else:
        assert [p.code for p in result.problems] == [ProblemCode.HANDSHAKE_FAILED]
        assert "handshake" in result.problems[0].message


@pytest.mark.parametrize(("minimum", "ok"), [(ssl.TLSVersion.TLSv1_2, True), (ssl.TLSVersion.TLSv1_3, False)])
async def test_nginx_refusing_the_tls_version(nginx: Nginx, minimum: ssl.TLSVersion, ok: bool) -> None:
    result = await probe("127.0.0.1", nginx.ports["tls12"], minimum_version=minimum)
    assert result.ok is ok
    if not ok:
        assert [p.code for p in result.problems] == [ProblemCode.HANDSHAKE_FAILED]
        assert "TLS version" in result.problems[0].message


def test_result_serializes(pair: tuple[Path, Path, x509.Certificate]) -> None:
    import asyncio

    cert_file, key_file, _ = pair
    with serve_tls(Mode.TLS, cert_file, key_file) as server:
        result = asyncio.run(probe(server.host, server.port, starttls=StartTLS.NONE))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["ok"] is True
    assert data["chain"][0]["dns_names"] == ["mail.example.test"]
    assert data["starttls"] == "none"
    assert data["target"] == format_target(server.host, server.port)


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [("127.0.0.1", 443, "127.0.0.1:443"), ("::1", 8443, "[::1]:8443"), ("a.test", 25, "a.test:25")],
)
def test_format_target(host: str, port: int, text: str) -> None:
    assert format_target(host, port) == text


@pytest.mark.parametrize(("port", "timeout"), [(0, 5.0), (65536, 5.0), (443, 0.0)])
async def test_misuse_is_a_value_error(port: int, timeout: float) -> None:
    with pytest.raises(ValueError):
        await probe("127.0.0.1", port, timeout=timeout)
