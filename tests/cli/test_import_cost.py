"""What ``verify --each`` loads at start in its common case, and the shortcut that reads one PEM
certificate without the format readers, held to the answers of the full reader."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet import testing
from certfleet.certinfo import fingerprint
from certfleet.errors import CertfleetError
from certfleet.formats import read_pool
from certfleet.trust import _lone_pem_certificate, load_trust, read_certificates

# what only other inputs need: PKCS#7, PKCS#12, keys, zips, the default and system roots, a
# --name or a wildcard (certfleet's naming rules), names that are not plain ASCII host names
# (IDNA), wildcards (the public suffix list)
_NOT_AT_START = {
    "certfleet.names",
    "certfleet.formats",
    "certfleet.formats._pkcs7",
    "certfleet.formats._pkcs12",
    "certfleet.formats._keys",
    "certfleet.formats._zip",
    "cryptography.hazmat.primitives.serialization",
    "zipfile",
    "email.message",
    "certifi",
    "ssl",
    "idna",
    "publicsuffixlist",
}


@dataclass(frozen=True)
class Files:
    root: Path
    inter: Path
    leaves: list[Path]
    names: list[str]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("start")
    root = testing.TestCA.root("Start Root")
    inter = root.intermediate("Start Intermediate")
    names = ["host1.example.test", "host2.example.test"]
    leaves = []
    for i, name in enumerate(names):
        path = folder / f"leaf{i}.pem"
        path.write_bytes(inter.leaf(name, f"10.0.0.{i}").cert_pem())
        leaves.append(path)
    (folder / "root.pem").write_bytes(root.cert_pem())
    (folder / "inter.pem").write_bytes(inter.cert_pem())
    return Files(folder / "root.pem", folder / "inter.pem", leaves, names)


def _run_fresh(code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it leaves its answer in ``result``, returned with ``sys.modules``."""
    probe = f"import json, sys\n{code}\nprint(json.dumps({{'result': result, 'modules': sorted(sys.modules)}}))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return out


def test_each_starts_without_the_readers_of_other_inputs(files: Files) -> None:
    args = ["verify", "--each", *map(str, files.leaves)]
    args += ["--untrusted", str(files.inter), "--trust-only", str(files.root), "--json"]
    fresh = _run_fresh(
        "import contextlib, io\n"
        "from certfleet.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    code = main({args!r})\n"
        "result = [code, out.getvalue()]"
    )
    code, out = fresh["result"]
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [(r["file"], r["name"], r["valid"]) for r in records] == [
        (str(path), name, True) for path, name in zip(files.leaves, files.names, strict=True)
    ]
    loaded = set(fresh["modules"])
    assert "certfleet.verify" in loaded
    assert not loaded & _NOT_AT_START


def test_one_pem_certificate_of_roots_or_intermediates_needs_no_format_reader(files: Files) -> None:
    fresh = _run_fresh(
        "from pathlib import Path\n"
        "from certfleet.certinfo import fingerprint\n"
        "from certfleet.cli._inputs import load_trust_files, load_untrusted_files\n"
        f"store = load_trust_files([], [Path({str(files.root)!r})], False)\n"
        f"inter = load_untrusted_files([Path({str(files.inter)!r}), Path({str(files.inter)!r})])\n"
        "result = [[fingerprint(c) for c in store.certs], [fingerprint(c) for c in inter], store.source]"
    )
    roots, inter, source = fresh["result"]
    expected_root = read_pool([(str(files.root), files.root.read_bytes())]).certificates[0].cert
    expected_inter = read_pool([(str(files.inter), files.inter.read_bytes())]).certificates[0].cert
    assert roots == [fingerprint(expected_root)]
    assert inter == [fingerprint(expected_inter)]  # the same file twice: its certificate once
    assert source == str(files.root)
    assert not {m for m in fresh["modules"] if m.startswith("certfleet.formats")}


# --- the shortcut gives what the full reader gives ---------------------------------------------------

