"""Every kind of bad input gets exit 2 and one line naming the file and what is wrong; never a traceback."""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

# each maker writes the bad input under the folder and returns its path and the words the error must hold
Maker = Callable[[Path, Any], tuple[Path, str]]


def _truncated_pem(folder: Path, pki: Any) -> tuple[Path, str]:
    path = folder / "truncated.pem"
    path.write_bytes(pki.leaf.cert_pem()[:300])
    return path, "cut short"


def _truncated_der(folder: Path, pki: Any) -> tuple[Path, str]:
    path = folder / "truncated.cer"
    path.write_bytes(pki.leaf.cert.public_bytes(serialization.Encoding.DER)[:200])
    return path, "cut short"


def _random(folder: Path, pki: Any) -> tuple[Path, str]:
    path = folder / "random.crt"
    path.write_bytes(b"\x8f\x13" + bytes(range(256)) * 8)
    return path, "not a certificate, key, CSR"


def _empty(folder: Path, pki: Any) -> tuple[Path, str]:
    path = folder / "empty.pem"
    path.write_bytes(b"")
    return path, "empty file"


def _wrong_pfx_password(folder: Path, pki: Any) -> tuple[Path, str]:
    path = folder / "micollab.pfx"
    encryption = serialization.BestAvailableEncryption(b"the-right-one")
    path.write_bytes(pkcs12.serialize_key_and_certificates(b"x", pki.leaf.key, pki.leaf.cert, None, encryption))
    return path, "wrong password, or not a PKCS#12 file"


def _wrong_key_password(folder: Path, pki: Any) -> tuple[Path, str]:
    path = folder / "encrypted.key"
    path.write_bytes(pki.leaf.key_pem(b"the-right-one"))
    return path, "wrong password"


def _zip_bomb(folder: Path, pki: Any) -> tuple[Path, str]:
    path = folder / "package.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("certificate.crt", pki.leaf.cert_pem())
        z.writestr("bundle.crt", b"\0" * (20 * 1024 * 1024))
    path.write_bytes(buffer.getvalue())
    return path, "zip bomb"


def _zip_traversal(folder: Path, pki: Any) -> tuple[Path, str]:
    path = folder / "traversal.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("certificate.crt", pki.leaf.cert_pem())
        z.writestr("../../../etc/cron.d/evil.pem", pki.leaf.cert_pem())
    return path, "unsafe path"


