"""The workflows a new user follows: key and CSR, the CA's package back, the chain, the server files.

Everything runs as real processes, and the files written are read back by the ``openssl`` CLI
(and Java's ``keytool``), not by certfleet itself.
"""

from __future__ import annotations

import stat
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certfleet import testing
from certfleet.certinfo import fingerprint

PFX_PASSWORD = "Export-2026!"


def openssl(*args: str | Path, input: bytes | None = None) -> str:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, input=input, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def pubkey_of_cert(path: Path) -> str:
    return openssl("x509", "-in", path, "-noout", "-pubkey")


def pubkey_of_key(path: Path) -> str:
    return openssl("pkey", "-in", path, "-pubout")


def subjects(path: Path) -> list[str]:
    """Subjects of every certificate in a PEM file, in file order, as openssl reads them."""
    text = openssl("crl2pkcs7", "-nocrl", "-certfile", path)
    printed = openssl("pkcs7", "-print_certs", "-noout", input=text.encode())
    return [line.removeprefix("subject=").strip() for line in printed.splitlines() if line.startswith("subject=")]


@dataclass
class GoDaddy:
    """A GoDaddy-style issuance: Class 2 root → G2 root (cross-signed) → G2 intermediate → leaf."""

    folder: Path
    zip: Path
    key: Path  # the pending key, made by `certfleet key`
    root: Path  # the Class 2 root, as the clients trust it
    leaf: x509.Certificate
    intermediate: x509.Certificate
    cross: x509.Certificate
    root_cert: x509.Certificate


@pytest.fixture(scope="module")
def godaddy(tmp_path_factory: pytest.TempPathFactory) -> GoDaddy:
    folder = tmp_path_factory.mktemp("godaddy")
    key, csr = folder / "www.example.com.key", folder / "www.example.com.csr"
    for args in (
        ["key", "--type", "rsa:2048", "--out", key],
        ["csr", "--key", key, "--name", "www.example.com", "--name", "mbg.example.com", "--out", csr,
         "--subject", "C=CA,ST=Ontario,L=Ottawa,O=Example Inc"],
    ):  # fmt: skip
        run = subprocess.run([*_certfleet(), *map(str, args)], capture_output=True, check=False, timeout=120)
        assert run.returncode == 0, run.stderr.decode()

    class2 = testing.TestCA.root("Go Daddy Class 2 Certification Authority", key="rsa:2048")
    g2_root = class2.intermediate("Go Daddy Root Certificate Authority - G2", key="rsa:2048", path_length=None)
    g2_inter = g2_root.intermediate("Go Daddy Secure Certificate Authority - G2", key="rsa:2048")
    leaf = g2_inter.sign_csr(x509.load_pem_x509_csr(csr.read_bytes()))

    # what the CA sends: the leaf under a random name, and a bundle in the wrong order with the root
    package = folder / "www.example.com.zip"
    with zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("3f2a9c1b7d5e6f80.crt", testing.pem(leaf))
        z.writestr("gd_bundle-g2-g1.crt", testing.pem(g2_root.cert, class2.cert, g2_inter.cert))
    root = folder / "class2-root.pem"
    root.write_bytes(class2.cert_pem())
    return GoDaddy(folder, package, key, root, leaf, g2_inter.cert, g2_root.cert, class2.cert)