_ROOT = testing.TestCA.root("Shortcut Root")
_INTER = _ROOT.intermediate("Shortcut Intermediate")
_PEM = _INTER.cert_pem()
_DER = _INTER.cert.public_bytes(serialization.Encoding.DER)
_BODY = _PEM.split(b"\n", 1)[1].rsplit(b"-----END", 1)[0]


def _zip(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


# (what the file is, its bytes, whether the shortcut reads it)
_FILES = [
    ("plain", _PEM, True),
    ("crlf", _PEM.replace(b"\n", b"\r\n"), True),
    ("utf-8 bom", b"\xef\xbb\xbf" + _PEM, True),
    ("blank lines first", b"\n\n  \n" + _PEM, True),
    ("text after", _PEM + b"issued by the shortcut CA\n", True),
    ("spaces in the base64", _PEM.replace(_BODY, _BODY.replace(b"\n", b" \n")), True),
    ("the same one twice", _PEM + _PEM, False),
    ("a chain", _ROOT.cert_pem() + _PEM, False),
    ("text first", b"subject=CN = Shortcut Intermediate\n" + _PEM, False),
    ("a header line", _PEM.replace(b"-----\n", b"-----\nComment: exported\n\n", 1), False),
    ("trusted certificate", _PEM.replace(b" CERTIFICATE", b" TRUSTED CERTIFICATE"), False),
    ("no line end after BEGIN", _PEM.replace(b"-----\n", b"----- \n", 1), False),
    ("larger than the shortcut reads", _PEM + b"\n" * (70 * 1024), False),
    ("der", _DER, False),
    ("zip of the PEM", _zip("inter.pem", _PEM), False),
    ("broken base64", b"-----BEGIN CERTIFICATE-----\nAAAA!!!!\n-----END CERTIFICATE-----\n", False),
    ("no END line", _PEM.rsplit(b"-----END", 1)[0], False),
    ("not a certificate inside", b"-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n", False),
    (
        "cut short",
        b"-----BEGIN CERTIFICATE-----\n" + _BODY[: len(_BODY) // 2] + b"\n-----END CERTIFICATE-----\n",
        False,
    ),
    ("empty", b"", False),
]


def _full(data: bytes) -> list[x509.Certificate] | tuple[type[CertfleetError], str, str | None]:
    try:
        return [item.cert for item in read_pool([("inter.pem", data)]).unique_certificates()]
    except CertfleetError as exc:
        return type(exc), str(exc), exc.hint


def _short(data: bytes) -> list[x509.Certificate] | tuple[type[CertfleetError], str, str | None]:
    try:
        return read_certificates([("inter.pem", data)])
    except CertfleetError as exc:
        return type(exc), str(exc), exc.hint


@pytest.mark.parametrize(("what", "data", "shortcut"), _FILES, ids=[f[0] for f in _FILES])
def test_read_certificates_gives_what_the_full_reader_gives(what: str, data: bytes, shortcut: bool) -> None:
    assert (_lone_pem_certificate(data) is not None) is shortcut
    assert _short(data) == _full(data)


@pytest.mark.parametrize(("what", "data", "shortcut"), _FILES, ids=[f[0] for f in _FILES])
def test_trust_only_gives_what_the_full_reader_gives(what: str, data: bytes, shortcut: bool) -> None:
    full = _full(data)
    try:
        store = load_trust(trust_only=[("inter.pem", data)])
    except CertfleetError as exc:
        assert (type(exc), str(exc), exc.hint) == full
        return
    assert isinstance(full, list)
    assert list(store.certs) == full


def test_read_certificates_keeps_the_order_and_drops_repeats() -> None:
    inputs = [("inter.pem", _PEM), ("chain.pem", _ROOT.cert_pem() + _PEM), ("root.pem", _ROOT.cert_pem())]
    assert read_certificates(inputs) == [_INTER.cert, _ROOT.cert]
    assert read_certificates([]) == []
