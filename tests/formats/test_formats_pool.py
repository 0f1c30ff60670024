"""The pool many inputs form, and the answers to inputs that are no package at all."""

from __future__ import annotations

import io
import json
import random
import zipfile

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import NameOID

from certfleet.certinfo import describe, fingerprint
from certfleet.errors import CertfleetError, ExitCode, FormatError, LimitError
from certfleet.formats import InputFormat, Pool, detect_format, read_bytes, read_pool
from conftest import PKI

MiB = 1024 * 1024


def test_many_inputs_form_one_pool_in_order(pki: PKI) -> None:
    inputs = [
        ("chain.pem", pki.inter.cert_pem() + pki.root.cert_pem()),
        ("server.key", pki.leaf.key_pem()),
        ("leaf.cer", pki.leaf.cert.public_bytes(serialization.Encoding.DER)),
        ("again.pem", pki.inter.cert_pem()),
    ]

    pool = read_pool(inputs)

    got = [(c.source, fingerprint(c.cert)) for c in pool.certificates]
    assert got == [
        ("chain.pem", fingerprint(pki.inter.cert)),
        ("chain.pem", fingerprint(pki.root.cert)),
        ("leaf.cer", fingerprint(pki.leaf.cert)),
        ("again.pem", fingerprint(pki.inter.cert)),
    ]
    unique = [(c.source, fingerprint(c.cert)) for c in pool.unique_certificates()]
    assert unique == got[:3]  # the first occurrence wins
    assert [k.source for k in pool.keys] == ["server.key"]


def test_merge_keeps_order(pki: PKI) -> None:
    first = read_bytes("a.pem", pki.leaf.cert_pem())
    second = read_bytes("b.pem", pki.inter.cert_pem() + pki.leaf.key_pem())

    merged = first.merge(second)

    assert [c.source for c in merged.certificates] == ["a.pem", "b.pem"]
    assert [k.source for k in merged.keys] == ["b.pem"]
    assert merged.merge(Pool()) == merged


def test_to_dict_never_holds_key_material(pki: PKI) -> None:
    key_pem = pki.leaf.key_pem()
    pool = read_pool([("bundle.pem", pki.leaf.fullchain_pem() + key_pem)])

    out = pool.to_dict()
    text = json.dumps(out)

    assert out["keys"] == [{"source": "bundle.pem", "format": "pem", "type": "ec:p256", "encrypted": False}]
    assert out["certificates"][0] == {
        **describe(pki.leaf.cert).to_dict(),
        "source": "bundle.pem",
        "format": "pem",
        "friendly_name": None,
    }
    body = b"".join(key_pem.splitlines()[1:-1]).decode()
    raw = pki.leaf.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert body[:40] not in text
    assert raw.hex()[:40] not in text
    assert "PrivateKey" not in repr(pool.keys[0])


def test_csr_in_to_dict(pki: PKI) -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csr.example.test")]))
        .sign(pki.leaf.key, hashes.SHA256())
    )
    pool = read_bytes("req.csr", csr.public_bytes(serialization.Encoding.PEM))

    assert pool.to_dict()["csrs"] == [
        {"source": "req.csr", "format": "pem", "subject": "CN=csr.example.test", "key_type": "ec:p256"}
    ]


def _bad(name: str, data: bytes) -> FormatError | LimitError:
    with pytest.raises((FormatError, LimitError)) as caught:
        read_bytes(name, data)
    assert caught.value.exit_code is ExitCode.BAD_INPUT
    assert caught.value.source == name
    return caught.value  # type: ignore[return-value]


@pytest.mark.parametrize("data", [b"", b"\n\r\n  \t"], ids=["empty", "whitespace"])
def test_empty_file(data: bytes) -> None:
    error = _bad("empty.crt", data)

    assert isinstance(error, FormatError)
    assert str(error) == "empty.crt: empty file"


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("first", [b"", b"\x30", b"\x30\x82\x04\x00\x02\x01\x05", b"PK"])
def test_random_bytes(seed: int, first: bytes) -> None:
    data = first + random.Random(seed).randbytes(4096)

    error = _bad("random.bin", data)

    assert isinstance(error, FormatError)
    assert error.message == "not a certificate, key, CSR, PKCS#7, PKCS#12 or zip"
    assert error.hint
    assert detect_format(data) is None