def _huge(folder: Path, pki: Any) -> tuple[Path, str]:
    path = folder / "huge.pem"
    with path.open("wb") as fh:
        fh.write(b"-----BEGIN CERTIFICATE-----\n")
        fh.write(b"QUFB" * (50 * 1024 * 1024 // 4))
    return path, "larger than 20 MiB"


def _broken_base64(folder: Path, pki: Any) -> tuple[Path, str]:
    path = folder / "broken64.pem"
    lines = pki.leaf.cert_pem().decode().splitlines()
    lines[3] = lines[3][:10] + "!!*!" + lines[3][14:]
    path.write_text("\n".join(lines) + "\n")
    return path, "broken base64"


def _changed(pki: Any, old: bytes, new: bytes) -> bytes:
    der = pki.leaf.cert.public_bytes(serialization.Encoding.DER)
    assert der.count(old) == 1
    changed = der.replace(old, new)
    return b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(changed) + b"-----END CERTIFICATE-----\n"


def _unknown_version(folder: Path, pki: Any) -> tuple[Path, str]:
    # cryptography refuses it with its own exception, not a ValueError
    path = folder / "version33.pem"
    path.write_bytes(_changed(pki, b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x21"))
    return path, "damaged"


def _bit_string_name(folder: Path, pki: Any) -> tuple[Path, str]:
    # the leaf's common name as a BIT STRING: cryptography decodes that name with a TypeError
    path = folder / "bitstring-name.pem"
    cn = pki.leaf.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.encode()
    assert len(cn) < 127
    path.write_bytes(
        _changed(
            pki, b"\x55\x04\x03\x0c" + bytes([len(cn)]) + cn, b"\x55\x04\x03\x03" + bytes([len(cn)]) + b"\x00" + cn[1:]
        )
    )
    return path, "does not decode"


def _missing(folder: Path, pki: Any) -> tuple[Path, str]:
    return folder / "not-there.pem", "No such file"


def _folder(folder: Path, pki: Any) -> tuple[Path, str]:
    path = folder / "a-folder.pem"
    path.mkdir()
    return path, "is a folder"


KINDS: dict[str, Maker] = {
    "truncated-pem": _truncated_pem,
    "truncated-der": _truncated_der,
    "random-bytes": _random,
    "empty": _empty,
    "wrong-pfx-password": _wrong_pfx_password,
    "wrong-key-password": _wrong_key_password,
    "zip-bomb": _zip_bomb,
    "zip-path-traversal": _zip_traversal,
    "50-MB-file": _huge,
    "broken-base64": _broken_base64,
    "unknown-version": _unknown_version,
    "bit-string-name": _bit_string_name,
    "missing-file": _missing,
    "folder": _folder,
}


def _check_one_line(err: str, path: Path, words: str) -> None:
    lines = err.splitlines()
    assert lines, "nothing on stderr"
    assert lines[0].startswith(f"error: {path}"), lines[0]  # the file (or "file.zip!member") comes first
    assert words in lines[0]
    assert len(lines) <= 2
    if len(lines) == 2:
        assert lines[1].startswith("hint: ")
    assert "Traceback" not in err


def _command(command: str, path: Path, folder: Path, pki: Any) -> list[str | Path]:
    root = pki.root_file(folder)
    password = ["--password", "not-the-right-one"]
    if command == "inspect":
        return ["inspect", path, *password]
    if command == "verify":
        return ["verify", path, "--trust-only", root, *password]
    if command == "chain":
        return ["chain", path, "--trust-only", root, "--no-fetch", *password]
    if command == "convert":
        return ["convert", path, "--to", "nginx", "--out", folder / "out", "--trust-only", root, *password]
    return ["match", path, *password]


@pytest.mark.parametrize("command", ["inspect", "verify", "chain", "convert", "match"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_input_is_exit_2_with_one_line(cli: Any, pki: Any, tmp_path: Path, kind: str, command: str) -> None:
    path, words = KINDS[kind](tmp_path, pki)
    result = cli(*_command(command, path, tmp_path, pki))
    assert result.code == 2, (result.out, result.err)
    _check_one_line(result.err, path, words)
    assert result.out == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_input_as_a_real_process(cli_proc: Any, pki: Any, tmp_path: Path, kind: str) -> None:
    path, words = KINDS[kind](tmp_path, pki)
    result = cli_proc("inspect", path, env={"CERTFLEET_PASSWORD": "not-the-right-one"})
    assert result.code == 2
    _check_one_line(result.err, path, words)


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_leaf_in_a_batch_is_reported_and_the_rest_checked(cli: Any, pki: Any, tmp_path: Path, kind: str) -> None:
    path, words = KINDS[kind](tmp_path, pki)
    good = tmp_path / "good.pem"
    good.write_bytes(pki.leaf.cert_pem())
    inter = tmp_path / "inter.pem"
    inter.write_bytes(pki.inter.cert_pem())
    root = pki.root_file(tmp_path)
    result = cli("verify", "--each", good, path, good, "--untrusted", inter, "--trust-only", root, "-p", "wrong")
    assert result.code == 2
    lines = result.out.splitlines()
    assert lines[0].startswith("valid") and lines[2].startswith("valid")
    assert lines[1].startswith(f"error    {path}: ")
    assert words in lines[1]
    assert lines[-1] == "3 leaves: 2 valid, 0 invalid, 1 unreadable"
    assert result.err.splitlines() == [f"error: {path}: {lines[1].split(': ', 1)[1]}"]


def test_right_password_from_each_source_reads_the_pfx(
    cli: Any, pki: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = _wrong_pfx_password(tmp_path, pki)
    pw_file = tmp_path / "pw.txt"
    pw_file.write_text("the-right-one\n")
    assert cli("inspect", path, "--password", "nope", "--password", "the-right-one").code == 0
    assert cli("inspect", path, "--password-file", pw_file).code == 0
    monkeypatch.setenv("CERTFLEET_PASSWORD", "the-right-one")
    assert cli("inspect", path).code == 0
    monkeypatch.delenv("CERTFLEET_PASSWORD")
    missing = cli("inspect", path)
    assert missing.code == 2
    assert "a password is needed" in missing.err


@pytest.mark.parametrize(
    "args",
    [
        ["verify"],
        ["verify", "x.pem", "--at"],
        ["nosuchcommand"],
        ["convert", "x.pem", "--out", "y"],
        ["names", "a.example.com", "--limit", "0"],
    ],
)
def test_usage_errors_are_exit_2(cli: Any, args: list[str]) -> None:
    result = cli(*args)
    assert result.code == 2
    assert "Traceback" not in result.err
