"""export: every format we write, read back by real peers (openssl, keytool, nginx, haproxy)."""

from __future__ import annotations

import re
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12 as crypto_pkcs12

from certfleet import testing
from certfleet.certinfo import fingerprint
from certfleet.errors import InputError
from certfleet.export import (
    LAYOUTS,
    PKCS12_LEGACY_ROUNDS,
    PKCS12_ROUNDS,
    OutputFormat,
    der,
    key_pem,
    layout_files,
    pem,
    pkcs7,
    pkcs12,
    private_files,
    write_bundle,
)
from certfleet.testing import make_key

PASSWORD = "s3cret pass"  # a space too: the password reaches openssl and keytool unmangled


@dataclass
class Material:
    root: x509.Certificate
    leaf: testing.TestLeaf  # chain: two intermediates, the leaf's issuer first


@pytest.fixture(scope="module", params=["ec:p256", "rsa:2048"])
def material(request: pytest.FixtureRequest) -> Material:
    root = testing.TestCA.root("Export Test Root")
    upper = root.intermediate("Export Upper CA", path_length=None)
    issuing = upper.intermediate("Export Issuing CA")
    leaf = issuing.leaf("www.example.test", "example.test", key=request.param)
    assert [c.subject for c in leaf.chain] == [issuing.cert.subject, upper.cert.subject]
    return Material(root=root.cert, leaf=leaf)


def openssl(*args: str | Path, input: bytes | None = None) -> bytes:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, input=input, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def cert_pubkey(path: Path, *extra: str) -> bytes:
    """The SubjectPublicKeyInfo of the first certificate in ``path``, as openssl writes it."""
    return openssl("x509", "-in", path, "-noout", "-pubkey", *extra)


def key_pubkey(path: Path, *extra: str) -> bytes:
    """The public half of the key in ``path``, as openssl derives it."""
    return openssl("pkey", "-in", path, "-pubout", *extra)


