"""redact: what a command printed loses every form of key material before it is kept or shown."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certfleet.redact import cap, clean, redact
from conftest import PKI


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    out = {}
    pkcs8, clear = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    for name, key in (("rsa", rsa.generate_private_key(65537, 2048)), ("ec", ec.generate_private_key(ec.SECP256R1()))):
        pem = key.private_bytes(serialization.Encoding.PEM, pkcs8, clear)
        der = key.private_bytes(serialization.Encoding.DER, pkcs8, clear)
        (folder / f"{name}.pem").write_bytes(pem)
        (folder / f"{name}.der").write_bytes(der)
        out[name] = folder / f"{name}.pem"
        out[f"{name}.der"] = folder / f"{name}.der"
    return out


def _sh(command: str, cwd: Path) -> str:
    return subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True, check=False).stdout  # noqa: S602


def _secret_fragments(pem_path: Path) -> list[str]:
    """Pieces of the key as any dump would show them: its base64 lines, its DER in hex."""
    pem = pem_path.read_text()
    der = pem_path.with_suffix(".der").read_bytes()
    lines = [line for line in pem.splitlines() if not line.startswith("-----")]
    return [*lines, base64.b64encode(der).decode()[:40], der.hex()[100:160], der[40:60].hex(":")]


@pytest.mark.parametrize("kind", ["rsa", "ec"])
@pytest.mark.parametrize(
    "command",
    [
        "id; cat {pem}; exit 1",  # the issue's own reproduction
        "openssl pkey -in {pem} -text -noout",
        "openssl pkey -in {pem} -text",
        "base64 -w0 {der}",
        "base64 {der}",
        "sed '1d;$d' {pem}",  # the body without its armour
        "xxd -p {der}",
        "tail -c 300 {pem}",  # only the end of the block was kept
        "head -c 300 {pem}",  # a block whose end never came (a timeout)
    ],
)
def test_no_form_of_a_key_survives(key_files: dict[str, Path], kind: str, command: str) -> None:
    pem = key_files[kind]
    printed = _sh(command.format(pem=pem, der=key_files[f"{kind}.der"]), pem.parent)
    kept = redact(printed)
    assert "PRIVATE KEY" not in kept
    for fragment in _secret_fragments(pem):
        if len(fragment) >= 16:
            assert fragment not in kept, (command, fragment)
    assert "[redacted:" in kept


def test_certificates_are_blocks_too_and_the_rest_stays(pki: PKI) -> None:
    printed = "nginx: testing\n" + pki.leaf.cert_pem().decode() + "nginx: configuration file test is successful\n"
    kept = redact(printed)
    assert kept.startswith("nginx: testing\n[redacted: PEM certificate]")
    assert kept.endswith("nginx: configuration file test is successful\n")


@pytest.mark.parametrize(
    "text",
    [
        'nginx: [emerg] cannot load certificate "/tmp/pytest-of-root/pytest-1/test_deploy0/main/live/fullchain.pem"',
        "/usr/local/lib/python3.11/site-packages/certfleet/fleet/transports/local.py, line 200",
        "uid=0(root) gid=0(root) groups=0(root)",
        "the probe of www.example.test:8443 failed: serves 0123456789abcdef and its chain",
        "AH00558: apache2: Could not reliably determine the server's fully qualified domain name",
        "Job for nginx.service failed because the control process exited with error code.",
    ],
)
def test_ordinary_output_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_cap_keeps_the_end() -> None:
    text = "start " + "x" * 100 + " the reason"
    assert cap(text, 20) == "…" + text[-19:]
    assert len(cap(text, 20)) == 20
    assert cap("short", 20) == "short"
    assert clean("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" + "y" * 50, 30).endswith("y" * 29)
