"""Reading DER certificates, keys and CSRs, and PKCS#7 bundles, as the openssl CLI writes them."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certfleet import testing
from certfleet.certinfo import fingerprint
from certfleet.errors import FormatError, PasswordError
from certfleet.formats import InputFormat, Unread, detect_format, read_bytes
from certfleet.keys import public_key_id
from conftest import PKI
from support.formats import openssl


@pytest.fixture(scope="module")
def rsa_leaf() -> testing.TestLeaf:
    root = testing.TestCA.root("DER Test Root", key="rsa:2048")
    return root.leaf("der.example.test", key="rsa:2048")


def test_der_certificate(pki: PKI, tmp_path: Path) -> None:
    (tmp_path / "leaf.pem").write_bytes(pki.leaf.cert_pem())
    data = openssl("x509", "-in", "leaf.pem", "-outform", "DER", cwd=tmp_path)

    pool = read_bytes("leaf.cer", data)

    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.leaf.cert)]
    assert pool.certificates[0].format is InputFormat.DER
    assert detect_format(data) is InputFormat.DER


def test_der_csr(pki: PKI, tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_bytes(pki.leaf.key_pem())
    data = openssl("req", "-new", "-key", "k.pem", "-subj", "/CN=der.csr.test", "-outform", "DER", cwd=tmp_path)

    pool = read_bytes("request.der", data)

    assert len(pool.csrs) == 1
    assert not pool.certificates
    assert pool.csrs[0].csr.subject.rfc4514_string() == "CN=der.csr.test"


@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
def test_v1_certificate_with_serial_zero(rsa_leaf: testing.TestLeaf, tmp_path: Path) -> None:
    # old appliances self-sign v1 certificates with serial 0: shaped like a CSR at first sight
    (tmp_path / "k.pem").write_bytes(rsa_leaf.key_pem())
    openssl("req", "-new", "-key", "k.pem", "-subj", "/CN=appliance", "-out", "r.csr", cwd=tmp_path)
    openssl("x509", "-req", "-in", "r.csr", "-signkey", "k.pem", "-set_serial", "0", "-out", "v1.pem", cwd=tmp_path)
    data = openssl("x509", "-in", "v1.pem", "-outform", "DER", cwd=tmp_path)

    pool = read_bytes("appliance.cer", data)

    assert len(pool.certificates) == 1
    assert pool.certificates[0].cert.serial_number == 0
    assert pool.certificates[0].cert.version.name == "v1"


_DER_KEYS = [
    ("pkcs8", "rsa", ["pkcs8", "-topk8", "-nocrypt", "-outform", "DER"]),
    ("pkcs8", "ec", ["pkcs8", "-topk8", "-nocrypt", "-outform", "DER"]),
    ("pkcs1", "rsa", ["rsa", "-traditional", "-outform", "DER"]),
    ("sec1", "ec", ["ec", "-outform", "DER"]),
]


@pytest.mark.parametrize("case", _DER_KEYS, ids=lambda c: f"{c[0]}-{c[1]}")
def test_der_keys(case: tuple[str, str, list[str]], pki: PKI, rsa_leaf: testing.TestLeaf, tmp_path: Path) -> None:
    structure, algorithm, command = case
    leaf = rsa_leaf if algorithm == "rsa" else pki.leaf
    (tmp_path / "k.pem").write_bytes(leaf.key_pem())
    data = openssl(*command, "-in", "k.pem", cwd=tmp_path)
    assert data[:1] == b"\x30"

    pool = read_bytes(f"{structure}.key", data, passwords=[b"ignored"])

    assert len(pool.keys) == 1
    assert public_key_id(pool.keys[0].key) == public_key_id(leaf.key)
    assert pool.keys[0].format is InputFormat.DER
    assert not pool.keys[0].encrypted


def test_der_encrypted_pkcs8(pki: PKI, tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_bytes(pki.leaf.key_pem())
    data = openssl(
        "pkcs8", "-topk8", "-v2", "aes256", "-in", "k.pem", "-outform", "DER", "-passout", "pass:pw", cwd=tmp_path
    )

    pool = read_bytes("enc.der", data, passwords=[b"pw"])
    assert pool.keys[0].encrypted
    assert public_key_id(pool.keys[0].key) == public_key_id(pki.leaf.key)

    with pytest.raises(PasswordError) as caught:
        read_bytes("enc.der", data)
    assert caught.value.message == "encrypted DER private key: encrypted; a password is needed"
    assert caught.value.source == "enc.der"

    with pytest.raises(PasswordError) as caught:
        read_bytes("enc.der", data, passwords=[b"nope"])
    assert caught.value.message == "encrypted DER private key: wrong password"


@pytest.mark.parametrize("outform", ["PEM", "DER"])
def test_pkcs7_from_crl2pkcs7(outform: str, pki: PKI, tmp_path: Path) -> None:
    # deliberately out of order: the order in the file is what the pool must keep
    (tmp_path / "bundle.pem").write_bytes(pki.inter.cert_pem() + pki.leaf.cert_pem() + pki.root.cert_pem())
    data = openssl("crl2pkcs7", "-nocrl", "-certfile", "bundle.pem", "-outform", outform, cwd=tmp_path)

    pool = read_bytes("bundle.p7c", data)

    got = [fingerprint(c.cert) for c in pool.certificates]
    assert got == [fingerprint(c) for c in (pki.inter.cert, pki.leaf.cert, pki.root.cert)]
    assert {c.format for c in pool.certificates} == {InputFormat.PKCS7}
    assert {c.source for c in pool.certificates} == {"bundle.p7c"}
    assert detect_format(data) is (InputFormat.PKCS7 if outform == "DER" else InputFormat.PEM)


def test_pkcs7_without_certificates(tmp_path: Path) -> None:
    data = openssl("crl2pkcs7", "-nocrl", "-outform", "DER", cwd=tmp_path)

    with pytest.raises(FormatError) as caught:
        read_bytes("empty.p7b", data)

    assert caught.value.message == "PKCS#7: holds no certificate"
    assert caught.value.source == "empty.p7b"


def test_concatenated_der_certificates(pki: PKI) -> None:
    der = [c.public_bytes(serialization.Encoding.DER) for c in (pki.leaf.cert, pki.inter.cert)]

    pool = read_bytes("two.der", der[0] + b"\r\n" + der[1] + b"\n")

    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.leaf.cert), fingerprint(pki.inter.cert)]


def test_bytes_after_der(pki: PKI) -> None:
    der = pki.leaf.cert.public_bytes(serialization.Encoding.DER)

    pool = read_bytes("leaf.der", der + b"trailing words")

    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.leaf.cert)]
    assert [str(u) for u in pool.unreadable] == [f"leaf.der: unexpected bytes after the DER data, at byte {len(der):,}"]
    assert pool.unreadable[0].reason is Unread.DAMAGED


def test_junk_between_der_certificates_is_skipped(pki: PKI) -> None:
    der = [c.public_bytes(serialization.Encoding.DER) for c in (pki.leaf.cert, pki.inter.cert)]
    junk = b"\x30\x03garbage between the two"

    pool = read_bytes("chain.der", der[0] + junk + der[1])

    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.leaf.cert), fingerprint(pki.inter.cert)]
    start = len(der[0])
    assert [u.message for u in pool.unreadable] == [
        f"unexpected bytes after the DER data, from byte {start:,} to {start + len(junk):,}"
    ]


def test_only_junk_after_a_cut_short_der_is_refused(pki: PKI) -> None:
    der = pki.leaf.cert.public_bytes(serialization.Encoding.DER)

    with pytest.raises(FormatError, match="DER certificate: cut short"):
        read_bytes("leaf.der", der[:-10])


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_der_certificate(keep: float, pki: PKI) -> None:
    der = pki.leaf.cert.public_bytes(serialization.Encoding.DER)
    cut = der[: int(len(der) * keep)]

    with pytest.raises(FormatError) as caught:
        read_bytes("leaf.cer", cut)

    assert caught.value.message == f"DER certificate: cut short ({len(cut):,} of {len(der):,} bytes)"
    assert caught.value.source == "leaf.cer"


def test_truncated_der_key(pki: PKI) -> None:
    der = pki.leaf.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    with pytest.raises(FormatError, match=r"DER private key: cut short"):
        read_bytes("leaf.key", der[:40])


def test_damaged_der_certificate(pki: PKI) -> None:
    der = bytearray(pki.leaf.cert.public_bytes(serialization.Encoding.DER))
    at = der.index(b"\x17\x0d")  # the notBefore UTCTime: same length, no longer a time
    der[at + 2 : at + 6] = b"ZZZZ"

    with pytest.raises(FormatError) as caught:
        read_bytes("leaf.cer", bytes(der))

    assert caught.value.message == "DER certificate: damaged or cut short"


def test_der_crl_is_not_a_damaged_certificate(pki: PKI) -> None:
    now = datetime.datetime.now(datetime.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.root.cert.subject)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=1))
        .sign(pki.root.key, hashes.SHA256())
    )

    with pytest.raises(FormatError) as caught:
        read_bytes("root.crl", crl.public_bytes(serialization.Encoding.DER))

    assert caught.value.message == "DER CRL: a certificate revocation list: a server does not need it"