def test_text_file() -> None:
    error = _bad("notes.txt", b"0 s:CN = example.test\n   i:C = US, O = Example CA\n")

    assert error.message == "not a certificate, key, CSR, PKCS#7, PKCS#12 or zip"


def test_a_fifty_megabyte_file() -> None:
    data = bytes(50 * 1000 * 1000)

    error = _bad("huge.pem", data)

    assert isinstance(error, LimitError)
    assert error.message == "larger than 20 MiB; not a certificate package"


def test_the_limit_is_exactly_twenty_mib(pki: PKI) -> None:
    padding = b"#" * (20 * MiB - len(pki.leaf.cert_pem()))
    data = padding + pki.leaf.cert_pem()
    assert len(data) == 20 * MiB

    assert len(read_bytes("padded.pem", data).certificates) == 1
    assert isinstance(_bad("padded.pem", data + b"\n"), LimitError)


def test_error_in_the_second_input_names_it(pki: PKI) -> None:
    with pytest.raises(FormatError) as caught:
        read_pool([("good.pem", pki.leaf.cert_pem()), ("bad.pem", b"hello")])

    assert str(caught.value) == "bad.pem: not a certificate, key, CSR, PKCS#7, PKCS#12 or zip"


def test_passwords_must_be_bytes(pki: PKI) -> None:
    with pytest.raises(TypeError):
        read_bytes("k.pem", pki.leaf.key_pem(), passwords=["text"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        read_bytes("k.pem", pki.leaf.key_pem(), passwords=b"pw")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.leaf.cert_pem(), InputFormat.PEM),
        (lambda p: p.leaf.cert.public_bytes(serialization.Encoding.DER), InputFormat.DER),
        (lambda p: b"\xef\xbb\xbf" + p.leaf.cert_pem(), InputFormat.PEM),
        (lambda p: b"PK\x05\x06" + bytes(18), InputFormat.ZIP),
        (lambda p: b"", None),
    ],
)
def test_detect_format(make: object, expected: InputFormat | None, pki: PKI) -> None:
    assert detect_format(make(pki)) is expected  # type: ignore[operator]


def _seeds(pki: PKI) -> list[bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.pem", pki.leaf.fullchain_pem())
        archive.writestr("k.der", pki.leaf.key.private_bytes(*_DER_PKCS8, serialization.NoEncryption()))
    der = serialization.Encoding.DER
    return [
        pki.leaf.fullchain_pem() + pki.leaf.key_pem(b"pw"),
        pki.leaf.cert.public_bytes(der),
        pkcs12.serialize_key_and_certificates(
            b"x",
            pki.leaf.key,  # type: ignore[arg-type]
            pki.leaf.cert,
            [pki.inter.cert],
            serialization.BestAvailableEncryption(b"pw"),
        ),
        pkcs7.serialize_certificates([pki.leaf.cert, pki.inter.cert], der),
        buffer.getvalue(),
        pki.leaf.key.private_bytes(*_DER_PKCS8, serialization.BestAvailableEncryption(b"pw")),
    ]


_DER_PKCS8 = (serialization.Encoding.DER, serialization.PrivateFormat.PKCS8)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_damaged_inputs_only_ever_raise_our_errors(pki: PKI) -> None:
    # flipped bytes, holes and cuts in every format: each read either succeeds or raises one of
    # our errors naming the input, never a third-party exception that would print a traceback
    rng = random.Random(20240601)
    seeds = _seeds(pki)
    refused = 0
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(data))
            match rng.randrange(3):
                case 0:
                    data[at] = rng.randrange(256)
                case 1:
                    del data[at : at + rng.randrange(1, 50)]
                case _:
                    del data[at:]
            if not data:
                break
        try:
            read_bytes("damaged.bin", bytes(data), passwords=[b"pw"])
        except CertfleetError as exc:
            assert exc.source is not None
            assert exc.source.startswith("damaged.bin")
            assert exc.exit_code is ExitCode.BAD_INPUT
            refused += 1
    assert refused > 2000  # most damage is noticed
