"""A generated corpus: a few hundred files, odd ones among ordinary ones, through inspect, chain
and verify, as an administrator would run them over whatever lies around.

Whatever the file: the exit is 0, 1 or 2, never a traceback nor a Python warning, and a refusal
(exit 2) is one line that names the file and the item in it. Each shape says which commands must
read it and which must refuse it, and with what words.
"""

from __future__ import annotations

import datetime as dt
import gc
import io
import random
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfleet.testing import TestCA, make_key
from support.formats import openssl
from support.oddities import (
    COMMON_NAME,
    COUNTRY,
    EDI_PARTY_NAME,
    PRINTABLE,
    UTF8,
    X400_ADDRESS,
    crl,
    csr_with_extensions,
    der_of,
    dns,
    dsa_inherited,
    leaf_with_san,
    leaf_with_subject,
    pem,
    san_extension,
    with_extension_value,
)

FILES = 240  # a few hundred: every shape several times over, in < 30 s for the three commands
PASSWORD = "corpus-pw"
COMMANDS = ("inspect", "chain", "verify")
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAMAGED_KEY = (
    b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
)


@dataclass(frozen=True)
class Expect:
    """Per command: None when the file must be read (exit 0 or 1), else the words its refusal holds."""

    inspect: str | None = None
    chain: str | None = None
    verify: str | None = None

    def of(self, command: str) -> str | None:
        value: str | None = getattr(self, command)
        return value


READ = Expect()
NO_CERTIFICATE = Expect(chain="holds no certificate", verify="holds no certificate")


def refused(words: str) -> Expect:
    return Expect(words, words, words)


@dataclass
class World:
    """The PKI every shape draws from, and the costly pieces made once."""

    root: TestCA
    inter: TestCA
    rng: random.Random
    dsa_der: bytes
    dsa_pfx: bytes
    not_a_ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]

    def leaf(self) -> Any:
        name = f"host{self.rng.randrange(10_000)}.example.test"
        key = self.rng.choice(["ec:p256", "ec:p256", "ec:p384"])
        return self.inter.leaf(name, f"alt{self.rng.randrange(100)}.example.test", key=key)


Shape = Callable[[World], tuple[bytes, Expect]]


def _text(data: bytes, world: World) -> bytes:
    """Ordinary variation: Windows line ends, words around the blocks."""
    if world.rng.random() < 0.3:
        data = data.replace(b"\n", b"\r\n")
    if world.rng.random() < 0.3:
        data = b"subject=CN = something\nissuer=CN = something else\n" + data + b"\nend of bundle\n"
    return data


# --- ordinary files ------------------------------------------------------------------------------


def leaf_pem(w: World) -> tuple[bytes, Expect]:
    return _text(w.leaf().cert_pem(), w), READ


def fullchain(w: World) -> tuple[bytes, Expect]:
    return _text(w.leaf().fullchain_pem(), w), READ


def chain_out_of_order(w: World) -> tuple[bytes, Expect]:
    leaf = w.leaf()
    return w.root.cert_pem() + leaf.cert_pem() + w.inter.cert_pem(), READ


def leaf_and_key(w: World) -> tuple[bytes, Expect]:
    leaf = w.leaf()
    return _text(leaf.key_pem() + leaf.fullchain_pem(), w), READ


def der_leaf(w: World) -> tuple[bytes, Expect]:
    return der_of(w.leaf().cert), READ


def pkcs7_bundle(w: World) -> tuple[bytes, Expect]:
    leaf = w.leaf()
    encoding = w.rng.choice([serialization.Encoding.DER, serialization.Encoding.PEM])
    return pkcs7.serialize_certificates([leaf.cert, w.inter.cert], encoding), READ


def pfx(w: World) -> tuple[bytes, Expect]:
    leaf = w.leaf()
    encryption = serialization.BestAvailableEncryption(PASSWORD.encode())
    return pkcs12.serialize_key_and_certificates(b"web", leaf.key, leaf.cert, [w.inter.cert], encryption), READ  # type: ignore[arg-type]


def zip_package(w: World) -> tuple[bytes, Expect]:
    leaf = w.leaf()
    return _zip(("server.crt", leaf.cert_pem()), ("bundle.crt", w.inter.cert_pem()), ("README.txt", b"hello")), READ


def csr_file(w: World) -> tuple[bytes, Expect]:
    key = make_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csr.example.test")]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("csr.example.test")]), critical=False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return csr.public_bytes(serialization.Encoding.PEM), NO_CERTIFICATE


