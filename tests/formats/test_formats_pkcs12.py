"""Reading PKCS#12 as OpenSSL (modern and legacy) and Java keytool write it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from certfleet import testing
from certfleet.certinfo import fingerprint
from certfleet.errors import ExitCode, FormatError, PasswordError
from certfleet.formats import InputFormat, detect_format, read_bytes
from certfleet.keys import key_matches, public_key_id
from support.formats import run


@pytest.fixture(scope="module")
def rsa_leaf() -> testing.TestLeaf:
    # RSA, because legacy PKCS#12 is what old Windows and Java ask for, with RSA keys
    root = testing.TestCA.root("PKCS12 Test Root", key="rsa:2048")
    return root.intermediate("PKCS12 Test Intermediate", key="rsa:2048").leaf("pfx.example.test", key="rsa:2048")


def _export(leaf: testing.TestLeaf, tmp_path: Path, password: str, *options: str) -> bytes:
    (tmp_path / "key.pem").write_bytes(leaf.key_pem())
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem())
    (tmp_path / "chain.pem").write_bytes(leaf.chain_pem())
    run(
        "openssl", "pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-certfile", "chain.pem",
        "-name", "MiCollab web", "-out", "out.pfx", "-passout", f"pass:{password}", *options, cwd=tmp_path,
    )  # fmt: skip
    return (tmp_path / "out.pfx").read_bytes()


_OPENSSL_VARIANTS = {
    "modern-aes256": ("s3cret", ()),
    "legacy-default": ("s3cret", ("-legacy",)),
    "legacy-3des": ("s3cret", ("-legacy", "-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES")),
    "legacy-rc2-40": ("s3cret", ("-legacy", "-certpbe", "PBE-SHA1-RC2-40", "-keypbe", "PBE-SHA1-RC2-40")),
    "empty-password": ("", ()),
    "no-encryption": ("", ("-keypbe", "NONE", "-certpbe", "NONE", "-nomac")),
}


@pytest.mark.parametrize("variant", list(_OPENSSL_VARIANTS))
def test_openssl_pkcs12(variant: str, rsa_leaf: testing.TestLeaf, tmp_path: Path) -> None:
    password, options = _OPENSSL_VARIANTS[variant]
    data = _export(rsa_leaf, tmp_path, password, *options)
    if "rc2" in variant:  # make sure the store really is RC2-40, the one OpenSSL 3 refuses by default
        assert _info(tmp_path, password).count(b"pbeWithSHA1And40BitRC2-CBC") == 2
    given = [password.encode()] if password else []

    pool = read_bytes("micollab.pfx", data, passwords=given)

    got = [fingerprint(c.cert) for c in pool.certificates]
    assert got == [fingerprint(rsa_leaf.cert), *map(fingerprint, rsa_leaf.chain)]
    assert pool.certificates[0].friendly_name == "MiCollab web"
    assert {c.format for c in pool.certificates} == {InputFormat.PKCS12}
    assert {c.source for c in pool.certificates} == {"micollab.pfx"}
    assert len(pool.keys) == 1
    assert public_key_id(pool.keys[0].key) == public_key_id(rsa_leaf.key)
    assert pool.keys[0].encrypted is bool(password)
    assert detect_format(data) is InputFormat.PKCS12


def _info(tmp_path: Path, password: str) -> bytes:
    proc = subprocess.run(
        ["openssl", "pkcs12", "-in", "out.pfx", "-info", "-noout", "-legacy", "-passin", f"pass:{password}"],
        capture_output=True,
        cwd=tmp_path,
        check=True,
    )
    return proc.stdout + proc.stderr


def test_password_meant_for_another_file_still_opens_an_unprotected_pfx(
    rsa_leaf: testing.TestLeaf, tmp_path: Path
) -> None:
    data = _export(rsa_leaf, tmp_path, "")

    pool = read_bytes("open.pfx", data, passwords=[b"for-the-key-file"])

    assert len(pool.keys) == 1
    assert not pool.keys[0].encrypted


def test_keytool_key_entry(tmp_path: Path) -> None:
    run(
        "keytool", "-genkeypair", "-storetype", "PKCS12", "-keystore", "web.p12", "-storepass", "changeit",
        "-alias", "tomcat", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=java.example.test",
        "-ext", "SAN=dns:java.example.test", "-validity", "30", cwd=tmp_path,
    )  # fmt: skip
    data = (tmp_path / "web.p12").read_bytes()

    pool = read_bytes("web.p12", data, passwords=[b"changeit"])

    assert len(pool.certificates) == 1
    cert = pool.certificates[0]
    assert cert.friendly_name == "tomcat"
    assert cert.cert.subject.rfc4514_string() == "CN=java.example.test"
    assert len(pool.keys) == 1
    assert key_matches(pool.keys[0].key, cert.cert)
    assert pool.keys[0].key_type == "rsa:2048"


def test_keytool_store_of_trusted_certificates_only(tmp_path: Path) -> None:
    root = testing.TestCA.root("Keytool Trusted Root")
    inter = root.intermediate("Keytool Trusted Intermediate")
    for alias, ca in (("root", root), ("inter", inter)):
        (tmp_path / f"{alias}.pem").write_bytes(ca.cert_pem())
        run(
            "keytool", "-importcert", "-noprompt", "-storetype", "PKCS12", "-keystore", "trust.p12",
            "-storepass", "changeit", "-alias", alias, "-file", f"{alias}.pem", cwd=tmp_path,
        )  # fmt: skip
    data = (tmp_path / "trust.p12").read_bytes()

    pool = read_bytes("trust.p12", data, passwords=[b"changeit"])

    assert not pool.keys
    by_name = {c.friendly_name: fingerprint(c.cert) for c in pool.certificates}
    assert by_name == {"root": fingerprint(root.cert), "inter": fingerprint(inter.cert)}


@pytest.mark.parametrize("variant", ["modern-aes256", "legacy-rc2-40"])
def test_wrong_password(variant: str, rsa_leaf: testing.TestLeaf, tmp_path: Path) -> None:
    password, options = _OPENSSL_VARIANTS[variant]
    data = _export(rsa_leaf, tmp_path, password, *options)

    with pytest.raises(PasswordError) as caught:
        read_bytes("micollab.pfx", data, passwords=[b"Secret", b"s3cret "])

    assert str(caught.value) == "micollab.pfx: wrong password, or not a PKCS#12 file"
    assert caught.value.source == "micollab.pfx"
    assert caught.value.hint == "give it with --password, --password-file or CERTFLEET_PASSWORD"
    assert caught.value.exit_code is ExitCode.BAD_INPUT


def test_password_needed(rsa_leaf: testing.TestLeaf, tmp_path: Path) -> None:
    data = _export(rsa_leaf, tmp_path, "s3cret")

    with pytest.raises(PasswordError) as caught:
        read_bytes("micollab.pfx", data)

    assert caught.value.message == "PKCS#12: a password is needed"
    assert caught.value.source == "micollab.pfx"


def test_truncated_pfx(rsa_leaf: testing.TestLeaf, tmp_path: Path) -> None:
    data = _export(rsa_leaf, tmp_path, "s3cret")
    cut = data[: len(data) // 2]

    with pytest.raises(FormatError) as caught:
        read_bytes("micollab.pfx", cut, passwords=[b"s3cret"])

    assert caught.value.message.startswith(f"PKCS#12: cut short ({len(cut):,} of ")
    assert caught.value.source == "micollab.pfx"


@pytest.mark.filterwarnings("error")
def test_ber_indefinite_length_pfx(rsa_leaf: testing.TestLeaf, tmp_path: Path) -> None:
    # Windows and old Java write PKCS#12 in BER, with indefinite lengths; re-encode the outer one so
    data = _export(rsa_leaf, tmp_path, "s3cret", "-legacy")
    assert data[:2] == b"\x30\x82"
    ber = b"\x30\x80" + data[4:] + b"\x00\x00"

    pool = read_bytes("windows.pfx", ber, passwords=[b"s3cret"])

    assert detect_format(ber) is InputFormat.PKCS12
    expected = [fingerprint(rsa_leaf.cert), *map(fingerprint, rsa_leaf.chain)]
    assert [fingerprint(c.cert) for c in pool.certificates] == expected
    assert len(pool.keys) == 1