def keytool_list(path: Path) -> str:
    """What Java's keytool says of the PKCS#12 file at ``path`` (opened with PASSWORD)."""
    proc = subprocess.run(
        ["keytool", "-list", "-v", "-keystore", path, "-storetype", "PKCS12", "-storepass", PASSWORD],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def subjects(text: bytes) -> list[str]:
    return re.findall(r"^subject=(.*)$", text.decode(), flags=re.MULTILINE)


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


# --- PEM, DER, PKCS#7 -------------------------------------------------------------------------


def test_pem_is_the_certificates_in_order(material: Material, tmp_path: Path) -> None:
    leaf = material.leaf
    path = write(tmp_path, "bundle.pem", pem(leaf.cert, *leaf.chain))
    assert path.read_bytes().count(b"-----BEGIN CERTIFICATE-----") == 3
    out = openssl("crl2pkcs7", "-nocrl", "-certfile", path)
    listed = openssl("pkcs7", "-print_certs", "-noout", input=out)
    assert subjects(listed) == [
        "CN = www.example.test",
        "O = certfleet tests, CN = Export Issuing CA",
        "O = certfleet tests, CN = Export Upper CA",
    ]
    assert pem() == b""


def test_der_is_read_by_openssl(material: Material, tmp_path: Path) -> None:
    path = write(tmp_path, "leaf.der", der(material.leaf.cert))
    out = openssl("x509", "-inform", "DER", "-in", path, "-noout", "-fingerprint", "-sha256").decode()
    assert out.strip().split("=", 1)[1].replace(":", "").lower() == fingerprint(material.leaf.cert)


@pytest.mark.parametrize("as_der", [False, True])
def test_pkcs7_is_read_by_openssl(material: Material, tmp_path: Path, as_der: bool) -> None:
    leaf = material.leaf
    data = pkcs7([leaf.cert, *leaf.chain], der=as_der)
    assert data.startswith(b"-----BEGIN PKCS7-----") is not as_der
    path = write(tmp_path, "bundle.p7b", data)
    listed = openssl("pkcs7", "-in", path, "-inform", "DER" if as_der else "PEM", "-print_certs", "-noout")
    # the certificates of a PKCS#7 are a SET OF, which DER sorts: the order is the reader's job
    assert sorted(subjects(listed)) == [
        "CN = www.example.test",
        "O = certfleet tests, CN = Export Issuing CA",
        "O = certfleet tests, CN = Export Upper CA",
    ]


def test_pkcs7_needs_a_certificate() -> None:
    with pytest.raises(ValueError, match="at least one"):
        pkcs7([])


# --- keys --------------------------------------------------------------------------------------


def test_key_pem_plain_is_pkcs8(material: Material, tmp_path: Path) -> None:
    data = key_pem(material.leaf.key)
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----")
    path = write(tmp_path, "key.pem", data)
    assert key_pubkey(path) == cert_pubkey(write(tmp_path, "cert.pem", material.leaf.cert_pem()))


def test_key_pem_encrypted_is_aes256_and_openssl_needs_the_password(material: Material, tmp_path: Path) -> None:
    data = key_pem(material.leaf.key, PASSWORD.encode())
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert material.leaf.key_pem() not in data
    path = write(tmp_path, "key.pem", data)
    structure = openssl("asn1parse", "-in", path).decode()
    assert "PBES2" in structure
    assert "aes-256-cbc" in structure
    assert "hmacWithSHA256" in structure
    cert = write(tmp_path, "cert.pem", material.leaf.cert_pem())
    assert key_pubkey(path, "-passin", f"pass:{PASSWORD}") == cert_pubkey(cert)
    wrong = subprocess.run(
        ["openssl", "pkey", "-in", path, "-passin", "pass:wrong", "-noout"], capture_output=True, check=False
    )
    assert wrong.returncode != 0


@pytest.mark.parametrize(("password", "error"), [(b"", "empty password"), (b"x" * 2000, "longer than")])
def test_key_pem_refuses_bad_passwords(password: bytes, error: str) -> None:
    with pytest.raises(InputError, match=error):
        key_pem(make_key(), password)


# --- PKCS#12 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("legacy", "cipher", "mac"),
    [
        (False, f"PBES2, PBKDF2, AES-256-CBC, Iteration {PKCS12_ROUNDS}, PRF hmacWithSHA256", "MAC: sha256"),
        (True, f"pbeWithSHA1And3-KeyTripleDES-CBC, Iteration {PKCS12_LEGACY_ROUNDS}", "MAC: sha1"),
    ],
)
def test_pkcs12_is_read_by_openssl_with_the_algorithms_asked_for(
    material: Material, tmp_path: Path, legacy: bool, cipher: str, mac: str
) -> None:
    leaf = material.leaf
    data = pkcs12(leaf.key, leaf.cert, leaf.chain, password=PASSWORD.encode(), legacy=legacy, friendly_name="web")
    path = write(tmp_path, "web.p12", data)
    info = subprocess.run(
        ["openssl", "pkcs12", "-info", "-in", path, "-passin", f"pass:{PASSWORD}", "-noout"],
        capture_output=True,
        text=True,
        check=True,
    )
    text = info.stdout + info.stderr  # openssl 3.0 prints the structure on stderr
    assert f"PKCS7 Encrypted data: {cipher}" in text
    assert f"Shrouded Keybag: {cipher}" in text
    assert mac in text
    # no -legacy flag: openssl 3 reads it with its default provider
    dumped = openssl("pkcs12", "-in", path, "-passin", f"pass:{PASSWORD}", "-nodes")
    assert dumped.count(b"-----BEGIN CERTIFICATE-----") == 3
    assert b"friendlyName: web" in dumped
    everything = write(tmp_path, "dumped.pem", dumped)
    # the key inside is the leaf's key (openssl puts the leaf first among the certificates)
    assert key_pubkey(everything) == cert_pubkey(everything)
    assert key_pubkey(everything) == cert_pubkey(write(tmp_path, "leaf.pem", leaf.cert_pem()))
    bad = subprocess.run(
        ["openssl", "pkcs12", "-in", path, "-passin", "pass:wrong", "-nodes"], capture_output=True, check=False
    )
    assert bad.returncode != 0


