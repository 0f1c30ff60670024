"""The smaller things a reader of real files meets: a chain judged at another time, refusals as JSON,
a PKCS#12 alias kept through convert, CT precertificates pointed out, keys named in words."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from certfleet.testing import TestCA
from conftest import PKI
from support.formats import openssl

# --- chain --at -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def old_chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("old")
    start = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)
    root = TestCA.root("Old Root", not_before=start, days=3650)
    inter = root.intermediate("Old Intermediate", not_before=start, days=3000)
    leaf = inter.leaf("old.example.test", not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC), days=90)
    bundle = folder / "old.pem"
    bundle.write_bytes(leaf.fullchain_pem())
    root_file = folder / "root.pem"
    root_file.write_bytes(root.cert_pem())
    return bundle, root_file


def test_chain_at_a_time_in_its_life(cli: Any, old_chain: tuple[Path, Path]) -> None:
    bundle, root = old_chain
    now = cli("chain", bundle, "--trust-only", root, "--no-fetch", "--json")
    assert now.code == 1
    assert "expired" in [p["code"] for p in now.json()["problems"]]

    then = cli("chain", bundle, "--trust-only", root, "--no-fetch", "--at", "2020-02-01", "--json")
    assert then.code == 0, then.out
    data = then.json()
    assert data["complete"] is True
    assert [p["code"] for p in data["problems"] if p["severity"] == "error"] == []

    human = cli("chain", bundle, "--trust-only", root, "--no-fetch", "--at", "2020-02-01")
    assert human.code == 0
    assert "59 days left" in human.out  # counted from --at, not from today


def test_chain_at_refuses_a_bad_time(cli: Any, old_chain: tuple[Path, Path]) -> None:
    bundle, root = old_chain
    result = cli("chain", bundle, "--trust-only", root, "--no-fetch", "--at", "yesterday")
    assert result.code == 2
    assert "--at 'yesterday' is not an ISO 8601 date" in result.err


# --- refusals as JSON ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["inspect"],
        ["chain", "--no-fetch"],
        ["verify"],
        ["match"],
        ["verify", "--each"],
    ],
    ids=" ".join,
)
def test_a_refusal_with_json_is_a_json_object(cli: Any, tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "random.crt"
    path.write_bytes(b"\x8f\x13 not a certificate at all")
    result = cli(*command, path, "--json")
    plain = cli(*command, path)
    assert result.code == plain.code == 2
    if command == ["verify", "--each"]:  # a batch reports the file in its own record, one per line
        record = json.loads(result.out.splitlines()[0])
        assert record["error"].startswith("not a certificate")
        return
    error = result.json()
    assert error["error"] == f"{path}: not a certificate, key, CSR, PKCS#7, PKCS#12 or zip"
    assert error["source"] == str(path)
    assert error["exit_code"] == 2
    assert error["hint"]
    assert result.err.splitlines()[0] == f"error: {path}: not a certificate, key, CSR, PKCS#7, PKCS#12 or zip"
    assert plain.out == ""  # without --json, stdout stays empty


def test_a_refusal_before_any_file_is_read(cli: Any, tmp_path: Path, pki: PKI) -> None:
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(pki.leaf.cert_pem())
    for args in (["verify", leaf], ["verify", "--each", leaf]):
        result = cli(*args, "--trust-only", tmp_path / "missing.pem", "--json")
        assert result.code == 2
        assert result.json()["error"] == f"{tmp_path / 'missing.pem'}: cannot read: No such file or directory"


def test_convert_with_json_prints_one_object(cli: Any, tmp_path: Path, pki: PKI) -> None:
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(pki.leaf.cert_pem())  # no intermediate: the chain is incomplete
    out = tmp_path / "out"
    result = cli("convert", leaf, "--to", "pem", "--out", out, "--no-fetch", "--json")
    assert result.code == 1
    data = result.json()  # one JSON document: the report, not the report and then the error
    assert data["written"] == []


# --- convert keeps the PKCS#12 alias -------------------------------------------------------------------


def test_convert_to_pkcs12_keeps_the_friendly_name(cli: Any, tmp_path: Path, pki: PKI) -> None:
    source = tmp_path / "windows.pfx"
    source.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"www.example.test (2026)",
            pki.leaf.key,  # type: ignore[arg-type]
            pki.leaf.cert,
            [pki.inter.cert],
            serialization.BestAvailableEncryption(b"in"),
        )
    )
    root = pki.root_file(tmp_path)
    out = tmp_path / "copy.pfx"
    result = cli(
        "convert", source, "-p", "in", "--to", "pkcs12", "--out", out, "--out-password", "out",
        "--trust-only", root, "--no-fetch",
    )  # fmt: skip
    assert result.code == 0, result.err
    loaded = pkcs12.load_pkcs12(out.read_bytes(), b"out")
    assert loaded.cert is not None
    assert loaded.cert.friendly_name == b"www.example.test (2026)"
    info = openssl("pkcs12", "-in", out, "-nokeys", "-passin", "pass:out", cwd=tmp_path)
    assert b"friendlyName: www.example.test (2026)" in info

    given = tmp_path / "given.pfx"
    result = cli(
        "convert", source, "-p", "in", "--to", "pkcs12", "--out", given, "--out-password", "out",
        "--friendly-name", "web", "--trust-only", root, "--no-fetch",
    )  # fmt: skip
    assert result.code == 0, result.err
    named = pkcs12.load_pkcs12(given.read_bytes(), b"out").cert
    assert named is not None and named.friendly_name == b"web"  # an alias given wins


# --- CT precertificates ------------------------------------------------------------------------------


def _precertificate(pki: PKI) -> x509.Certificate:
    key = pki.leaf.key
    builder = (
        x509.CertificateBuilder()
        .subject_name(pki.leaf.cert.subject)
        .issuer_name(pki.inter.cert.subject)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(pki.leaf.cert.not_valid_before_utc)
        .not_valid_after(pki.leaf.cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.example.test")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(pki.inter.key.public_key()), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.PrecertPoison(), critical=True)
    )
    return builder.sign(pki.inter.key, hashes.SHA256())  # type: ignore[arg-type]


def test_inspect_points_out_a_precertificate(cli: Any, tmp_path: Path, pki: PKI) -> None:
    path = tmp_path / "precert.pem"
    path.write_bytes(_precertificate(pki).public_bytes(serialization.Encoding.PEM))
    result = cli("inspect", path, "--json")
    assert result.code == 0
    data = result.json()
    assert data["certificates"][0]["precertificate"] is True
    (problem,) = data["problems"]
    assert problem["code"] == "precertificate"
    assert problem["message"].startswith(f"the certificate ({path}) is a CT precertificate")
    human = cli("inspect", path)
    assert "CT precertificate" in human.out


def test_chain_points_out_a_precertificate(cli: Any, tmp_path: Path, pki: PKI) -> None:
    path = tmp_path / "precert.pem"
    path.write_bytes(_precertificate(pki).public_bytes(serialization.Encoding.PEM) + pki.inter.cert_pem())
    result = cli("chain", path, "--trust-only", pki.root_file(tmp_path), "--no-fetch", "--json")
    assert result.code == 1
    codes = [p["code"] for p in result.json()["problems"]]
    assert codes.count("precertificate") == 1
    assert "invalid" not in codes and "unknown-critical-extension" not in codes


def test_an_ordinary_certificate_is_no_precertificate(cli: Any, tmp_path: Path, pki: PKI) -> None:
    path = tmp_path / "leaf.pem"
    path.write_bytes(pki.leaf.cert_pem())
    data = cli("inspect", path, "--json").json()
    assert data["certificates"][0]["precertificate"] is False
    assert data["problems"] == []


# --- no Python class names in messages -------------------------------------------------------------------


def test_an_x25519_key_is_named_in_words(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "x25519.key"
    path.write_bytes(
        x25519.X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    result = cli("inspect", path)
    assert result.code == 2
    assert "an X25519 key cannot serve as a web certificate key" in result.err
    assert "PrivateKey" not in result.err
