"""Pebble, Let's Encrypt's ACME test server, on loopback; and nginx nodes that serve a webroot for
http-01 beside their TLS site.

:class:`PebbleServer` writes its own configuration in the test's folder (every port free and on
loopback, an HTTPS certificate made by a test CA whose root is :attr:`PebbleServer.ca_bundle`),
runs with ``PEBBLE_VA_NOSLEEP=1`` and asks the DNS server it is given (``-dnsserver``), so that
names resolve to the loopback address of the node that serves them. Pebble's own issuing root
changes at every start: :meth:`PebbleServer.root_pem` fetches it from the management port.

    with PebbleServer(tmp_path / "pebble", http_port=port, dns=bind.address) as pebble:
        ... pebble.directory, pebble.ca_bundle, pebble.root_pem() ...
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from certfleet.testing import TestCA
from support.bind import BindServer
from support.servers import NginxServer, Server, free_port

__all__ = [
    "EAB_KEYS",
    "GW_IP",
    "MAIN_IP",
    "PebbleServer",
    "WebrootNginx",
    "acme_env",
    "add_issuer",
    "bind",
    "expect",
    "http_port",
    "pebble",
    "pebble_binary",
    "snakeoil",
]

# key id -> HMAC key (base64url), as a commercial CA shows them on its account page
EAB_KEYS = {
    "kid-certfleet": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
    "kid-other": "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH",
}
VALIDITY = 90 * 24 * 3600  # what a public CA issues today, not Pebble's five-year default
# the test zone acme.test: the apex and www at MAIN_IP (node main), gw and mbg at GW_IP (node gw);
# each node's nginx answers http-01 on its own address, on the port Pebble validates on, so a
# token Pebble can fetch is a token that landed on the node serving the name
ZONE = "acme.test"
MAIN_IP, GW_IP = "127.0.0.2", "127.0.0.3"
RECORDS = (
    f"@ IN A {MAIN_IP}",
    f"www IN A {MAIN_IP}",
    f"main IN A {MAIN_IP}",
    f"gw IN A {GW_IP}",
    f"mbg IN A {GW_IP}",
)


def pebble_binary() -> str:
    found = shutil.which("pebble")
    if found is None:
        raise RuntimeError("pebble is not installed: apt-get install pebble (the ACME tests need the real server)")
    return found


class PebbleServer(Server):
    """Pebble on ``host``: the ACME API on :attr:`port`, the management API on
    :attr:`management_port`; http-01 is checked on ``http_port`` of the address a name resolves to."""

    name = "pebble"

    def __init__(
        self,
        workdir: Path,
        *,
        http_port: int | None = None,
        dns: str | None = None,
        eab: Mapping[str, str] | None = None,
        nonce_reject: int = 0,
        alternate_roots: int = 0,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        validity: int = VALIDITY,
    ) -> None:
        super().__init__(workdir, host=host)
        self.management_port = free_port(host)
        self.http_port = http_port or free_port(host)
        self.dns = dns
        self.addresses = [(host, self.port), (host, self.management_port)]
        api_root = TestCA.root("Pebble API Test Root")
        leaf = api_root.leaf("localhost", host)
        (workdir / "api.crt").write_bytes(leaf.cert_pem())
        (workdir / "api.key").write_bytes(leaf.key_pem())
        (workdir / "api.key").chmod(0o600)
        self.ca_bundle = workdir / "api-root.pem"
        self.ca_bundle.write_bytes(api_root.cert_pem())
        config = {
            "pebble": {
                "listenAddress": f"{host}:{self.port}",
                "managementListenAddress": f"{host}:{self.management_port}",
                "certificate": str(workdir / "api.crt"),
                "privateKey": str(workdir / "api.key"),
                "httpPort": self.http_port,
                "tlsPort": free_port(host),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": eab is not None,
                "externalAccountMACKeys": dict(eab or {}),
                "certificateValidityPeriod": validity,  # seconds
            }
        }
        self.conf = workdir / "pebble-config.json"
        self.conf.write_text(json.dumps(config, indent=2))
        self.env = {
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": str(nonce_reject),
            "PEBBLE_AUTHZREUSE": "0",
            "PEBBLE_ALTERNATE_ROOTS": str(alternate_roots),
            **(env or {}),
        }

    def command(self) -> list[str]:
        # the environment travels through env(1): the launcher starts every server the same way
        argv = ["env", *(f"{k}={v}" for k, v in self.env.items()), pebble_binary(), "-config", str(self.conf)]
        return [*argv, "-dnsserver", self.dns] if self.dns else argv

    @property
    def directory(self) -> str:
        return f"https://{self.host}:{self.port}/dir"

    def _get(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(f"https://{self.host}:{self.management_port}{path}", context=context) as answer:
            data: bytes = answer.read()
            return data

    def root_pem(self, index: int = 0) -> bytes:
        """The root Pebble issues under (``index`` > 0: an alternate root), fetched from the management port."""
        return self._get(f"/roots/{index}")

    def cert_status(self, serial: int) -> dict[str, object]:
        """What Pebble says of a certificate it issued (``Status``: Valid or Revoked, ``Reason``)."""
        status: dict[str, object] = json.loads(self._get(f"/cert-status-by-serial/{serial:x}"))
        return status


class WebrootNginx(NginxServer):
    """nginx for one node: plain HTTP on ``http_host:http_port`` that publishes ``webroot`` under
    ``/.well-known/acme-challenge/`` (the snippet of docs/acme.md), and TLS on its own port that
    serves certfleet's ``live`` files once deployed (a placeholder until then)."""

    def __init__(
        self,
        workdir: Path,
        *,
        webroot: Path,
        http_host: str,
        http_port: int,
        live: Path,
        placeholder: tuple[Path, Path],
    ) -> None:
        super().__init__(workdir, cert=placeholder[0], key=placeholder[1])
        self.webroot = webroot
        self.http_host = http_host
        self.http_port = http_port
        self.live = live
        self.placeholder = placeholder
        webroot.mkdir(parents=True, exist_ok=True)
        block = (
            f"  server {{\n    listen {http_host}:{http_port};\n    server_name _;\n"
            f"    location ^~ /.well-known/acme-challenge/ {{\n      root {webroot};\n"
            "      default_type text/plain;\n    }\n    location / { return 404; }\n  }\n"
        )
        conf = self.conf.read_text()
        self.conf.write_text(conf.replace("default_type text/plain;\n", "default_type text/plain;\n" + block, 1))
        self.addresses.append((http_host, http_port))

    def point_at_live(self) -> None:
        """Name certfleet's live files in the configuration (not reloaded: the deploy reloads)."""
        cert, key = (str(p) for p in self.placeholder)
        conf = self.conf.read_text().replace(cert, str(self.live / "fullchain.pem"))
        self.conf.write_text(conf.replace(key, str(self.live / "privkey.pem")))