@pytest.mark.parametrize("legacy", [False, True])
def test_pkcs12_is_read_by_java_keytool_with_the_friendly_name_as_alias(
    material: Material, tmp_path: Path, legacy: bool
) -> None:
    leaf = material.leaf
    data = pkcs12(leaf.key, leaf.cert, leaf.chain, password=PASSWORD.encode(), legacy=legacy, friendly_name="micollab")
    path = write(tmp_path, "store.p12", data)
    listed = keytool_list(path)
    assert "Your keystore contains 1 entry" in listed
    assert "Alias name: micollab" in listed
    assert "Entry type: PrivateKeyEntry" in listed
    assert "Certificate chain length: 3" in listed
    assert "Owner: CN=www.example.test" in listed
    wrong = subprocess.run(
        ["keytool", "-list", "-keystore", path, "-storetype", "PKCS12", "-storepass", "wrong-password"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert wrong.returncode != 0


def test_pkcs12_reads_back_in_cryptography(material: Material) -> None:
    leaf = material.leaf
    data = pkcs12(leaf.key, leaf.cert, leaf.chain, password=b"pw", friendly_name="web")
    back = crypto_pkcs12.load_pkcs12(data, b"pw")
    assert back.cert is not None
    assert back.cert.certificate == leaf.cert
    assert back.cert.friendly_name == b"web"
    assert [c.certificate for c in back.additional_certs] == leaf.chain
    assert back.key is not None
    assert back.key.public_key() == leaf.key.public_key()


def test_pkcs12_without_password_is_read_by_openssl(material: Material, tmp_path: Path) -> None:
    leaf = material.leaf
    path = write(tmp_path, "open.p12", pkcs12(leaf.key, leaf.cert, [], password=None))
    dumped = openssl("pkcs12", "-in", path, "-passin", "pass:", "-nodes")
    assert dumped.count(b"-----BEGIN CERTIFICATE-----") == 1
    assert b"PRIVATE KEY-----" in dumped


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"friendly_name": "bad\nname"}, "control characters"),
        ({"friendly_name": "x" * 200}, "1 to 128 characters"),
        ({"friendly_name": "  "}, "1 to 128 characters"),
        ({"password": b""}, "empty password"),
    ],
)
def test_pkcs12_refuses_bad_input(material: Material, kwargs: dict[str, object], error: str) -> None:
    leaf = material.leaf
    args: dict[str, object] = {"password": b"pw", **kwargs}
    with pytest.raises(InputError, match=error):
        pkcs12(leaf.key, leaf.cert, leaf.chain, **args)  # type: ignore[arg-type]


def test_a_key_that_does_not_match_the_leaf_is_never_written(material: Material) -> None:
    leaf = material.leaf
    stray = make_key()
    with pytest.raises(InputError, match="does not match the certificate"):
        pkcs12(stray, leaf.cert, leaf.chain, password=b"pw")
    for kind in LAYOUTS:
        with pytest.raises(InputError, match="does not match the certificate"):
            layout_files(kind, stray, leaf.cert, leaf.chain)


# --- server layouts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        (OutputFormat.APACHE, ["cert.pem", "chain.pem", "privkey.pem"]),
        (OutputFormat.NGINX, ["fullchain.pem", "privkey.pem"]),
        (OutputFormat.PEM, ["cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"]),
        (OutputFormat.HAPROXY, ["combined.pem"]),
    ],
)
def test_layout_files_names_and_content(
    material: Material, tmp_path: Path, kind: OutputFormat, names: list[str]
) -> None:
    leaf = material.leaf
    files = layout_files(kind.value, leaf.key, leaf.cert, leaf.chain)
    assert sorted(files) == sorted(names)
    for name, data in files.items():
        write(tmp_path, name, data)
    root = write(tmp_path, "root.pem", pem(material.root))
    if "chain.pem" in files:
        assert files["chain.pem"] == pem(*leaf.chain)
        openssl("verify", "-CAfile", root, "-untrusted", tmp_path / "chain.pem", tmp_path / "cert.pem")
    if "fullchain.pem" in files:
        assert files["fullchain.pem"] == pem(leaf.cert, *leaf.chain)
        assert fingerprint(x509.load_pem_x509_certificate(files["fullchain.pem"])) == fingerprint(leaf.cert)
    key_file = tmp_path / ("combined.pem" if kind is OutputFormat.HAPROXY else "privkey.pem")
    cert_file = tmp_path / ("cert.pem" if "cert.pem" in files else next(iter(files)))
    assert key_pubkey(key_file) == cert_pubkey(cert_file)
    assert private_files(kind) == {key_file.name}