# --- odd certificates and fields --------------------------------------------------------------------


def san_x400(w: World) -> tuple[bytes, Expect]:
    cert = leaf_with_san(w.inter, dns("x400.example.test"), X400_ADDRESS)
    return pem("CERTIFICATE", der_of(cert)) + w.inter.cert_pem(), READ


def san_edi(w: World) -> tuple[bytes, Expect]:
    cert = leaf_with_san(w.inter, EDI_PARTY_NAME, dns("edi.example.test"))
    return pem("CERTIFICATE", der_of(cert)), READ


def extension_twice(w: World) -> tuple[bytes, Expect]:
    leaf = w.leaf().cert
    twice = with_extension_value(w.inter, leaf, bytes.fromhex("551d25"), _eku_value(), twice=True)
    return pem("CERTIFICATE", der_of(twice)) + w.inter.cert_pem(), READ


def extension_broken(w: World) -> tuple[bytes, Expect]:
    leaf = w.leaf().cert
    broken = with_extension_value(w.inter, leaf, bytes.fromhex("551d13"), b"\x30\x03\x01\x01")
    return pem("CERTIFICATE", der_of(broken)) + w.inter.cert_pem(), READ


def csr_twice(w: World) -> tuple[bytes, Expect]:
    csr = csr_with_extensions(san_extension("a.example.test"), san_extension("b.example.test"))
    return csr.public_bytes(serialization.Encoding.PEM), NO_CERTIFICATE


def country_code(w: World) -> tuple[bytes, Expect]:
    country = w.rng.choice([b"USA", b"U", b"CAN"])
    cert = leaf_with_subject(
        w.inter, [(COUNTRY, PRINTABLE, country), (COMMON_NAME, UTF8, b"c.example.test")], "c.example.test"
    )
    return pem("CERTIFICATE", der_of(cert)) + w.inter.cert_pem(), READ


def old_long_lived(w: World) -> tuple[bytes, Expect]:
    start = dt.datetime(2014, 5, 1, tzinfo=dt.UTC)
    return w.inter.leaf("old.example.test", not_before=start, days=w.rng.choice([730, 1095, 1900])).cert_pem(), READ


def no_san_through_not_a_ca(w: World) -> tuple[bytes, Expect]:
    inter, key = w.not_a_ca
    leaf_key = make_key()
    leaf = (
        _builder("nosan.example.test", inter.subject, leaf_key.public_key())  # type: ignore[arg-type]
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, inter)), READ


