"""Reading PEM in every shape the openssl CLI and CAs write it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from certfleet import testing
from certfleet.certinfo import fingerprint
from certfleet.errors import ExitCode, FormatError, PasswordError
from certfleet.formats import InputFormat, read_bytes
from certfleet.keys import key_matches, public_key_id
from certfleet.testing import pem
from conftest import PKI
from support.formats import openssl


@pytest.fixture(scope="module")
def rsa_leaf() -> testing.TestLeaf:
    root = testing.TestCA.root("PEM Test Root", key="rsa:2048")
    return root.intermediate("PEM Test Intermediate", key="rsa:2048").leaf("rsa.example.test", key="rsa:2048")


def _csr_pem(tmp_path: Path, key_pem: bytes) -> bytes:
    (tmp_path / "csr.key").write_bytes(key_pem)
    return openssl("req", "-new", "-key", "csr.key", "-subj", "/CN=csr.example.test", cwd=tmp_path)


def test_openssl_x509_text_output(pki: PKI, tmp_path: Path) -> None:
    (tmp_path / "leaf.pem").write_bytes(pki.leaf.cert_pem())
    text = openssl("x509", "-in", "leaf.pem", "-text", cwd=tmp_path)
    assert text.startswith(b"Certificate:")  # the text is before the block, as users paste it

    pool = read_bytes("leaf.txt", text)

    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.leaf.cert)]
    assert pool.certificates[0].source == "leaf.txt"
    assert pool.certificates[0].format is InputFormat.PEM


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["no-bom", "utf8-bom"])
def test_mixed_blocks_in_any_order(pki: PKI, tmp_path: Path, newline: bytes, bom: bytes) -> None:
    csr = _csr_pem(tmp_path, pki.leaf.key_pem())
    public = pki.leaf.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ec_params = openssl("ecparam", "-name", "prime256v1", cwd=tmp_path)
    parts = [
        b"Here is your certificate, as requested.\n",
        ec_params,
        pki.inter.cert_pem(),
        b"some words between blocks\n",
        pki.leaf.key_pem(),
        public,
        csr,
        pki.leaf.cert_pem(),
        pki.root.cert_pem(),
        b"-- end of message --\n",
    ]
    data = bom + b"".join(parts).replace(b"\n", newline)

    pool = read_bytes("mixed.pem", data)

    got = [fingerprint(c.cert) for c in pool.certificates]
    assert got == [fingerprint(pki.inter.cert), fingerprint(pki.leaf.cert), fingerprint(pki.root.cert)]
    assert len(pool.keys) == 1
    assert public_key_id(pool.keys[0].key) == public_key_id(pki.leaf.key)
    assert not pool.keys[0].encrypted
    assert len(pool.csrs) == 1
    assert pool.csrs[0].csr.subject.rfc4514_string() == "CN=csr.example.test"


def test_utf16_file_from_notepad(pki: PKI) -> None:
    data = pki.leaf.cert_pem().decode().encode("utf-16")
    assert data[:2] in (b"\xff\xfe", b"\xfe\xff")

    pool = read_bytes("leaf-unicode.cer", data)

    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.leaf.cert)]


@pytest.mark.parametrize("label", ["X509 CERTIFICATE", "CERTIFICATE"])
def test_certificate_labels(pki: PKI, label: str) -> None:
    data = pki.leaf.cert_pem().replace(b"CERTIFICATE-----", label.encode() + b"-----")

    pool = read_bytes("leaf.pem", data)

    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.leaf.cert)]


def test_trusted_certificate_from_openssl_trustout(pki: PKI, tmp_path: Path) -> None:
    (tmp_path / "root.pem").write_bytes(pki.root.cert_pem())
    data = openssl("x509", "-in", "root.pem", "-trustout", "-addtrust", "serverAuth", cwd=tmp_path)
    assert b"BEGIN TRUSTED CERTIFICATE" in data

    pool = read_bytes("root-trusted.pem", data)

    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.root.cert)]


@pytest.mark.parametrize("label", ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"])
def test_csr_labels(pki: PKI, tmp_path: Path, label: str) -> None:
    csr = _csr_pem(tmp_path, pki.leaf.key_pem())
    data = csr.replace(b"CERTIFICATE REQUEST", label.encode())

    pool = read_bytes("request.csr", data)

    assert len(pool.csrs) == 1
    assert key_matches(pki.leaf.key, pool.csrs[0].csr)
    assert pool.csrs[0].format is InputFormat.PEM


def test_pkcs7_pem_from_crl2pkcs7(pki: PKI, tmp_path: Path) -> None:
    (tmp_path / "chain.pem").write_bytes(pki.leaf.fullchain_pem() + pki.root.cert_pem())
    data = openssl("crl2pkcs7", "-nocrl", "-certfile", "chain.pem", cwd=tmp_path)
    assert b"BEGIN PKCS7" in data

    pool = read_bytes("bundle.p7b", data)

    got = [fingerprint(c.cert) for c in pool.certificates]
    assert got == [fingerprint(c) for c in (pki.leaf.cert, pki.inter.cert, pki.root.cert)]
    assert {c.format for c in pool.certificates} == {InputFormat.PKCS7}


def test_bag_attributes_from_pkcs12_nodes(rsa_leaf: testing.TestLeaf, tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_bytes(rsa_leaf.key_pem())
    (tmp_path / "cert.pem").write_bytes(rsa_leaf.cert_pem())
    (tmp_path / "chain.pem").write_bytes(rsa_leaf.chain_pem())
    openssl(
        "pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-certfile", "chain.pem",
        "-name", "web", "-out", "web.p12", "-passout", "pass:secret", cwd=tmp_path,
    )  # fmt: skip
    data = openssl("pkcs12", "-in", "web.p12", "-nodes", "-passin", "pass:secret", cwd=tmp_path)
    assert b"Bag Attributes" in data

    pool = read_bytes("web-nodes.pem", data)

    got = [fingerprint(c.cert) for c in pool.certificates]
    assert got == [fingerprint(rsa_leaf.cert), *map(fingerprint, rsa_leaf.chain)]
    assert len(pool.keys) == 1
    assert public_key_id(pool.keys[0].key) == public_key_id(rsa_leaf.key)


def _encrypt_key(kind: str, leaf: testing.TestLeaf, tmp_path: Path) -> bytes:
    (tmp_path / "plain.key").write_bytes(leaf.key_pem())
    if kind == "pkcs8-aes256":
        return openssl("pkcs8", "-topk8", "-v2", "aes256", "-in", "plain.key", "-passout", "pass:s3cret", cwd=tmp_path)
    if kind == "rsa-traditional-aes256":
        return openssl("rsa", "-in", "plain.key", "-aes256", "-traditional", "-passout", "pass:s3cret", cwd=tmp_path)
    if kind == "rsa-traditional-3des":
        return openssl("rsa", "-in", "plain.key", "-des3", "-traditional", "-passout", "pass:s3cret", cwd=tmp_path)
    assert kind == "ec-aes256"
    return openssl("ec", "-in", "plain.key", "-aes256", "-passout", "pass:s3cret", cwd=tmp_path)


_ENCRYPTED = [
    ("pkcs8-aes256", "rsa"),
    ("pkcs8-aes256", "ec"),
    ("rsa-traditional-aes256", "rsa"),
    ("rsa-traditional-3des", "rsa"),
    ("ec-aes256", "ec"),
]


@pytest.mark.parametrize("case", _ENCRYPTED, ids="-".join)
def test_encrypted_key_with_its_password(
    case: tuple[str, str], pki: PKI, rsa_leaf: testing.TestLeaf, tmp_path: Path
) -> None:
    kind, algorithm = case
    leaf = rsa_leaf if algorithm == "rsa" else pki.leaf
    data = _encrypt_key(kind, leaf, tmp_path)
    if kind.startswith(("rsa-traditional", "ec-")):
        assert b"Proc-Type: 4,ENCRYPTED" in data
    else:
        assert b"BEGIN ENCRYPTED PRIVATE KEY" in data

    pool = read_bytes("server.key", data, passwords=[b"not this one", b"s3cret"])

    assert len(pool.keys) == 1
    assert pool.keys[0].encrypted
    assert public_key_id(pool.keys[0].key) == public_key_id(leaf.key)


_NEEDED = ((), "encrypted; a password is needed")
_WRONG = ((b"wrong", b"also wrong"), "wrong password")
_LABELS = {"pkcs8-aes256": "ENCRYPTED PRIVATE KEY", "rsa-traditional-aes256": "RSA PRIVATE KEY"}
_LABELS |= {"rsa-traditional-3des": "RSA PRIVATE KEY", "ec-aes256": "EC PRIVATE KEY"}


@pytest.mark.parametrize("case", _ENCRYPTED, ids="-".join)
@pytest.mark.parametrize("given", [_NEEDED, _WRONG], ids=["none", "wrong"])
def test_encrypted_key_without_the_password(
    case: tuple[str, str], given: tuple[tuple[bytes, ...], str], pki: PKI, rsa_leaf: testing.TestLeaf, tmp_path: Path
) -> None:
    kind, algorithm = case
    passwords, why = given
    data = _encrypt_key(kind, rsa_leaf if algorithm == "rsa" else pki.leaf, tmp_path)
    message = f"block 1 ({_LABELS[kind]}): {why}"

    with pytest.raises(PasswordError) as caught:
        read_bytes("server.key", data, passwords=passwords)

    assert caught.value.message == message
    assert caught.value.source == "server.key"
    assert str(caught.value) == f"server.key: {message}"
    assert "--password" in (caught.value.hint or "")
    assert caught.value.exit_code is ExitCode.BAD_INPUT


def test_plain_key_ignores_given_passwords(pki: PKI) -> None:
    pool = read_bytes("plain.key", pki.leaf.key_pem(), passwords=[b"unused"])

    assert public_key_id(pool.keys[0].key) == public_key_id(pki.leaf.key)
    assert not pool.keys[0].encrypted


def test_broken_base64_names_the_block(pki: PKI) -> None:
    second = pki.inter.cert_pem()
    lines = second.split(b"\n")
    lines[3] = lines[3][:10] + b"*!" + lines[3][12:]
    broken = b"\n".join(lines)

    pool = read_bytes("bundle.pem", pki.leaf.cert_pem() + broken)

    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.leaf.cert)]
    assert [str(u) for u in pool.unreadable] == ["bundle.pem: block 2 (CERTIFICATE): broken base64"]

    with pytest.raises(FormatError) as caught:
        read_bytes("bundle.pem", broken)  # alone, nothing is usable: the file is refused
    assert caught.value.message == "block 1 (CERTIFICATE): broken base64"
    assert caught.value.source == "bundle.pem"
    assert caught.value.exit_code is ExitCode.BAD_INPUT


def test_broken_padding_is_broken_base64(pki: PKI) -> None:
    body = pki.leaf.cert_pem().replace(b"\n-----END", b"A\n-----END")

    with pytest.raises(FormatError, match=r"block 1 \(CERTIFICATE\): broken base64"):
        read_bytes("leaf.pem", body)


def test_truncated_pem_has_no_end_line(pki: PKI) -> None:
    data = pki.leaf.fullchain_pem()
    cut = data[: len(pki.leaf.cert_pem()) + 200]

    pool = read_bytes("fullchain.pem", cut)

    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.leaf.cert)]
    (unread,) = pool.unreadable
    assert unread.message == "block 2 (CERTIFICATE): no END line; the file is cut short"
    assert unread.source == "fullchain.pem"
    assert "download or export it again" in (unread.hint or "")


def test_truncated_block_followed_by_another(pki: PKI) -> None:
    first = pki.leaf.cert_pem()
    data = first[:300] + b"\n" + pki.inter.cert_pem()

    pool = read_bytes("glued.pem", data)

    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.inter.cert)]
    assert [u.message for u in pool.unreadable] == ["block 1 (CERTIFICATE): no END line; the file is cut short"]

    with pytest.raises(FormatError) as caught:
        read_bytes("glued.pem", first[:300])
    assert caught.value.message == "block 1 (CERTIFICATE): no END line; the file is cut short"


def test_lines_missing_from_the_middle(pki: PKI) -> None:
    lines = pki.leaf.cert_pem().split(b"\n")
    data = b"\n".join(lines[:2] + lines[4:])  # whole base64 lines gone: decodes, but the DER is short

    with pytest.raises(FormatError) as caught:
        read_bytes("leaf.pem", data)

    assert caught.value.message == "block 1 (CERTIFICATE): damaged or cut short"


def test_only_kinds_we_do_not_use(pki: PKI, tmp_path: Path) -> None:
    public = pki.leaf.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    data = public + openssl("ecparam", "-name", "prime256v1", cwd=tmp_path)

    with pytest.raises(FormatError) as caught:
        read_bytes("public.pem", data)

    assert caught.value.message == "holds no certificate, key, CSR or PKCS#7, only PUBLIC KEY, EC PARAMETERS"
    assert caught.value.source == "public.pem"


def test_x509_crl_blocks_are_ignored(pki: PKI, tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    (ca_dir / "index.txt").write_bytes(b"")
    (ca_dir / "ca.key").write_bytes(
        pki.root.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (ca_dir / "ca.pem").write_bytes(pki.root.cert_pem())
    (ca_dir / "ca.cnf").write_text(
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ndefault_md = sha256\ndefault_crl_days = 1\n"
    )
    crl = openssl("ca", "-gencrl", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem", cwd=ca_dir)
    assert b"BEGIN X509 CRL" in crl

    pool = read_bytes("with-crl.pem", crl + pem(pki.inter.cert))

    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.inter.cert)]


def test_empty_pkcs7_block_beside_a_certificate(pki: PKI, tmp_path: Path) -> None:
    empty = openssl("crl2pkcs7", "-nocrl", cwd=tmp_path)
    assert b"BEGIN PKCS7" in empty

    pool = read_bytes("mixed.pem", empty + pki.leaf.cert_pem())
    assert [fingerprint(c.cert) for c in pool.certificates] == [fingerprint(pki.leaf.cert)]

    with pytest.raises(FormatError) as caught:
        read_bytes("empty.p7b", empty)
    assert caught.value.message == "block 1 (PKCS7): holds no certificate"
