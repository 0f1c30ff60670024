"""Every kind of bad input gets one line naming the file and what is wrong, and exit code 2."""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from conftest import PKI


def _zip(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def _broken_base64(pki: PKI) -> bytes:
    lines = pki.inter.cert_pem().split(b"\n")
    lines[2] = b"@@" + lines[2][2:]
    return b"\n".join(lines)  # alone: nothing else in the file is usable


def _pfx(pki: PKI) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"web",
        pki.leaf.key,  # type: ignore[arg-type]
        pki.leaf.cert,
        None,
        serialization.BestAvailableEncryption(b"right"),
    )


_BAD: dict[str, tuple[str, Callable[[PKI], bytes], str]] = {
    "truncated-der": (
        "leaf.cer",
        lambda p: p.leaf.cert.public_bytes(serialization.Encoding.DER)[:200],
        "leaf.cer: DER certificate: cut short (200 of ",
    ),
    "truncated-pem": (
        "leaf.pem",
        lambda p: p.leaf.cert_pem()[:300],
        "leaf.pem: block 1 (CERTIFICATE): no END line; the file is cut short",
    ),
    "random": (
        "random.bin",
        lambda p: random.Random(7).randbytes(2048),
        "random.bin: not a certificate, key, CSR, PKCS#7, PKCS#12 or zip",
    ),
    "empty": ("empty.crt", lambda p: b"", "empty.crt: empty file"),
    "wrong-password": ("micollab.pfx", _pfx, "micollab.pfx: wrong password, or not a PKCS#12 file"),
    "zip-bomb": (
        "bomb.zip",
        lambda p: _zip(("cert.pem", bytes(9 * 1024 * 1024))),
        "bomb.zip!cert.pem: compression ratio over 200:1; refused as a zip bomb",
    ),
    "zip-traversal": (
        "evil.zip",
        lambda p: _zip(("cert.pem", p.leaf.cert_pem()), ("../../etc/passwd", b"root:x:0:0")),
        "evil.zip!../../etc/passwd: unsafe path in zip (absolute, or with '..'); the whole zip is refused",
    ),
    "fifty-megabytes": (
        "huge.pem",
        lambda p: bytes(50 * 1000 * 1000),
        "huge.pem: larger than 20 MiB; not a certificate package",
    ),
    "broken-base64": ("bundle.pem", _broken_base64, "bundle.pem: block 1 (CERTIFICATE): broken base64"),
}


@pytest.mark.parametrize("case", list(_BAD))
def test_bad_input_is_one_line_and_exit_code_2(
    case: str, pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Any
) -> None:
    name, make, expected = _BAD[case]
    monkeypatch.chdir(tmp_path)
    Path(name).write_bytes(make(pki))

    result = cli("inspect", name, "--password", "wrong")

    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert lines[0].startswith(f"error: {expected}")
    assert "Traceback" not in result.err
    assert all(line.startswith(("error:", "hint:")) for line in lines)
