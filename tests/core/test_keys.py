"""keys: key kinds, generating keys, and telling which key belongs to which certificate and CSR."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certfleet.certinfo import fingerprint, key_type
from certfleet.csr import build_csr
from certfleet.errors import InputError
from certfleet.export import key_pem
from certfleet.formats import InputFormat, Pool, PoolCert, PoolCSR, PoolKey
from certfleet.keys import (
    KeySpec,
    generate_key,
    key_matches,
    match,
    parse_key_spec,
    public_key_id,
    require_web_key,
)
from certfleet.problems import ProblemCode, Severity
from certfleet.testing import make_key
from conftest import PKI


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("rsa", KeySpec.RSA_2048),
        ("RSA", KeySpec.RSA_2048),
        ("rsa2048", KeySpec.RSA_2048),
        ("rsa:3072", KeySpec.RSA_3072),
        ("rsa-4096", KeySpec.RSA_4096),
        ("RSA 4096", KeySpec.RSA_4096),
        ("ec", KeySpec.EC_P256),
        ("ecdsa", KeySpec.EC_P256),
        ("p256", KeySpec.EC_P256),
        ("P-256", KeySpec.EC_P256),
        ("ec:p256", KeySpec.EC_P256),
        ("prime256v1", KeySpec.EC_P256),
        ("secp384r1", KeySpec.EC_P384),
        ("ecdsa:p-384", KeySpec.EC_P384),
        ("ec384", KeySpec.EC_P384),
        (" ec:p384 ", KeySpec.EC_P384),
    ],
)
def test_parse_key_spec(text: str, spec: KeySpec) -> None:
    assert parse_key_spec(text) is spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "ed25519",
            "Ed25519 keys are not accepted by public CAs or most TLS clients for web certificates; "
            "use ec:p256 or rsa:2048",
        ),
        (
            "Ed-25519",
            "Ed25519 keys are not accepted by public CAs or most TLS clients for web certificates; "
            "use ec:p256 or rsa:2048",
        ),
        (
            "ed448",
            "Ed448 keys are not accepted by public CAs or most TLS clients for web certificates; "
            "use ec:p256 or rsa:2048",
        ),
        ("rsa1024", "RSA keys of 1024 bits are refused by public CAs and browsers; at least 2048 bits are needed"),
        ("rsa:8192", "RSA keys of 8192 bits are not offered"),
        ("p521", "P-521 keys are not accepted by public CAs for web certificates (only P-256 and P-384 are)"),
        ("dsa", "'dsa' is not a key type"),
        ("", "'' is not a key type"),
    ],
)
def test_parse_key_spec_refuses_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_key_spec(text)
    assert str(info.value) == message
    assert info.value.hint


@pytest.mark.parametrize("spec", list(KeySpec))
def test_generate_key_makes_the_kind_asked_for(spec: KeySpec, tmp_path: Path) -> None:
    key = generate_key(spec)
    assert key_type(key.public_key()) == spec.value
    # openssl agrees on the kind and the size
    path = tmp_path / "key.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    text = subprocess.run(
        ["openssl", "pkey", "-in", path, "-noout", "-text"], capture_output=True, check=True, text=True
    ).stdout
    kind, size = spec.value.split(":")
    if kind == "rsa":
        assert f"Private-Key: ({size} bit, 2 primes)" in text
    else:
        assert {"p256": "NIST CURVE: P-256", "p384": "NIST CURVE: P-384"}[size] in text


def test_generate_key_takes_text() -> None:
    key = generate_key("ecdsa:p-384")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp384r1"
    with pytest.raises(InputError, match="Ed25519"):
        generate_key("ed25519")


def test_key_matches(pki: PKI) -> None:
    leaf = pki.leaf
    other = make_key("ec:p256")
    assert key_matches(leaf.key, leaf.cert)
    assert key_matches(leaf.key.public_key(), leaf.cert)
    assert not key_matches(other, leaf.cert)
    assert not key_matches(pki.inter.key, leaf.cert)
    csr = build_csr(other, ["www.example.test"])
    assert key_matches(other, csr)
    assert not key_matches(leaf.key, csr)


def test_public_key_id_is_the_sha256_of_the_spki_as_openssl_writes_it(pki: PKI, tmp_path: Path) -> None:
    path = tmp_path / "leaf.pem"
    path.write_bytes(pki.leaf.cert_pem())
    spki_pem = subprocess.run(
        ["openssl", "x509", "-in", path, "-noout", "-pubkey"], capture_output=True, check=True
    ).stdout
    pub = tmp_path / "pub.pem"
    pub.write_bytes(spki_pem)
    spki_der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", pub, "-outform", "DER"], capture_output=True, check=True
    ).stdout
    expected = hashlib.sha256(spki_der).hexdigest()
    assert public_key_id(pki.leaf.key) == expected
    assert public_key_id(pki.leaf.key.public_key()) == expected
    assert public_key_id(pki.leaf.cert.public_key()) == expected
    assert public_key_id(pki.inter.key) != expected


def _pool(
    certs: Sequence[tuple[x509.Certificate, str]] = (),
    keys: Sequence[tuple[Any, str]] = (),
    csrs: Sequence[tuple[x509.CertificateSigningRequest, str]] = (),
) -> Pool:
    return Pool(
        certificates=tuple(PoolCert(c, s, InputFormat.PEM) for c, s in certs),
        keys=tuple(PoolKey(k, s, InputFormat.PEM) for k, s in keys),
        csrs=tuple(PoolCSR(c, s, InputFormat.PEM) for c, s in csrs),
    )


def test_match_pairs_keys_with_their_certificates(pki: PKI) -> None:
    leaf = pki.leaf
    pool = _pool(
        certs=[(leaf.cert, "fullchain.pem"), (pki.inter.cert, "fullchain.pem"), (pki.root.cert, "root.pem")],
        keys=[(leaf.key, "privkey.pem")],
    )
    result = match(pool)
    assert result.ok
    assert result.problems == ()
    assert len(result.pairs) == 1
    pair = result.pairs[0]
    assert (pair.key_source, pair.cert_source) == ("privkey.pem", "fullchain.pem")
    assert pair.cert_sha256 == fingerprint(leaf.cert)
    assert pair.cert_subject == "CN=www.example.test"
    assert pair.key_type == "ec:p256"
    assert pair.key_id == public_key_id(leaf.key)
    d = result.to_dict()
    assert d["ok"] is True
    assert d["pairs"][0]["certificate"]["sha256"] == fingerprint(leaf.cert)
    assert d["pairs"][0]["key"]["source"] == "privkey.pem"


def test_match_a_key_of_another_certificate_is_a_key_mismatch_naming_both_files(pki: PKI) -> None:
    stray = make_key("ec:p256")
    pool = _pool(
        certs=[(pki.leaf.cert, "server.crt"), (pki.inter.cert, "intermediate.crt")],
        keys=[(stray, "key.pem")],
    )
    result = match(pool)
    assert not result.ok
    assert result.pairs == ()
    [problem] = result.problems
    assert problem.code is ProblemCode.KEY_MISMATCH
    assert problem.severity is Severity.ERROR
    # compared with the end-entity certificate only, not the intermediate
    assert problem.message == (
        "key.pem does not match server.crt (CN=www.example.test): the certificate was issued for another key or CSR"
    )
    assert problem.subject == "key.pem"
    assert problem.hint
    assert result.to_dict()["problems"][0]["code"] == "key-mismatch"


def test_match_names_every_leaf_it_compared_with(pki: PKI) -> None:
    a = pki.inter.leaf("a.example.test")
    b = pki.inter.leaf("b.example.test")
    result = match(
        _pool(certs=[(a.cert, "a.crt"), (b.cert, "b.crt")], keys=[(a.key, "a.key"), (pki.leaf.key, "x.key")])
    )
    assert [(p.key_source, p.cert_source) for p in result.pairs] == [("a.key", "a.crt")]
    [problem] = result.problems
    assert problem.message.startswith("x.key does not match a.crt (CN=a.example.test), b.crt (CN=b.example.test):")


def test_match_csrs(pki: PKI) -> None:
    pending = make_key("ec:p256")
    csr = build_csr(pending, ["www.example.test"])
    other_csr = build_csr(make_key("ec:p256"), ["mail.example.test"])
    # the CA answered for the pending key's CSR: everything lines up
    issued = pki.inter.sign_csr(csr)
    result = match(_pool(certs=[(issued, "cert.pem")], keys=[(pending, "pending.key")], csrs=[(csr, "request.csr")]))
    assert result.ok
    assert [(c.key_source, c.csr_source, c.csr_subject) for c in result.csrs] == [
        ("pending.key", "request.csr", "CN=www.example.test")
    ]
    # the certificate came back for another CSR: the key matches its CSR but not the certificate
    result = match(
        _pool(certs=[(pki.leaf.cert, "cert.pem")], keys=[(pending, "pending.key")], csrs=[(csr, "request.csr")])
    )
    assert [p.code for p in result.problems] == [ProblemCode.KEY_MISMATCH]
    assert len(result.csrs) == 1
    # no certificate yet: a key that matches none of the CSRs is the problem
    result = match(_pool(keys=[(pending, "pending.key")], csrs=[(other_csr, "other.csr")]))
    [problem] = result.problems
    assert problem.message == (
        "pending.key does not match other.csr (CN=mail.example.test): the CSR was made with another key"
    )


def test_match_a_lone_key_is_not_a_mismatch() -> None:
    result = match(_pool(keys=[(make_key("ec:p256"), "key.pem")]))
    assert result.ok
    assert result.pairs == ()


def test_match_reads_a_real_pool(pki: PKI) -> None:
    from certfleet.formats import read_pool

    pool = read_pool(
        [("bundle.pem", pki.leaf.fullchain_pem() + pki.leaf.key_pem()), ("other.key", key_pem(pki.inter.key))]
    )
    result = match(pool)
    assert [(p.key_source, p.cert_source) for p in result.pairs] == [
        ("bundle.pem", "bundle.pem"),
        ("other.key", "bundle.pem"),
    ]
    assert result.pairs[1].cert_is_ca
    assert result.ok


@pytest.mark.parametrize(
    ("spec", "why"),
    [("ed25519", "Ed25519 keys are not accepted"), ("rsa:1024", "1024 bits"), ("ec:p521", "secp521r1")],
)
def test_require_web_key_refuses_unfit_keys(spec: str, why: str) -> None:
    with pytest.raises(InputError, match=why):
        require_web_key(make_key(spec))