def precertificate(w: World) -> tuple[bytes, Expect]:
    key = make_key()
    cert = (
        _builder("precert.example.test", w.inter.cert.subject, key.public_key())  # type: ignore[arg-type]
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("precert.example.test")]), critical=False)
        .add_extension(x509.PrecertPoison(), critical=True)
        .sign(w.inter.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert.public_bytes(serialization.Encoding.PEM) + w.inter.cert_pem(), READ


def issuer_in_capitals(w: World) -> tuple[bytes, Expect]:
    upper = x509.Name([x509.NameAttribute(a.oid, str(a.value).upper()) for a in w.inter.cert.subject])
    key = make_key()
    cert = (
        _builder("caps.example.test", upper, key.public_key())  # type: ignore[arg-type]
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("caps.example.test")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(w.inter.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert.public_bytes(serialization.Encoding.PEM) + w.inter.cert_pem(), READ


# --- files with an unreadable item beside readable ones ------------------------------------------------


def damaged_key_beside(w: World) -> tuple[bytes, Expect]:
    return w.leaf().fullchain_pem() + DAMAGED_KEY, READ


def junk_between(w: World) -> tuple[bytes, Expect]:
    leaf = w.leaf()
    junk = b"-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBBQUAMA0x\n-----END CERTIFICATE-----\n"
    return leaf.cert_pem() + junk + w.inter.cert_pem(), READ


def missing_end_line(w: World) -> tuple[bytes, Expect]:
    leaf = w.leaf()
    return leaf.cert_pem()[:-30] + b"\n" + w.inter.cert_pem(), READ  # block 1 has no END line


def encrypted_key_beside(w: World) -> tuple[bytes, Expect]:
    leaf = w.leaf()
    return leaf.fullchain_pem() + leaf.key_pem(b"another password"), READ


def crl_beside(w: World) -> tuple[bytes, Expect]:
    return w.leaf().fullchain_pem() + crl(w.inter).public_bytes(serialization.Encoding.PEM), READ


def der_junk_between(w: World) -> tuple[bytes, Expect]:
    return der_of(w.leaf().cert) + b"\x30\x02\x05\x00 -- junk --" + der_of(w.inter.cert), READ


def zip_damaged_member(w: World) -> tuple[bytes, Expect]:
    return _zip(("cert.pem", w.leaf().cert_pem()), ("key.pem", DAMAGED_KEY)), READ


def dsa_beside(w: World) -> tuple[bytes, Expect]:
    return w.leaf().cert_pem() + pem("CERTIFICATE", w.dsa_der), READ


# --- files with nothing usable: refused, naming the file and the item ----------------------------------------


def crl_pem(w: World) -> tuple[bytes, Expect]:
    return crl(w.root).public_bytes(serialization.Encoding.PEM), refused(
        "block 1 (X509 CRL): a certificate revocation list"
    )


def crl_der(w: World) -> tuple[bytes, Expect]:
    return crl(w.root).public_bytes(serialization.Encoding.DER), refused("DER CRL: a certificate revocation list")


def dsa_der(w: World) -> tuple[bytes, Expect]:
    return w.dsa_der, refused("DER certificate: uses DSA, which no TLS client accepts")


def dsa_pem(w: World) -> tuple[bytes, Expect]:
    return pem("CERTIFICATE", w.dsa_der), refused("block 1 (CERTIFICATE): uses DSA, which no TLS client accepts")


def dsa_pfx(w: World) -> tuple[bytes, Expect]:
    return w.dsa_pfx, refused("PKCS#12: the password is right, but a certificate in it uses DSA")


def encrypted_key_alone(w: World) -> tuple[bytes, Expect]:
    return w.leaf().key_pem(b"not the corpus password"), refused("block 1 (ENCRYPTED PRIVATE KEY): wrong password")


def truncated_pem(w: World) -> tuple[bytes, Expect]:
    data = w.leaf().cert_pem()
    return data[: w.rng.randrange(60, len(data) - 40)], refused("block 1 (CERTIFICATE)")


def truncated_der(w: World) -> tuple[bytes, Expect]:
    data = der_of(w.leaf().cert)
    return data[: w.rng.randrange(20, len(data) - 1)], refused("DER certificate: cut short")


def random_bytes(w: World) -> tuple[bytes, Expect]:
    return b"\x8f" + w.rng.randbytes(w.rng.randrange(10, 3000)), refused("not a certificate, key, CSR")


def empty(w: World) -> tuple[bytes, Expect]:
    return w.rng.choice([b"", b"\n\n", b"   \r\n"]), refused("empty file")


def x25519_key(w: World) -> tuple[bytes, Expect]:
    key = x25519.X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key, refused("block 1 (PRIVATE KEY): an X25519 key cannot serve")


def key_only(w: World) -> tuple[bytes, Expect]:
    return w.leaf().key_pem(), Expect(chain="holds no certificate, only a private key", verify="holds no certificate")


def unknown_version(w: World) -> tuple[bytes, Expect]:
    der = der_of(w.leaf().cert)
    return pem("CERTIFICATE", der.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x21", 1)), refused(
        "block 1 (CERTIFICATE): damaged"
    )


def zip_of_nothing(w: World) -> tuple[bytes, Expect]:
    return _zip(("README.txt", b"thanks for your order"), ("invoice.pdf", b"%PDF-1.4")), refused(
        "zip holds no certificate"
    )


SHAPES: tuple[Shape, ...] = (
    leaf_pem, fullchain, chain_out_of_order, leaf_and_key, der_leaf, pkcs7_bundle, pfx, zip_package, csr_file,
    san_x400, san_edi, extension_twice, extension_broken, csr_twice, country_code, old_long_lived,
    no_san_through_not_a_ca, precertificate, issuer_in_capitals,
    damaged_key_beside, junk_between, missing_end_line, encrypted_key_beside, crl_beside, der_junk_between,
    zip_damaged_member, dsa_beside,
    crl_pem, crl_der, dsa_der, dsa_pem, dsa_pfx, encrypted_key_alone, truncated_pem, truncated_der, random_bytes,
    empty, x25519_key, key_only, unknown_version, zip_of_nothing,
)  # fmt: skip


# --- helpers ----------------------------------------------------------------------------------------


def _zip(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def _eku_value() -> bytes:
    return x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]).public_bytes()


def _builder(cn: str, issuer: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=60))
    )