def snakeoil(folder: Path) -> tuple[Path, Path]:
    """A self-signed placeholder certificate and key, as a server has before its real one."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-subj", "/CN=placeholder", "-days", "2"],
            check=True, capture_output=True,
        )  # fmt: skip
    return cert, key


def expect(result: Any, code: int = 0) -> Any:
    """``result`` (of the ``cli`` fixture), once its exit code is ``code``; its output otherwise."""
    assert result.code == code, f"exit {result.code}\n{result.out}\n{result.err}"
    return result


def add_issuer(cli: Any, pebble: PebbleServer, name: str = "pebble", *extra: str | Path) -> dict[str, Any]:
    """``certfleet issuer add NAME --acme`` Pebble, as a user would; its JSON."""
    args = ["issuer", "add", name, "--acme", pebble.directory, "--ca-bundle", pebble.ca_bundle, "--agree-tos"]
    out: dict[str, Any] = expect(cli(*args, "--contact", "mailto:pki@acme.test", *extra, "--json")).json()
    return out


# fixtures for the ACME tests: import them into the test module that uses them


@pytest.fixture(scope="module")
def bind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BindServer]:
    """BIND serving the test zone, for a test module."""
    with BindServer(tmp_path_factory.mktemp("bind"), zone=ZONE, records=RECORDS) as server:
        yield server


@pytest.fixture(scope="module")
def http_port() -> int:
    """The port Pebble fetches http-01 tokens on (free on the node addresses)."""
    return free_port(MAIN_IP)


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory, bind: BindServer, http_port: int) -> Iterator[PebbleServer]:
    """Pebble asking BIND, for a test module."""
    with PebbleServer(tmp_path_factory.mktemp("pebble"), http_port=http_port, dns=bind.address) as server:
        yield server


@pytest.fixture
def acme_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bind: BindServer, http_port: int) -> dict[str, str]:
    """A fresh store, and certfleet asking the test DNS and probing http-01 on Pebble's port."""
    env = {**bind.env(), "CERTFLEET_ACME_HTTP_PORT": str(http_port), "CERTFLEET_HOME": str(tmp_path / "store")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
