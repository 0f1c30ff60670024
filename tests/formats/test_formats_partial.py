"""One bad item does not sink the file: what can be read is read, each item that cannot is named.

Also what a file is when it holds nothing a server uses: a certificate revocation list, or a
certificate whose DSA key inherits its parameters (which cryptography cannot load).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.serialization import pkcs12

from certfleet.certinfo import fingerprint
from certfleet.errors import FormatError, PasswordError
from certfleet.formats import Unread, read_bytes
from certfleet.problems import ProblemCode, Severity
from conftest import PKI
from support.formats import openssl
from support.oddities import crl, der_of, dsa_inherited, pem, seq, split

DAMAGED_KEY = (
    b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
)


def _broken_cert_block() -> bytes:
    body = b"MIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBBQUAMA0xCzAJBgNVBAYTAlVT"  # the start of one, cut short
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"\n-----END CERTIFICATE-----\n"


# --- the library: read_bytes --------------------------------------------------------------------


def test_good_certificate_and_damaged_key(pki: PKI) -> None:
    pool = read_bytes("server.pem", pki.leaf.cert_pem() + DAMAGED_KEY)

    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.leaf.cert)]
    assert pool.keys == ()
    (unread,) = pool.unreadable
    assert unread.source == "server.pem"
    assert unread.message == "block 2 (PRIVATE KEY): damaged or cut short"
    assert unread.reason is Unread.DAMAGED
    (problem,) = pool.problems()
    assert problem.code is ProblemCode.UNREADABLE_ITEM
    assert problem.severity is Severity.WARNING
    assert problem.message == "server.pem: block 2 (PRIVATE KEY): damaged or cut short"


def test_chain_file_with_junk_between_certificates(pki: PKI) -> None:
    data = pki.leaf.cert_pem() + b"\nsome notes\n" + _broken_cert_block() + pki.inter.cert_pem()

    pool = read_bytes("chain.pem", data)

    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.leaf.cert), fingerprint(pki.inter.cert)]
    assert [str(u) for u in pool.unreadable] == ["chain.pem: block 2 (CERTIFICATE): damaged or cut short"]


def test_encrypted_key_without_its_password_keeps_the_certificates(pki: PKI) -> None:
    data = pki.leaf.fullchain_pem() + pki.leaf.key_pem(b"s3cret")

    pool = read_bytes("package.pem", data)
    assert len(pool.certificates) == 2
    assert pool.keys == ()
    (unread,) = pool.unreadable
    assert unread.reason is Unread.PASSWORD
    assert unread.message == "block 3 (ENCRYPTED PRIVATE KEY): encrypted; a password is needed"
    assert pool.problems()[0].code is ProblemCode.PASSWORD_NEEDED

    wrong = read_bytes("package.pem", data, passwords=[b"nope"])
    assert [u.message for u in wrong.unreadable] == ["block 3 (ENCRYPTED PRIVATE KEY): wrong password"]

    opened = read_bytes("package.pem", data, passwords=[b"s3cret"])
    assert len(opened.keys) == 1 and opened.unreadable == ()


def test_nothing_usable_is_still_refused(pki: PKI) -> None:
    with pytest.raises(PasswordError, match=r"block 1 \(ENCRYPTED PRIVATE KEY\): encrypted; a password is needed"):
        read_bytes("key.pem", pki.leaf.key_pem(b"s3cret"))
    with pytest.raises(FormatError, match=r"block 1 \(PRIVATE KEY\): damaged or cut short"):
        read_bytes("key.pem", DAMAGED_KEY + _broken_cert_block())


def test_a_truncated_file_still_says_download_it_again(pki: PKI) -> None:
    with pytest.raises(FormatError) as caught:
        read_bytes("leaf.pem", pki.leaf.cert_pem()[:400])
    assert "cut short" in caught.value.message
    assert "download or export it again" in (caught.value.hint or "")
    with pytest.raises(FormatError) as caught:
        read_bytes("leaf.cer", der_of(pki.leaf.cert)[:300])
    assert "download or export it again" in (caught.value.hint or "")


def test_zip_with_a_damaged_member(pki: PKI) -> None:
    pfx = pkcs12.serialize_key_and_certificates(b"ca", None, pki.inter.cert, None, serialization.NoEncryption())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cert.pem", pki.leaf.cert_pem())
        archive.writestr("key.pem", DAMAGED_KEY)
        archive.writestr("ca.pfx", pfx[:300])  # a PKCS#12 cut short

    pool = read_bytes("package.zip", buffer.getvalue())

    assert [c.source for c in pool.certificates] == ["package.zip!cert.pem"]
    assert [str(u) for u in pool.unreadable] == [
        "package.zip!key.pem: block 1 (PRIVATE KEY): damaged or cut short",
        f"package.zip!ca.pfx: PKCS#12: cut short (300 of {len(pfx):,} bytes)",
    ]


# --- certificate revocation lists ---------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["PEM", "DER"])
def test_a_crl_alone_is_named(pki: PKI, encoding: str) -> None:
    data = crl(pki.root).public_bytes(getattr(serialization.Encoding, encoding))

    with pytest.raises(FormatError) as caught:
        read_bytes("root.crl", data)

    assert caught.value.message.endswith("a certificate revocation list: a server does not need it")
    assert "damaged" not in caught.value.message
    assert "download" not in (caught.value.hint or "")


def test_a_crl_of_version_1_or_one_cryptography_refuses_is_named(pki: PKI) -> None:
    tbs, algorithm, signature = split(crl(pki.root).public_bytes(serialization.Encoding.DER))
    fields = split(tbs)
    assert fields[0] == b"\x02\x01\x01"  # version v2
    v1 = seq(seq(*fields[1:4]), algorithm, signature)  # no version, no extensions
    odd_time = seq(seq(fields[0], fields[1], fields[2], b"\x18\x0f20991301000000Z"), algorithm, signature)
    with pytest.raises(ValueError):
        x509.load_der_x509_crl(odd_time)  # month 13

    for data in (v1, odd_time):
        with pytest.raises(FormatError) as caught:
            read_bytes("old.crl", data)
        assert caught.value.message == "DER CRL: a certificate revocation list: a server does not need it"


def test_a_crl_beside_the_certificate_is_noted(pki: PKI) -> None:
    data = pki.leaf.cert_pem() + crl(pki.root).public_bytes(serialization.Encoding.PEM)

    pool = read_bytes("bundle.pem", data)

    assert len(pool.certificates) == 1
    (unread,) = pool.unreadable
    assert unread.reason is Unread.NOT_NEEDED
    assert unread.message == "block 2 (X509 CRL): a certificate revocation list: a server does not need it"
    (problem,) = pool.problems()
    assert problem.code is ProblemCode.IGNORED_ITEM
    assert problem.severity is Severity.INFO


# --- DSA with inherited parameters ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dsa_leaf() -> tuple[bytes, x509.Certificate]:
    return dsa_inherited()


def test_cryptography_cannot_load_it(dsa_leaf: tuple[bytes, x509.Certificate]) -> None:
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(dsa_leaf[0])


@pytest.mark.parametrize("form", ["DER", "PEM"])
def test_dsa_with_inherited_parameters_is_named(dsa_leaf: tuple[bytes, x509.Certificate], form: str) -> None:
    der, _ = dsa_leaf
    data = der if form == "DER" else pem("CERTIFICATE", der)
    with pytest.raises(FormatError) as caught:
        read_bytes("old.cer", data)
    what = "DER certificate" if form == "DER" else "block 1 (CERTIFICATE)"
    assert caught.value.message == f"{what}: uses DSA, which no TLS client accepts"
    assert "damaged" not in caught.value.message


def test_dsa_beside_a_good_certificate(pki: PKI, dsa_leaf: tuple[bytes, x509.Certificate]) -> None:
    pool = read_bytes("mixed.pem", pki.leaf.cert_pem() + pem("CERTIFICATE", dsa_leaf[0]))
    assert len(pool.certificates) == 1
    assert pool.unreadable[0].reason is Unread.UNSUPPORTED
    assert pool.problems()[0].code is ProblemCode.UNSUPPORTED_ITEM


def test_pkcs12_holding_it_is_not_a_wrong_password(dsa_leaf: tuple[bytes, x509.Certificate], tmp_path: Path) -> None:
    (tmp_path / "dsa.pem").write_bytes(pem("CERTIFICATE", dsa_leaf[0]))
    openssl("pkcs12", "-export", "-nokeys", "-in", "dsa.pem", "-passout", "pass:right", "-out", "dsa.p12", cwd=tmp_path)
    data = (tmp_path / "dsa.p12").read_bytes()

    with pytest.raises(FormatError) as caught:
        read_bytes("dsa.p12", data, passwords=[b"right"])
    assert not isinstance(caught.value, PasswordError)
    assert "wrong password" not in caught.value.message
    assert "uses DSA" in caught.value.message and "no TLS client accepts" in caught.value.message

    with pytest.raises(PasswordError, match="wrong password"):
        read_bytes("dsa.p12", data, passwords=[b"wrong"])


# --- keys of a kind no web certificate has --------------------------------------------------------


def test_an_x25519_key_is_named_in_words() -> None:
    key = x25519.X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(FormatError) as caught:
        read_bytes("x.key", key)
    assert caught.value.message == "block 1 (PRIVATE KEY): an X25519 key cannot serve as a web certificate key"
    assert "PrivateKey" not in str(caught.value)


# --- the commands ----------------------------------------------------------------------------------


def _files(pki: PKI, folder: Path) -> tuple[Path, Path]:
    server = folder / "server.pem"
    server.write_bytes(pki.leaf.cert_pem() + DAMAGED_KEY + pki.inter.cert_pem() + pki.leaf.key_pem(b"pw"))
    return server, pki.root_file(folder)


def test_inspect_shows_what_it_read_and_names_what_it_could_not(cli: Any, pki: PKI, tmp_path: Path) -> None:
    server, _ = _files(pki, tmp_path)
    result = cli("inspect", server, "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert len(data["certificates"]) == 2
    assert [p["code"] for p in data["problems"]] == ["unreadable-item", "password-needed"]
    assert (
        data["problems"][1]["message"] == f"{server}: block 4 (ENCRYPTED PRIVATE KEY): encrypted; a password is needed"
    )
    assert [u["reason"] for u in data["unreadable"]] == ["damaged", "password"]

    human = cli("inspect", server)
    assert human.code == 0
    assert f"{server}: block 2 (PRIVATE KEY): damaged or cut short" in human.out
    assert "[password-needed]" in human.out


@pytest.mark.parametrize("command", ["chain", "verify"])
def test_chain_and_verify_carry_the_unread_items(cli: Any, pki: PKI, tmp_path: Path, command: str) -> None:
    server, root = _files(pki, tmp_path)
    extra = ["--no-fetch"] if command == "chain" else []
    result = cli(command, server, "--trust-only", root, *extra, "--json")
    assert result.code == 0, result.err
    data = result.json()
    codes = [p["code"] for p in data["problems"]]
    assert codes[:2] == ["unreadable-item", "password-needed"]
    if command == "verify":
        assert data["valid"] is True
    else:
        assert data["complete"] is True
    human = cli(command, server, "--trust-only", root, *extra)
    assert human.code == 0
    assert "block 2 (PRIVATE KEY): damaged or cut short" in human.out


def test_a_crl_alone_is_refused_in_one_line(cli: Any, pki: PKI, tmp_path: Path) -> None:
    path = tmp_path / "root.crl"
    path.write_bytes(crl(pki.root).public_bytes(serialization.Encoding.DER))
    result = cli("inspect", path)
    assert result.code == 2
    assert result.err.splitlines()[0] == (
        f"error: {path}: DER CRL: a certificate revocation list: a server does not need it"
    )