@dataclass(frozen=True)
class Sample:
    path: Path
    shape: str
    expect: Expect


@dataclass
class Corpus:
    samples: list[Sample]
    root: Path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    folder = tmp_path_factory.mktemp("corpus")
    root = TestCA.root("Corpus Root")
    inter = root.intermediate("Corpus Intermediate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # making the odd files is not under test (cryptography warns about DSA)
        dsa, _ = dsa_inherited(key_size=1024)
    (folder / "dsa.pem").write_bytes(pem("CERTIFICATE", dsa))
    openssl(
        "pkcs12", "-export", "-nokeys", "-in", "dsa.pem", "-passout", f"pass:{PASSWORD}", "-out", "dsa.p12", cwd=folder
    )
    not_a_ca_key = ec.generate_private_key(ec.SECP256R1())
    not_a_ca = (
        _builder("Not A CA", root.cert.subject, not_a_ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(root.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    world = World(root, inter, random.Random(15), dsa, (folder / "dsa.p12").read_bytes(), (not_a_ca, not_a_ca_key))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # making the odd files is not under test (cryptography warns about DSA)
        samples = []
        for number in range(FILES):
            shape = SHAPES[number % len(SHAPES)] if number < 2 * len(SHAPES) else world.rng.choice(SHAPES)
            data, expect = shape(world)
            path = folder / f"{number:03d}-{shape.__name__}.{world.rng.choice(['pem', 'crt', 'cer', 'bin'])}"
            path.write_bytes(data)
            samples.append(Sample(path, shape.__name__, expect))
    root_file = folder / "root.pem"
    root_file.write_bytes(root.cert_pem())
    return Corpus(samples, root_file)


def _args(command: str, sample: Sample, root: Path) -> list[str | Path]:
    common: list[str | Path] = ["--password", PASSWORD]
    if command == "inspect":
        return ["inspect", sample.path, *common]
    if command == "chain":
        return ["chain", sample.path, "--trust-only", root, "--no-fetch", *common]
    return ["verify", sample.path, "--trust-only", root, *common]


@pytest.mark.parametrize("command", COMMANDS)
def test_the_corpus(cli: Any, corpus: Corpus, command: str, summary_line: Callable[[str], None]) -> None:
    wrong: list[str] = []
    exits: Counter[int] = Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()  # what earlier tests left for the collector (an unclosed temporary file) is not ours
    for sample in corpus.samples:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # what the command does not silence itself is seen here
            result = cli(*_args(command, sample, corpus.root))
        exits[result.code] += 1
        where = f"{sample.path.name} ({command}, exit {result.code})"
        words = sample.expect.of(command)
        if result.code not in (0, 1, 2):
            wrong.append(f"{where}: exit outside 0/1/2: {result.err[:300]}")
        if "Traceback" in result.err or "unexpected error" in result.err:
            wrong.append(f"{where}: {result.err[:300]}")
        if caught or "Warning" in result.err:
            wrong.append(f"{where}: a Python warning: {[str(w.message) for w in caught] or result.err[:300]}")
        first = result.err.splitlines()[0] if result.err else ""
        if words is None and result.code == 2:
            wrong.append(f"{where}: refused, though it holds something usable: {first}")
        if words is not None:
            if result.code != 2:
                wrong.append(f"{where}: read, though it holds nothing usable ({words!r} expected)")
            elif not first.startswith(f"error: {sample.path}: ") or words not in first:
                wrong.append(f"{where}: the refusal does not name the file and {words!r}: {first}")
    shapes = len({s.shape for s in corpus.samples})
    summary_line(
        f"corpus {command}: {len(corpus.samples)} files of {shapes} shapes: "
        + ", ".join(f"{exits[code]} exit {code}" for code in sorted(exits))
    )
    assert not wrong, f"{len(wrong)} wrong answers:\n" + "\n".join(wrong[:40])


def test_the_corpus_is_what_it_says(corpus: Corpus) -> None:
    shapes = Counter(s.shape for s in corpus.samples)
    assert len(corpus.samples) == FILES
    assert set(shapes) == {shape.__name__ for shape in SHAPES}
    assert min(shapes.values()) >= 2
    refusals = sum(1 for s in corpus.samples if s.expect.inspect is not None)
    assert 0.15 < refusals / FILES < 0.5  # unusable files among usable ones, not the other way round