def _certfleet() -> list[str]:
    import sys

    return [sys.executable, "-m", "certfleet"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_godaddy_zip_and_pending_key_give_the_ordered_verified_chain(cli_proc: Any, godaddy: GoDaddy) -> None:
    result = cli_proc("chain", godaddy.zip, godaddy.key, "--trust-only", godaddy.root, "--no-fetch", "--json")
    assert result.code == 0, result.out + result.err
    data = result.json()
    assert data["complete"] is True
    assert [c["sha256"] for c in data["chain"]] == [
        fingerprint(godaddy.leaf),
        fingerprint(godaddy.intermediate),
        fingerprint(godaddy.cross),
    ]
    assert data["root"]["sha256"] == fingerprint(godaddy.root_cert)
    assert [d["sha256"] for d in data["dropped"]] == [fingerprint(godaddy.root_cert)]
    assert data["key"] == {"type": "rsa:2048", "matches_leaf": True, "source": str(godaddy.key)}
    assert not [p for p in data["problems"] if p["severity"] == "error"]

    human = cli_proc("chain", godaddy.zip, godaddy.key, "--trust-only", godaddy.root, "--no-fetch")
    assert human.code == 0
    assert "✓ chain complete" in human.out
    assert "gd_bundle-g2-g1.crt" in human.out  # where the dropped root came from

    verified = cli_proc("verify", godaddy.zip, "--name", "mbg.example.com", "--trust-only", godaddy.root)
    assert verified.code == 0, verified.out


@pytest.mark.parametrize("kind", ["apache", "nginx", "haproxy", "pkcs12", "pkcs12-legacy"])
def test_godaddy_zip_to_server_files_openssl_reads(cli_proc: Any, godaddy: GoDaddy, tmp_path: Path, kind: str) -> None:
    _convert_and_check(cli_proc, tmp_path, kind, inputs=[godaddy.zip, godaddy.key], extra=[], ca=godaddy)


def _convert_and_check(
    cli_proc: Any, tmp_path: Path, kind: str, *, inputs: list[Path], extra: list[str], ca: GoDaddy
) -> None:
    out = tmp_path / "out"
    to = kind.removesuffix("-legacy")
    args: list[Any] = ["convert", *inputs, *extra, "--to", to, "--out", out, "--trust-only", ca.root, "--no-fetch"]
    if to == "pkcs12":
        args += ["--out-password", PFX_PASSWORD, "--friendly-name", "www.example.com"]
    if kind.endswith("-legacy"):
        args.append("--legacy")
    result = cli_proc(*args)
    assert result.code == 0, result.out + result.err
    served = [*_cn(ca.leaf), *_cn(ca.intermediate), *_cn(ca.cross)]

    if to == "apache":
        assert subjects(out / "cert.pem") == served[:1]
        assert subjects(out / "chain.pem") == served[1:]
        verify = openssl(
            "verify", "-no-CApath", "-no-CAstore", "-CAfile", ca.root, "-untrusted", out / "chain.pem", out / "cert.pem"
        )
        assert verify.strip().endswith(": OK")
        assert pubkey_of_key(out / "privkey.pem") == pubkey_of_cert(out / "cert.pem")
        assert _mode(out / "privkey.pem") == 0o600
    elif to == "nginx":
        assert subjects(out / "fullchain.pem") == served
        verify = openssl(
            "verify", "-no-CApath", "-no-CAstore", "-CAfile", ca.root,
            "-untrusted", out / "fullchain.pem", out / "fullchain.pem",
        )  # fmt: skip
        assert verify.strip().endswith(": OK")
        assert pubkey_of_key(out / "privkey.pem") == pubkey_of_cert(out / "fullchain.pem")
        assert _mode(out / "privkey.pem") == 0o600
    elif to == "haproxy":
        assert subjects(out) == served
        assert pubkey_of_key(out) == pubkey_of_cert(out)
        assert _mode(out) == 0o600
    else:
        assert _mode(out) == 0o600
        password = f"pass:{PFX_PASSWORD}"
        certs = openssl("pkcs12", "-in", out, "-passin", password, "-nokeys")
        certs_file = tmp_path / "certs.pem"
        certs_file.write_text(certs)
        assert sorted(subjects(certs_file)) == sorted(served)
        keys = openssl("pkcs12", "-in", out, "-passin", password, "-nocerts", "-nodes")
        key_file = tmp_path / "key.pem"
        key_file.write_text(keys)
        leaf_file = tmp_path / "leaf.pem"
        leaf_file.write_text(openssl("pkcs12", "-in", out, "-passin", password, "-nokeys", "-clcerts"))
        assert pubkey_of_key(key_file) == pubkey_of_cert(leaf_file)
        info = subprocess.run(
            ["openssl", "pkcs12", "-in", str(out), "-passin", password, "-info", "-noout"],
            capture_output=True,
            check=False,
        ).stderr.decode()
        if kind.endswith("-legacy"):
            assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info
            assert "MAC: sha1" in info
        else:
            assert "AES-256-CBC" in info
            assert "MAC: sha256" in info


def _cn(cert: x509.Certificate) -> list[str]:
    # as openssl prints a subject: "O = certfleet tests, CN = ..."
    return [", ".join(f"{a.rfc4514_attribute_name} = {a.value!s}" for a in cert.subject)]


def test_legacy_pfx_is_read_by_java_keytool(cli_proc: Any, godaddy: GoDaddy, tmp_path: Path) -> None:
    out = tmp_path / "server2016.pfx"
    result = cli_proc(
        "convert", godaddy.zip, godaddy.key, "--to", "pkcs12", "--legacy", "--out", out,
        "--out-password", PFX_PASSWORD, "--friendly-name", "micollab", "--trust-only", godaddy.root, "--no-fetch",
    )  # fmt: skip
    assert result.code == 0, result.out + result.err
    proc = subprocess.run(
        ["keytool", "-list", "-v", "-keystore", str(out), "-storetype", "PKCS12", "-storepass", PFX_PASSWORD],
        capture_output=True,
        check=False,
        timeout=120,
    )
    text = proc.stdout.decode()
    assert proc.returncode == 0, text + proc.stderr.decode()
    assert "Alias name: micollab" in text
    assert "Entry type: PrivateKeyEntry" in text
    assert "Certificate chain length: 3" in text


@pytest.fixture(scope="module")
def windows_pfx(godaddy: GoDaddy) -> Path:
    """A PFX exported the way Windows and old tools do: legacy encryption (RC2-40 and 3DES), by openssl."""
    folder = godaddy.folder
    leaf, chain = folder / "w-leaf.pem", folder / "w-chain.pem"
    leaf.write_bytes(testing.pem(godaddy.leaf))
    chain.write_bytes(testing.pem(godaddy.cross, godaddy.intermediate))
    out = folder / "micollab.pfx"
    openssl(
        "pkcs12", "-export", "-legacy", "-in", leaf, "-inkey", godaddy.key, "-certfile", chain,
        "-name", "MiCollab", "-passout", f"pass:{PFX_PASSWORD}", "-out", out,
    )  # fmt: skip
    return out


def test_windows_pfx_with_password_gives_the_ordered_chain(cli_proc: Any, godaddy: GoDaddy, windows_pfx: Path) -> None:
    result = cli_proc(
        "chain", windows_pfx, "--password", PFX_PASSWORD, "--trust-only", godaddy.root, "--no-fetch", "--json"
    )
    assert result.code == 0, result.out + result.err
    data = result.json()
    assert [c["sha256"] for c in data["chain"]] == [
        fingerprint(godaddy.leaf),
        fingerprint(godaddy.intermediate),
        fingerprint(godaddy.cross),
    ]
    assert data["key"]["matches_leaf"] is True
    wrong = cli_proc("chain", windows_pfx, "--password", "nope", "--trust-only", godaddy.root)
    assert wrong.code == 2
    assert wrong.err.splitlines()[0] == f"error: {windows_pfx}: wrong password, or not a PKCS#12 file"


@pytest.mark.parametrize("kind", ["apache", "nginx", "haproxy", "pkcs12"])
def test_windows_pfx_to_server_files_openssl_reads(
    cli_proc: Any, godaddy: GoDaddy, windows_pfx: Path, tmp_path: Path, kind: str
) -> None:
    _convert_and_check(cli_proc, tmp_path, kind, inputs=[windows_pfx], extra=["--password", PFX_PASSWORD], ca=godaddy)


def test_password_from_the_environment(cli_proc: Any, godaddy: GoDaddy, windows_pfx: Path, tmp_path: Path) -> None:
    out = tmp_path / "nginx"
    result = cli_proc(
        "convert", windows_pfx, "--to", "nginx", "--out", out, "--trust-only", godaddy.root, "--no-fetch",
        env={"CERTFLEET_PASSWORD": PFX_PASSWORD},
    )  # fmt: skip
    assert result.code == 0, result.err
    assert pubkey_of_key(out / "privkey.pem") == pubkey_of_cert(out / "fullchain.pem")


def test_csr_is_read_by_openssl(godaddy: GoDaddy) -> None:
    csr = godaddy.folder / "www.example.com.csr"
    checked = subprocess.run(
        ["openssl", "req", "-in", str(csr), "-noout", "-verify"], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0
    assert "verify OK" in checked.stdout + checked.stderr  # openssl 3.0 says it on stderr, later ones on stdout
    text = openssl("req", "-in", csr, "-noout", "-text")
    assert "DNS:www.example.com, DNS:mbg.example.com" in text
    assert "sha256WithRSAEncryption" in text
    assert openssl("req", "-in", csr, "-noout", "-pubkey") == pubkey_of_key(godaddy.key)