def test_haproxy_combined_pem_is_leaf_chain_key(material: Material, tmp_path: Path) -> None:
    leaf = material.leaf
    combined = layout_files(OutputFormat.HAPROXY, leaf.key, leaf.cert, leaf.chain)["combined.pem"]
    blocks = re.findall(rb"-----BEGIN ([A-Z ]+)-----", combined)
    assert blocks == [b"CERTIFICATE", b"CERTIFICATE", b"CERTIFICATE", b"PRIVATE KEY"]
    path = write(tmp_path, "combined.pem", combined)
    # openssl x509 reads the first block: the leaf
    out = openssl("x509", "-in", path, "-noout", "-fingerprint", "-sha256").decode()
    assert out.strip().split("=", 1)[1].replace(":", "").lower() == fingerprint(leaf.cert)
    assert key_pubkey(path) == cert_pubkey(path)
    # and haproxy itself loads it
    port = _free_port()
    cfg = write(
        tmp_path,
        "haproxy.cfg",
        f"""global
    maxconn 10
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend tls
    bind 127.0.0.1:{port} ssl crt {path}
    default_backend none
backend none
    server nowhere 127.0.0.1:9
""".encode(),
    )
    proc = subprocess.run(["haproxy", "-c", "-f", cfg], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_haproxy_layout_refuses_an_encrypted_key(material: Material) -> None:
    leaf = material.leaf
    with pytest.raises(InputError, match="HAProxy cannot read an encrypted key"):
        layout_files(OutputFormat.HAPROXY, leaf.key, leaf.cert, leaf.chain, key_password=b"pw")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("encrypted", [False, True])
def test_nginx_layout_is_loaded_by_nginx(material: Material, tmp_path: Path, encrypted: bool) -> None:
    leaf = material.leaf
    files = layout_files(
        OutputFormat.NGINX, leaf.key, leaf.cert, leaf.chain, key_password=PASSWORD.encode() if encrypted else None
    )
    for name, data in files.items():
        write(tmp_path, name, data)
    assert files["privkey.pem"].startswith(
        b"-----BEGIN ENCRYPTED PRIVATE KEY" if encrypted else b"-----BEGIN PRIVATE KEY"
    )
    write(tmp_path, "password.txt", PASSWORD.encode() + b"\n")
    password_line = f"ssl_password_file {tmp_path}/password.txt;" if encrypted else ""
    conf = write(
        tmp_path,
        "nginx.conf",
        f"""pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ }}
http {{
    access_log off;
    client_body_temp_path {tmp_path};
    proxy_temp_path {tmp_path};
    fastcgi_temp_path {tmp_path};
    uwsgi_temp_path {tmp_path};
    scgi_temp_path {tmp_path};
    server {{
        listen 127.0.0.1:{_free_port()} ssl;
        ssl_certificate {tmp_path}/fullchain.pem;
        ssl_certificate_key {tmp_path}/privkey.pem;
        {password_line}
    }}
}}
""".encode(),
    )
    proc = subprocess.run(
        ["nginx", "-t", "-p", tmp_path, "-c", conf], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "test is successful" in proc.stderr


def test_layout_chain_is_empty_when_the_root_issued_the_leaf(tmp_path: Path) -> None:
    root = testing.TestCA.root("Direct Root")
    leaf = root.leaf("direct.example.test")
    files = layout_files(OutputFormat.PEM, leaf.key, leaf.cert, leaf.chain)
    assert files["chain.pem"] == b""
    assert files["fullchain.pem"] == files["cert.pem"]


def test_layout_kind_is_checked(material: Material) -> None:
    leaf = material.leaf
    with pytest.raises(ValueError, match="iis"):
        layout_files("iis", leaf.key, leaf.cert, leaf.chain)
    assert private_files("haproxy") == {"combined.pem"}
    assert key_pem(leaf.key) == layout_files("nginx", leaf.key, leaf.cert, [])["privkey.pem"]
    assert (
        serialization.load_pem_private_key(
            layout_files("apache", leaf.key, leaf.cert, [], key_password=b"pw")["privkey.pem"], b"pw"
        ).public_key()
        == leaf.key.public_key()
    )


# --- write_bundle: the files `convert` and `export` write ---------------------------------------

_FOLDERS = {
    OutputFormat.PEM: {"cert.pem": 0o644, "chain.pem": 0o644, "fullchain.pem": 0o644, "privkey.pem": 0o600},
    OutputFormat.APACHE: {"cert.pem": 0o644, "chain.pem": 0o644, "privkey.pem": 0o600},
    OutputFormat.NGINX: {"fullchain.pem": 0o644, "privkey.pem": 0o600},
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_write_bundle_writes_what_the_peers_read(material: Material, tmp_path: Path, fmt: OutputFormat) -> None:
    leaf = material.leaf
    root = write(tmp_path, "root.pem", pem(material.root))
    # a folder is made with its parents; a file goes into a folder that exists
    out = tmp_path / "new" / "out" if fmt.is_folder else tmp_path / "out"
    password = PASSWORD.encode() if fmt is OutputFormat.PKCS12 else None
    written = write_bundle(fmt, out, leaf.key if fmt.holds_key else None, leaf.cert, leaf.chain, password=password)
    modes = {Path(w.path): 0o600 if w.private else 0o644 for w in written}
    assert {path: _mode(path) for path in modes} == modes
    if fmt.is_folder:
        assert _mode(out) == 0o700
        assert {path.name: mode for path, mode in modes.items()} == _FOLDERS[fmt]
        cert = out / ("fullchain.pem" if fmt is OutputFormat.NGINX else "cert.pem")
        chain = out / ("fullchain.pem" if fmt is OutputFormat.NGINX else "chain.pem")
        assert openssl("verify", "-CAfile", root, "-untrusted", chain, cert).endswith(b": OK\n")
        assert key_pubkey(out / "privkey.pem") == cert_pubkey(cert)
        return
    assert list(modes) == [out]  # one file, whatever the format
    if fmt is OutputFormat.DER:
        subject = openssl("x509", "-inform", "DER", "-in", out, "-noout", "-subject")
        assert subject.strip() == b"subject=CN = www.example.test"
    elif fmt is OutputFormat.PKCS7:
        listed = openssl("pkcs7", "-in", out, "-print_certs", "-noout")
        assert len(subjects(listed)) == 3
    elif fmt is OutputFormat.HAPROXY:
        assert openssl("verify", "-CAfile", root, "-untrusted", out, out).endswith(b": OK\n")
        assert key_pubkey(out) == cert_pubkey(out)
    else:
        dumped = write(tmp_path, "dumped.pem", openssl("pkcs12", "-in", out, "-passin", f"pass:{PASSWORD}", "-nodes"))
        assert key_pubkey(dumped) == cert_pubkey(dumped)
        assert "Certificate chain length: 3" in keytool_list(out)


@pytest.mark.parametrize(
    ("fmt", "kwargs", "error"),
    [
        (OutputFormat.DER, {"password": b"pw"}, "der holds no key, so there is nothing to protect"),
        (OutputFormat.PKCS7, {"password": b"pw"}, "pkcs7 holds no key"),
        (OutputFormat.HAPROXY, {"password": b"pw"}, "HAProxy cannot read an encrypted key"),
        (OutputFormat.NGINX, {"legacy": True}, "--legacy applies to the pkcs12 format only"),
        (OutputFormat.APACHE, {"friendly_name": "web"}, "--friendly-name applies to the pkcs12 format only"),
        (OutputFormat.PKCS12, {"password": b""}, "empty password"),
        (OutputFormat.PEM, {"password": b""}, "empty password"),
    ],
)
def test_write_bundle_refuses_before_writing(
    material: Material, tmp_path: Path, fmt: OutputFormat, kwargs: dict[str, object], error: str
) -> None:
    leaf = material.leaf
    with pytest.raises(InputError, match=error):
        write_bundle(fmt, tmp_path / "out", leaf.key, leaf.cert, leaf.chain, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", [f for f in OutputFormat if f.holds_key])
def test_write_bundle_never_pairs_a_leaf_with_another_key(
    material: Material, tmp_path: Path, fmt: OutputFormat
) -> None:
    leaf = material.leaf
    with pytest.raises(InputError, match="does not match the certificate"):
        write_bundle(fmt, tmp_path / "out", make_key(), leaf.cert, leaf.chain)
    assert not (tmp_path / "out").exists()


def test_write_bundle_folder_and_file_errors(material: Material, tmp_path: Path) -> None:
    leaf = material.leaf
    taken = write(tmp_path, "taken", b"")
    with pytest.raises(InputError, match="exists and is not a folder"):
        write_bundle(OutputFormat.NGINX, taken, leaf.key, leaf.cert, leaf.chain)
    with pytest.raises(ValueError, match="holds the private key"):
        write_bundle(OutputFormat.NGINX, tmp_path / "nginx", None, leaf.cert, leaf.chain)
    # an existing folder is written into; a second write replaces the files whole
    first = write_bundle("nginx", tmp_path / "nginx", leaf.key, leaf.cert, leaf.chain)
    again = write_bundle("nginx", tmp_path / "nginx", leaf.key, leaf.cert, leaf.chain)
    assert first == again
    assert sorted(p.name for p in (tmp_path / "nginx").iterdir()) == ["fullchain.pem", "privkey.pem"]
