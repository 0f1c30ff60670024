"""The console's own TLS, against `certfleet serve` as a real process: bootstrap, versions, SNI, reload."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from certfleet.certinfo import fingerprint
from certfleet.console.tls import bootstrap_certificate
from certfleet.store import Store
from certfleet.testing import TestCA
from support.console import serve
from support.servers import served_chain

pytestmark = pytest.mark.peer  # every test here starts a real server


def test_bootstrap_certificate_is_p256_for_localhost_host_and_loopback() -> None:
    now = dt.datetime.now(dt.UTC)
    key, cert = bootstrap_certificate(now=now, hostname="console.example.test")
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "console.example.test"]
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    cert.verify_directly_issued_by(cert)  # self-signed
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("fresh") / "home"
    with serve(home) as served:
        yield served


def test_fresh_home_serves_bootstrap_with_printed_fingerprint_and_setup_link(fresh) -> None:  # type: ignore[no-untyped-def]
    printed = fresh.fingerprint()
    assert printed, fresh.out()
    chain = served_chain(fresh.port, "localhost")
    assert fingerprint(chain[0]) == printed
    assert len(chain) == 1
    assert fresh.setup_url() is not None and "/setup/" in fresh.setup_url()
    # the store was made from nothing; the bootstrap key is sealed, 0600, never PEM in clear
    key_file = fresh.home / "console" / "bootstrap.key.sealed"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in key_file.read_bytes()
    assert (fresh.home / "certfleet.db").is_file()


@pytest.mark.parametrize(
    ("flag", "accepted"),
    [("-tls1", False), ("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)],
)
def test_only_tls12_and_tls13_are_spoken(fresh, flag: str, accepted: bool) -> None:  # type: ignore[no-untyped-def]
    # the openssl CLI as an independent client; security level 0 so that it really offers old versions
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{fresh.port}", "-servername", "localhost", flag,
         "-cipher", "DEFAULT@SECLEVEL=0"],
        input=b"", capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    text = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    handshake = "Cipher is (NONE)" not in text and "BEGIN CERTIFICATE" in text
    assert handshake is accepted, text[-2000:]


def test_bootstrap_certificate_survives_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with serve(home) as first:
        fp = first.fingerprint()
    with serve(home) as second:
        assert "using a self-signed bootstrap certificate" in second.out()
        assert second.fingerprint() == fp
        assert fingerprint(served_chain(second.port)[0]) == fp


def _issue(store: Store, inter: TestCA, lineage: str, *names: str) -> x509.Certificate:
    leaf = inter.leaf(*names)
    store.issue(lineage, leaf.cert, leaf.chain, key=leaf.key)
    return leaf.cert


def test_sni_picks_the_lineage_and_a_new_version_is_served_without_restart(tmp_path: Path) -> None:
    root = TestCA.root()
    inter = root.intermediate()
    home = tmp_path / "home"
    with Store.init(home) as store:
        gw = _issue(store, inter, "gw", "gw.example.test")
        web = _issue(store, inter, "web", "www.example.test", "*.apps.example.test")
    with serve(home, "--lineage", "web") as served:
        assert "serving lineage web" in served.out()
        by_sni = {
            name: fingerprint(served_chain(served.port, name)[0])
            for name in ("www.example.test", "x.apps.example.test", "gw.example.test", "other.example.test")
        }
        assert by_sni["www.example.test"] == fingerprint(web)
        assert by_sni["x.apps.example.test"] == fingerprint(web)
        assert by_sni["gw.example.test"] == fingerprint(gw)
        assert by_sni["other.example.test"] == fingerprint(web)  # --lineage web is the default
        # the address it printed (https://127.0.0.1:PORT, no SNI) and localhost, which no lineage
        # covers, keep the bootstrap certificate whose fingerprint it printed
        assert "a self-signed bootstrap certificate for localhost" in served.out()
        assert fingerprint(served_chain(served.port)[0]) == served.fingerprint()
        assert fingerprint(served_chain(served.port, "localhost")[0]) == served.fingerprint()
        # the chain is sent whole: leaf, then the intermediate
        assert [fingerprint(c) for c in served_chain(served.port, "www.example.test")[1:]] == [fingerprint(inter.cert)]

        with Store.open(home) as store:
            renewed = _issue(store, inter, "web", "www.example.test", "*.apps.example.test")
        seen = None
        for _ in range(100):  # the server checks the store at most twice a second
            seen = fingerprint(served_chain(served.port, "www.example.test")[0])
            if seen == fingerprint(renewed):
                break
            time.sleep(0.1)
        assert seen == fingerprint(renewed)
        assert fingerprint(served_chain(served.port, "gw.example.test")[0]) == fingerprint(gw)
        assert served.proc.poll() is None


def test_unknown_lineage_is_refused_with_exit_code_2(tmp_path: Path, cli_proc) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    Store.init(home).close()
    result = cli_proc("serve", "--port", "1", "--lineage", "nope", env={"CERTFLEET_HOME": str(home)})
    assert result.code == 2
    assert "no lineage named 'nope'" in result.err


def test_key_never_written_in_clear(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with serve(home) as served:
        served_chain(served.port)
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"PRIVATE KEY" not in data, path
    # the sealed key opens only with the store's vault
    with Store.open(home) as store:
        sealed = (home / "console" / "bootstrap.key.sealed").read_bytes()
        der = store.vault().open(sealed, b"certfleet/console-bootstrap/v1")
        key = serialization.load_der_private_key(der, None)
        cert = x509.load_pem_x509_certificate((home / "console" / "bootstrap.crt").read_bytes())
        assert key.public_key() == cert.public_key()
