"""The core commands, each in its human and --json form, with their exit codes."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import os
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet import testing
from certfleet._batch.executor import ForkExecutor, executor_for
from certfleet._batch.options import parse_args
from certfleet.certinfo import fingerprint
from certfleet.cli import _core
from certfleet.cli._each import run_each
from conftest import Result

# the 'cli' and 'cli_proc' fixtures come from conftest.py; they return Result(code, out, err)


@dataclass
class Files:
    folder: Path
    root: Path
    inter: Path
    leaf: Path
    key: Path
    fullchain: Path
    pki: Any

    def sha(self, cert: x509.Certificate) -> str:
        return fingerprint(cert)


@pytest.fixture
def files(tmp_path: Path, pki: Any) -> Files:
    def put(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return Files(
        folder=tmp_path,
        root=put("root.pem", pki.root.cert_pem()),
        inter=put("inter.pem", pki.inter.cert_pem()),
        leaf=put("leaf.pem", pki.leaf.cert_pem()),
        key=put("leaf.key", pki.leaf.key_pem()),
        fullchain=put("fullchain.pem", pki.leaf.fullchain_pem()),
        pki=pki,
    )


def _key_body(leaf: testing.TestLeaf) -> str:
    # a line from the middle of the key's base64: it must never appear in any output
    return leaf.key_pem().decode().splitlines()[2]


# --- inspect ------------------------------------------------------------------------------------


def test_inspect_json_lists_certificates_keys_and_what_matches(cli: Any, files: Files) -> None:
    result = cli("inspect", files.fullchain, files.key, files.root, "--json")
    assert result.code == 0, result.err
    data = result.json()
    shas = [c["sha256"] for c in data["certificates"]]
    leaf_sha = files.sha(files.pki.leaf.cert)
    assert shas == [leaf_sha, files.sha(files.pki.inter.cert), files.sha(files.pki.root.cert)]
    first = data["certificates"][0]
    assert first["dns_names"] == ["www.example.test", "example.test"]
    assert first["source"] == str(files.fullchain)
    assert 88 <= first["days_left"] <= 90
    assert first["key_type"] == "ec:p256"
    assert data["keys"] == [
        {
            "source": str(files.key),
            "format": "pem",
            "type": "ec:p256",
            "encrypted": False,
            "certificates": [{"sha256": leaf_sha, "source": str(files.fullchain)}],
            "csrs": [],
        }
    ]
    assert data["problems"] == []
    assert _key_body(files.pki.leaf) not in result.out


def test_inspect_human_report_shows_fields_and_never_the_key(cli: Any, files: Files) -> None:
    result = cli("inspect", files.leaf, files.key)
    assert result.code == 0, result.err
    assert "CN=www.example.test" in result.out
    assert "www.example.test, example.test" in result.out
    assert files.sha(files.pki.leaf.cert) in result.out
    assert "days left" in result.out
    assert "matches   certificate" in result.out
    assert "PRIVATE KEY" not in result.out
    assert _key_body(files.pki.leaf) not in result.out


def test_inspect_csr_names_its_key(cli: Any, files: Files, tmp_path: Path) -> None:
    csr_path = tmp_path / "www.csr"
    made = cli("csr", "--key", files.key, "--name", "www.example.test", "--out", csr_path)
    assert made.code == 0, made.err
    other = testing.TestCA.root("Other").leaf("other.test")
    other_key = tmp_path / "other.key"
    other_key.write_bytes(other.key_pem())
    result = cli("inspect", csr_path, files.key, other_key, "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["csrs"][0]["dns_names"] == ["www.example.test"]
    assert data["csrs"][0]["key"] == str(files.key)
    assert data["keys"][0]["csrs"] == [str(csr_path)]
    assert data["keys"][1]["csrs"] == []
    human = cli("inspect", csr_path, files.key)
    assert f"key file  {files.key}" in human.out


# --- verify -------------------------------------------------------------------------------------


def test_verify_valid_chain_json_and_exit_0(cli: Any, files: Files) -> None:
    result = cli("verify", files.leaf, files.inter, "--name", "example.test", "--trust-only", files.root, "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["valid"] is True
    assert data["problems"] == []
    assert [c["sha256"] for c in data["chain"]][:2] == [
        files.sha(files.pki.leaf.cert),
        files.sha(files.pki.inter.cert),
    ]
    assert set(data) >= {"valid", "chain", "problems"}


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--name", "other.example.test"], "name-mismatch"),
        (["--at", "2040-01-01"], "expired"),
        (["--at", "2001-01-01T00:00:00+02:00"], "not-yet-valid"),
    ],
)
def test_verify_invalid_says_why_and_exits_1(cli: Any, files: Files, args: list[str], code: str) -> None:
    result = cli("verify", files.fullchain, "--trust-only", files.root, *args, "--json")
    assert result.code == 1, result.err
    data = result.json()
    assert data["valid"] is False
    assert code in [p["code"] for p in data["problems"]]
    for problem in data["problems"]:
        assert set(problem) >= {"code", "severity", "message", "hint"}


def test_verify_at_gives_one_day_count(cli: Any, files: Files) -> None:
    not_after = files.pki.leaf.cert.not_valid_after_utc
    at = (not_after + dt.timedelta(days=55, hours=12)).replace(microsecond=0)
    result = cli("verify", files.fullchain, "--trust-only", files.root, "--at", at.isoformat())
    assert result.code == 1, result.err
    flat = " ".join(result.out.split())
    counts = {int(n) for n in re.findall(r"(\d+) days ago", flat)}
    assert counts == {55}, flat  # the leaf's line and the problem's message count alike


def test_verify_missing_intermediate_is_not_fetched(cli: Any, files: Files) -> None:
    result = cli("verify", files.leaf, "--trust-only", files.root)
    assert result.code == 1
    assert "NOT valid" in result.out
    assert "incomplete-chain" in result.out


def test_verify_human_report_draws_the_chain(cli: Any, files: Files) -> None:
    result = cli("verify", files.fullchain, "--trust-only", files.root)
    assert result.code == 0, result.err
    assert "✓ valid for www.example.test" in result.out
    assert "leaf: www.example.test" in result.out
    assert "intermediate: certfleet Test Intermediate" in result.out
    assert "root (trusted, not served)" in result.out


def test_verify_untrusted_root_by_default(cli: Any, files: Files) -> None:
    # the test root is not among Mozilla's, so the default trust store refuses it
    result = cli("verify", files.fullchain, "--json")
    assert result.code == 1
    assert "untrusted" in [p["code"] for p in result.json()["problems"]]
    trusted = cli("verify", files.fullchain, "--trust", files.root, "--json")
    assert trusted.code == 0, trusted.err


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "1" * 100])
def test_verify_bad_at_is_bad_input(cli: Any, files: Files, text: str) -> None:
    result = cli("verify", files.fullchain, "--trust-only", files.root, "--at", text)
    assert result.code == 2
    assert "--at" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-01", dt.datetime(2026, 5, 1, tzinfo=dt.UTC)),
        ("2026-05-01T12:30", dt.datetime(2026, 5, 1, 12, 30, tzinfo=dt.UTC)),
        ("2026-05-01T12:30:00Z", dt.datetime(2026, 5, 1, 12, 30, tzinfo=dt.UTC)),
        ("2026-05-01T12:30:00+02:00", dt.datetime(2026, 5, 1, 10, 30, tzinfo=dt.UTC)),
    ],
)
def test_parse_at_is_utc_unless_told(text: str, expected: dt.datetime) -> None:
    when = _core.parse_at(text)
    assert when == expected
    assert when.utcoffset() == dt.timedelta(0)


# --- verify --each ------------------------------------------------------------------------------


@pytest.fixture
def leaves(tmp_path: Path, pki: Any) -> list[Path]:
    """Six leaves of the test intermediate, the fourth one expired."""
    out = []
    for i in range(6):
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=200 if i == 3 else 1)
        leaf = pki.inter.leaf(f"host{i}.example.test", f"alt{i}.example.test", not_before=start, days=90)
        path = tmp_path / f"leaf{i}.pem"
        path.write_bytes(leaf.cert_pem())
        out.append(path)
    return out


def _each(cli: Any, files: Files, leaves: list[Path], *extra: Any) -> Any:
    return cli("verify", "--each", *leaves, "--untrusted", files.inter, "--trust-only", files.root, *extra)


def test_each_json_lines_one_per_leaf_in_order(cli: Any, files: Files, leaves: list[Path]) -> None:
    result = _each(cli, files, leaves, "--json")
    assert result.code == 1  # one leaf is expired
    records = [json.loads(line) for line in result.out.splitlines()]
    assert [r["file"] for r in records] == [str(p) for p in leaves]
    assert [r["valid"] for r in records] == [True, True, True, False, True, True]
    assert [r["name"] for r in records] == [f"host{i}.example.test" for i in range(6)]
    assert records[3]["problems"][0]["code"] == "expired"
    for record, path in zip(records, leaves, strict=True):
        assert set(record) == {"file", "valid", "name", "problems", "sha256"}
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        assert record["sha256"] == fingerprint(cert)


def test_each_human_lines_and_summary(cli: Any, files: Files, leaves: list[Path]) -> None:
    result = _each(cli, files, leaves)
    lines = result.out.splitlines()
    assert result.code == 1
    assert len(lines) == 7
    assert lines[0] == f"valid    {leaves[0]}  host0.example.test"
    assert lines[3].startswith(f"INVALID  {leaves[3]}  host3.example.test: expired: expired on ")
    assert lines[-1] == "6 leaves: 5 valid, 1 invalid"


def test_each_with_name_checks_every_leaf_for_it(cli: Any, files: Files, leaves: list[Path]) -> None:
    good = [leaves[0], leaves[1]]
    result = _each(cli, files, good, "--name", "host0.example.test", "--json")
    records = [json.loads(line) for line in result.out.splitlines()]
    assert [r["valid"] for r in records] == [True, False]
    assert records[1]["problems"][0]["code"] == "name-mismatch"
    assert result.code == 1


def test_each_bad_name_is_one_error(cli: Any, files: Files, leaves: list[Path]) -> None:
    result = _each(cli, files, leaves, "--name", "bad..example.test")
    assert result.code == 2
    assert result.out == ""
    assert len(result.err.splitlines()) == 2  # the error and its hint
    assert "empty label" in result.err


def test_each_all_valid_exits_0(cli: Any, files: Files, leaves: list[Path]) -> None:
    result = _each(cli, files, leaves[:3], "--json")
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 3


def test_each_unreadable_leaf_is_reported_and_the_rest_checked(cli: Any, files: Files, leaves: list[Path]) -> None:
    broken = files.folder / "broken.pem"
    broken.write_bytes(b"not a certificate at all\n")
    result = _each(cli, files, [leaves[0], broken, leaves[1]], "--json")
    assert result.code == 2
    records = [json.loads(line) for line in result.out.splitlines()]
    assert [r["valid"] for r in records] == [True, False, True]
    assert records[1]["sha256"] is None
    assert "not a certificate" in records[1]["error"]
    assert result.err.count("\n") == 1
    assert f"error: {broken}: " in result.err


@pytest.mark.parametrize("form", ["pem", "der"])
def test_each_leaf_of_an_unknown_version_is_one_error_record(
    cli: Any, files: Files, leaves: list[Path], form: str
) -> None:
    # cryptography refuses it with its own exception, not a ValueError: still one record, not a crash
    der = bytearray(x509.load_pem_x509_certificate(leaves[0].read_bytes()).public_bytes(serialization.Encoding.DER))
    at = der.index(b"\xa0\x03\x02\x01\x02")
    der[at + 4] = 33
    odd = files.folder / f"version33.{form}"
    armored = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(der)) + b"-----END CERTIFICATE-----\n"
    odd.write_bytes(bytes(der) if form == "der" else armored)
    result = _each(cli, files, [leaves[0], odd, leaves[1]], "--json")
    assert result.code == 2
    records = [json.loads(line) for line in result.out.splitlines()]
    assert [r["valid"] for r in records] == [True, False, True]
    assert "damaged" in records[1]["error"]


def test_each_reads_a_fullchain_file_too(cli: Any, files: Files) -> None:
    # a leaf file that brings its own intermediate is verified with it
    result = cli("verify", "--each", files.fullchain, "--trust-only", files.root, "--json")
    assert result.code == 0, result.out
    assert json.loads(result.out)["sha256"] == files.sha(files.pki.leaf.cert)


def _each_forked(capsys: Any, files: Files, leaves: list[Path], *extra: Any) -> Any:
    """verify --each as _each runs it, shared with a forked child, two leaves a chunk."""
    args = ["verify", "--each", *leaves, "--untrusted", files.inter, "--trust-only", files.root, *extra]
    request = parse_args([str(a) for a in args])
    assert request is not None
    capsys.readouterr()
    code = run_each(request.options, executor=ForkExecutor(chunk=2))
    captured = capsys.readouterr()
    return Result(int(code), captured.out, captured.err)


def test_each_in_worker_processes_gives_the_same_answer(
    cli: Any, capsys: Any, files: Files, leaves: list[Path]
) -> None:
    serial = _each(cli, files, leaves * 3, "--json")
    # with a threshold of 2, eighteen leaves are worth a second process wherever there are two cores
    assert isinstance(executor_for(len(leaves) * 3, min_items=2), ForkExecutor) == (len(os.sched_getaffinity(0)) >= 2)
    parallel = _each_forked(capsys, files, leaves * 3, "--json")  # nine chunks, shared by both processes
    assert parallel.out == serial.out
    assert parallel.code == serial.code == 1
    human = _each_forked(capsys, files, leaves * 3)
    assert human.out.splitlines()[-1] == "18 leaves: 15 valid, 3 invalid"
    single = _each_forked(capsys, files, leaves[:1])  # fewer leaves than workers
    assert single.code == 0, single.err
    assert single.out.splitlines()[-1] == "1 leaf: 1 valid, 0 invalid"


def test_each_as_a_real_process(cli_proc: Any, files: Files, leaves: list[Path]) -> None:
    result = cli_proc("verify", "--each", *leaves, "--untrusted", files.inter, "--trust-only", files.root, "--json")
    assert result.code == 1
    assert [json.loads(line)["valid"] for line in result.out.splitlines()] == [True, True, True, False, True, True]


# --- chain --------------------------------------------------------------------------------------


def test_chain_json_contract(cli: Any, files: Files) -> None:
    bundle = files.folder / "bundle.pem"
    bundle.write_bytes(files.pki.root.cert_pem() + files.pki.inter.cert_pem())
    result = cli("chain", files.leaf, bundle, files.key, "--trust-only", files.root, "--no-fetch", "--json")
    assert result.code == 0, result.out
    data = result.json()
    assert set(data) == {"leaf", "chain", "root", "complete", "fetched", "dropped", "problems", "key"}
    assert data["complete"] is True
    assert data["leaf"]["sha256"] == files.sha(files.pki.leaf.cert)
    assert [c["sha256"] for c in data["chain"]] == [
        files.sha(files.pki.leaf.cert),
        files.sha(files.pki.inter.cert),
    ]
    assert data["root"]["sha256"] == files.sha(files.pki.root.cert)
    assert [d["sha256"] for d in data["dropped"]] == [files.sha(files.pki.root.cert)]
    assert data["fetched"] == []
    assert data["key"]["matches_leaf"] is True
    assert data["key"]["type"] == "ec:p256"


def test_chain_human_report_and_out_file(cli: Any, files: Files) -> None:
    out = files.folder / "served.pem"
    bundle = files.folder / "bundle.pem"
    bundle.write_bytes(files.pki.root.cert_pem() + files.pki.inter.cert_pem())
    result = cli("chain", bundle, files.leaf, "--trust-only", files.root, "--no-fetch", "--out", out)
    assert result.code == 0, result.out
    assert "✓ chain complete" in result.out
    assert "dropped: CN=certfleet Test Root" in result.out
    assert f"wrote {out}" in result.out
    assert out.read_bytes() == files.pki.leaf.fullchain_pem()


def test_chain_incomplete_exits_1_and_writes_nothing(cli: Any, files: Files) -> None:
    out = files.folder / "served.pem"
    result = cli("chain", files.leaf, "--trust-only", files.root, "--no-fetch", "--out", out, "--json")
    assert result.code == 1
    data = result.json()
    assert data["complete"] is False
    assert "incomplete-chain" in [p["code"] for p in data["problems"]]
    assert data["written"] == []
    assert not out.exists()
    forced = cli("chain", files.leaf, "--trust-only", files.root, "--no-fetch", "--out", out, "--force")
    assert forced.code == 1
    assert out.read_bytes() == files.pki.leaf.cert_pem()


def test_chain_key_that_is_not_the_leafs(cli: Any, files: Files) -> None:
    stranger = files.folder / "stranger.key"
    stranger.write_bytes(testing.TestCA.root("Stranger").leaf("s.test").key_pem())
    result = cli("chain", files.fullchain, "--key", stranger, "--trust-only", files.root, "--no-fetch", "--json")
    assert result.code == 1
    data = result.json()
    assert data["key"]["matches_leaf"] is False
    assert "key-mismatch" in [p["code"] for p in data["problems"]]


def test_reports_count_days_from_the_now_the_command_gives(pki: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from certfleet.chain import build_chain
    from certfleet.cli import _render
    from certfleet.formats import read_pool
    from certfleet.inspection import inspect
    from certfleet.trust import TrustStore

    pool = read_pool([("fullchain.pem", pki.leaf.fullchain_pem())])
    not_after = pki.leaf.cert.not_valid_after_utc
    soon, past = not_after - dt.timedelta(days=5, hours=1), not_after + dt.timedelta(days=2)
    result = build_chain(pool, TrustStore((pki.root.cert,)), now=soon)
    for now, said in ((soon, "5 days left"), (past, "expired 2 days ago")):
        capsys.readouterr()
        _render.chain_report(result, now=now)
        tree = capsys.readouterr().out.splitlines()
        assert any("leaf: www.example.test" in line and said in line for line in tree), tree
        _render.inspection(inspect(pool, now=now))
        table = capsys.readouterr().out.splitlines()
        assert any(line.split()[:1] == ["expires"] and said in line for line in table), table


def test_the_renderer_imports_no_command_module() -> None:
    # results live in the library: the commands import the renderer, never the other way round
    import ast

    from certfleet.cli import _render

    tree = ast.parse(Path(_render.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {m for m in imported if m and m.startswith("certfleet.cli.") and m != "certfleet.cli._common"} == set()


@pytest.fixture
def aia_server(pki: Any) -> Iterator[str]:
    """A loopback HTTP server publishing the intermediate (DER) as a CA does, on a free port."""
    body = pki.inter.cert.public_bytes(serialization.Encoding.DER)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/inter.der":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/pkix-cert")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/inter.der"
    finally:
        server.shutdown()
        server.server_close()


def test_chain_fetches_a_missing_intermediate_and_says_so(cli: Any, pki: Any, tmp_path: Path, aia_server: str) -> None:
    leaf = pki.inter.leaf("aia.example.test", aia_url=aia_server)
    leaf_path = tmp_path / "leaf.pem"
    leaf_path.write_bytes(leaf.cert_pem())
    root = pki.root_file(tmp_path)
    result = cli("chain", leaf_path, "--trust-only", root, "--json")
    assert result.code == 0, result.out
    data = result.json()
    assert data["complete"] is True
    assert [c["sha256"] for c in data["fetched"]] == [fingerprint(pki.inter.cert)]
    assert "fetched-intermediate" in [p["code"] for p in data["problems"]]
    human = cli("chain", leaf_path, "--trust-only", root)
    assert "fetched: CN=certfleet Test Intermediate" in human.out
    offline = cli("chain", leaf_path, "--trust-only", root, "--no-fetch", "--json")
    assert offline.code == 1
    assert offline.json()["fetched"] == []


# --- convert ------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        ("apache", {"cert.pem", "chain.pem", "privkey.pem"}),
        ("nginx", {"fullchain.pem", "privkey.pem"}),
        ("pem", {"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"}),
    ],
)
def test_convert_layouts_write_a_folder_keys_0600(cli: Any, files: Files, kind: str, names: set[str]) -> None:
    out = files.folder / kind
    result = cli(
        "convert", files.fullchain, files.key, "--to", kind, "--out", out, "--trust-only", files.root, "--json"
    )
    assert result.code == 0, result.out
    assert {p.name for p in out.iterdir()} == names
    assert _mode(out / "privkey.pem") == 0o600
    for name in names - {"privkey.pem"}:
        assert _mode(out / name) == 0o644
    written = result.json()["written"]
    assert {Path(w["path"]).name: w["private"] for w in written} == {n: n == "privkey.pem" for n in names}
    key = serialization.load_pem_private_key((out / "privkey.pem").read_bytes(), None)
    assert key.public_key() == files.pki.leaf.cert.public_key()


def test_convert_haproxy_is_one_private_file(cli: Any, files: Files) -> None:
    out = files.folder / "site.pem"
    result = cli("convert", files.fullchain, files.key, "--to", "haproxy", "--out", out, "--trust-only", files.root)
    assert result.code == 0, result.out
    assert _mode(out) == 0o600
    data = out.read_bytes()
    assert data.startswith(files.pki.leaf.fullchain_pem())
    assert b"PRIVATE KEY" in data
    assert f"{out}  (private key, mode 0600)" in result.out


def test_convert_der_and_pkcs7(cli: Any, files: Files) -> None:
    der = files.folder / "leaf.cer"
    assert cli("convert", files.fullchain, "--to", "der", "--out", der, "--trust-only", files.root).code == 0
    assert x509.load_der_x509_certificate(der.read_bytes()) == files.pki.leaf.cert
    p7b = files.folder / "chain.p7b"
    assert cli("convert", files.fullchain, "--to", "pkcs7", "--out", p7b, "--trust-only", files.root).code == 0
    from cryptography.hazmat.primitives.serialization import pkcs7

    assert pkcs7.load_pem_pkcs7_certificates(p7b.read_bytes()) == [files.pki.leaf.cert, files.pki.inter.cert]


@pytest.mark.parametrize("legacy", [False, True])
def test_convert_pkcs12_with_password(cli: Any, files: Files, legacy: bool) -> None:
    from cryptography.hazmat.primitives.serialization import pkcs12

    out = files.folder / "site.pfx"
    args = ["--legacy"] if legacy else []
    result = cli(
        "convert", files.fullchain, files.key, "--to", "pkcs12", "--out", out, "--out-password", "s3cret",
        "--friendly-name", "www", "--trust-only", files.root, *args,
    )  # fmt: skip
    assert result.code == 0, result.out
    assert _mode(out) == 0o600
    p12 = pkcs12.load_pkcs12(out.read_bytes(), b"s3cret")
    assert p12.cert is not None and p12.cert.certificate == files.pki.leaf.cert
    assert p12.cert.friendly_name == b"www"
    assert [c.certificate for c in p12.additional_certs] == [files.pki.inter.cert]


def test_convert_pkcs12_needs_a_password(cli: Any, files: Files) -> None:
    out = files.folder / "site.pfx"
    result = cli("convert", files.fullchain, files.key, "--to", "pkcs12", "--out", out, "--trust-only", files.root)
    assert result.code == 2
    assert "needs a password" in result.err
    assert not out.exists()
    empty = cli("convert", files.fullchain, files.key, "--to", "pkcs12", "--out", out, "--out-password", "")
    assert empty.code == 2
    assert not out.exists()
    bare = cli(
        "convert", files.fullchain, files.key, "--to", "pkcs12", "--out", out, "--no-password",
        "--trust-only", files.root,
    )  # fmt: skip
    assert bare.code == 0, bare.out
    assert out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "jks"], "not a format"),
        (["--to", "nginx"], "needs the private key"),
        (["--to", "der", "--out-password", "x"], "nothing to protect"),
        (["--to", "nginx", "--legacy"], "pkcs12 only"),
    ],
)
def test_convert_refuses_bad_options(cli: Any, files: Files, args: list[str], message: str) -> None:
    out = files.folder / "out"
    result = cli("convert", files.fullchain, *args, "--out", out, "--trust-only", files.root)
    assert result.code == 2
    assert message in result.err
    assert not out.exists()


def test_convert_refuses_a_key_that_is_not_the_leafs(cli: Any, files: Files) -> None:
    stranger = files.folder / "stranger.key"
    stranger.write_bytes(testing.TestCA.root("Stranger").leaf("s.test").key_pem())
    out = files.folder / "nginx"
    result = cli("convert", files.fullchain, stranger, "--to", "nginx", "--out", out, "--trust-only", files.root)
    assert result.code == 1
    assert "nothing written" in result.err
    assert not out.exists()


def test_convert_refuses_an_incomplete_chain_unless_forced(cli: Any, files: Files) -> None:
    out = files.folder / "nginx"
    args = ["convert", files.leaf, files.key, "--to", "nginx", "--out", out, "--trust-only", files.root, "--no-fetch"]
    result = cli(*args)
    assert result.code == 1
    assert "incomplete-chain" in result.out
    assert not out.exists()
    forced = cli(*args, "--force")
    assert forced.code == 1  # written, and still reported as a problem
    assert (out / "fullchain.pem").read_bytes() == files.pki.leaf.cert_pem()


# --- key ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa:2048", "rsa:3072", "rsa:4096", "ec:p256", "ec:p384"])
def test_key_writes_a_new_key_0600(cli: Any, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "new.key"
    result = cli("key", "--type", kind, "--out", out, "--json")
    assert result.code == 0, result.err
    assert _mode(out) == 0o600
    assert result.json()["type"] == kind
    assert result.json()["encrypted"] is False
    key = serialization.load_pem_private_key(out.read_bytes(), None)
    from certfleet.keys import public_key_id

    assert public_key_id(key) == result.json()["public_key_id"]
    assert out.read_text().splitlines()[1] not in result.out


def test_key_with_passphrase_is_encrypted(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "new.key"
    result = cli("key", "--type", "ec:p256", "--out", out, "--passphrase", "pw")
    assert result.code == 0, result.err
    assert "encrypted" in result.out
    assert b"ENCRYPTED PRIVATE KEY" in out.read_bytes()
    serialization.load_pem_private_key(out.read_bytes(), b"pw")
    pw_file = tmp_path / "pw.txt"
    pw_file.write_text("from-file\n")
    other = tmp_path / "other.key"
    assert cli("key", "--out", other, "--passphrase-file", pw_file).code == 0
    serialization.load_pem_private_key(other.read_bytes(), b"from-file")


@pytest.mark.parametrize(("kind", "words"), [("ed25519", "Ed25519"), ("rsa:1024", "1024"), ("dsa", "not a key type")])
def test_key_refuses_what_a_ca_would(cli: Any, tmp_path: Path, kind: str, words: str) -> None:
    out = tmp_path / "new.key"
    result = cli("key", "--type", kind, "--out", out)
    assert result.code == 2
    assert words in result.err
    assert not out.exists()


def test_key_never_overwrites_by_accident(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "new.key"
    out.write_text("precious")
    result = cli("key", "--out", out)
    assert result.code == 2
    assert "already exists" in result.err
    assert out.read_text() == "precious"
    assert cli("key", "--out", out, "--force").code == 0
    assert out.read_text() != "precious"


# --- csr ----------------------------------------------------------------------------------------


def test_csr_with_new_key_subject_and_plan(cli: Any, tmp_path: Path) -> None:
    csr_path, key_path = tmp_path / "www.csr", tmp_path / "www.key"
    result = cli(
        "csr", "--new-key", "rsa:2048", "--key-out", key_path, "--name", "www.example.com",
        "--name", "mbg.example.com", "--name", "10.0.0.5",
        "--subject", "C=CA,ST=Ontario,L=Ottawa,O=Example Inc", "--out", csr_path, "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    data = result.json()
    assert data["csr"]["dns_names"] == ["www.example.com", "mbg.example.com"]
    assert data["csr"]["ip_addresses"] == ["10.0.0.5"]
    assert data["csr"]["subject"] == "CN=www.example.com,O=Example Inc,L=Ottawa,ST=Ontario,C=CA"
    assert data["plan"]["count"] == 3
    assert data["plan"]["fits"] is True
    assert data["key"]["type"] == "rsa:2048"
    assert _mode(key_path) == 0o600
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert csr.public_key() == key.public_key()
    assert csr.is_signature_valid
    assert csr.signature_hash_algorithm is not None and csr.signature_hash_algorithm.name == "sha256"


def test_csr_with_existing_key_and_subject_options(cli: Any, files: Files, tmp_path: Path) -> None:
    csr_path = tmp_path / "www.csr"
    result = cli(
        "csr", "--key", files.key, "--name", "www.example.test", "--name", "example.test",
        "--country", "ca", "--org", "Example", "--out", csr_path,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "names plan: 2 of 15 names" in result.out
    assert f"wrote {csr_path}" in result.out
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.public_key() == files.pki.leaf.cert.public_key()
    assert csr.subject.rfc4514_string() == "CN=www.example.test,O=Example,C=CA"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "a.example.com"], "either --key"),
        (["--new-key", "ec:p256", "--name", "a.example.com"], "--key-out"),
        (["--new-key", "ec:p256", "--key-out", "k.key", "--name", "a.b.com", "--country", "Canada"], "two-letter"),
        (["--new-key", "ec:p256", "--key-out", "k.key", "--name", "bad_name.example.com"], "underscore"),
        (["--new-key", "ec:p256", "--key-out", "k.key", "--name", "x.com", "--subject", "C=CA", "--country", "DE"],
         "given twice"),
    ],
)  # fmt: skip
def test_csr_bad_options_are_bad_input(cli: Any, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "x.csr"
    result = cli("csr", *[str(tmp_path / a) if a == "k.key" else a for a in args], "--out", out)
    assert result.code == 2
    assert message in result.err
    assert not out.exists()
    assert not (tmp_path / "k.key").exists()


# --- match --------------------------------------------------------------------------------------


def test_match_pairs_keys_with_certificates(cli: Any, files: Files) -> None:
    result = cli("match", files.fullchain, files.key, "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["ok"] is True
    assert data["pairs"][0]["certificate"]["sha256"] == files.sha(files.pki.leaf.cert)
    assert data["pairs"][0]["key"]["source"] == str(files.key)
    human = cli("match", files.fullchain, files.key)
    assert f"{files.key} (ec:p256) ↔ certificate {files.fullchain}" in human.out


def test_match_mismatch_names_both_files_and_exits_1(cli: Any, files: Files) -> None:
    stranger = files.folder / "stranger.key"
    stranger.write_bytes(testing.TestCA.root("Stranger").leaf("s.test").key_pem())
    result = cli("match", files.leaf, stranger, "--json")
    assert result.code == 1
    problem = result.json()["problems"][0]
    assert problem["code"] == "key-mismatch"
    assert str(stranger) in problem["message"] and str(files.leaf) in problem["message"]
    human = cli("match", files.leaf, stranger)
    assert "[key-mismatch]" in human.out


def test_match_without_a_key_is_bad_input(cli: Any, files: Files) -> None:
    result = cli("match", files.fullchain)
    assert result.code == 2
    assert "no private key" in result.err


# --- names --------------------------------------------------------------------------------------


def test_names_plan_json(cli: Any) -> None:
    result = cli(
        "names", "a.example.com", "b.example.com", "c.example.com", "example.com", "--limit", "3", "--wildcards",
        "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    plan = result.json()["plan"]
    assert plan["limit"] == 3
    assert plan["fits"] is True
    assert "*.example.com" in plan["entries"]
    assert "example.com" in plan["entries"]
    assert result.json()["coverage"] is None


def test_names_over_the_limit_exits_1(cli: Any) -> None:
    names = [f"host{i}.example{i}.com" for i in range(4)]
    result = cli("names", *names, "--limit", "3")
    assert result.code == 1
    assert "more than the CA allows" in result.out
    no_wild = cli("names", "a.example.com", "b.example.com", "--no-wildcards", "--json")
    assert no_wild.json()["plan"]["wildcards"] == []


def test_names_coverage_of_a_certificate(cli: Any, pki: Any, tmp_path: Path) -> None:
    wildcard = pki.inter.leaf("*.example.test")
    path = tmp_path / "wild.pem"
    path.write_bytes(wildcard.fullchain_pem())
    result = cli("names", "www.example.test", "example.test", "--cert", path, "--json")
    assert result.code == 1
    coverage = result.json()["coverage"]
    assert coverage["covered"] == {"www.example.test": "*.example.test"}
    assert coverage["missing"][0]["name"] == "example.test"
    assert "never the apex" in coverage["missing"][0]["reason"]
    human = cli("names", "www.example.test", "--cert", path)
    assert human.code == 0
    assert "covers every name" in human.out


def test_names_picks_the_leaf_as_chain_does(cli: Any, pki: Any, tmp_path: Path) -> None:
    other = pki.inter.leaf("mail.example.test")
    both = tmp_path / "both.pem"
    both.write_bytes(pki.leaf.cert_pem() + other.fullchain_pem())
    result = cli("names", "mail.example.test", "--cert", both)
    assert result.code == 2
    assert result.err.startswith(f"error: {both}: 2 certificates could each be the leaf:")
    # a PFX-like bundle with the key: the key's certificate is the leaf
    keyed = tmp_path / "keyed.pem"
    keyed.write_bytes(both.read_bytes() + other.key_pem())
    assert cli("names", "mail.example.test", "--cert", keyed).code == 0
    empty = tmp_path / "key-only.pem"
    empty.write_bytes(other.key_pem())
    missing = cli("names", "mail.example.test", "--cert", empty)
    assert missing.code == 2 and missing.err.startswith(f"error: {empty}: no certificate among the inputs")


def test_names_invalid_name_is_bad_input(cli: Any) -> None:
    result = cli("names", "bad..example.com")
    assert result.code == 2
    assert "empty label" in result.err


# --- the frame: help, errors, debug -------------------------------------------------------------


@pytest.mark.parametrize("command", ["inspect", "verify", "chain", "convert", "key", "csr", "match", "names"])
def test_every_command_has_help_with_an_example(cli: Any, command: str) -> None:
    result = cli(command, "--help")
    assert result.code == 0
    assert "Example" in result.out
    assert f"certfleet {command}" in result.out


def test_errors_are_one_line_and_debug_shows_the_traceback(cli_proc: Any, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    result = cli_proc("inspect", missing)
    assert result.code == 2
    assert result.err.splitlines()[0] == f"error: {missing}: cannot read: No such file or directory"
    assert "Traceback" not in result.err
    debug = cli_proc("--debug", "inspect", missing)
    assert "Traceback" in debug.err


def test_help_shows_no_typer_types_for_flags_and_lists(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from certfleet.cli import COMMANDS

    monkeypatch.setenv("COLUMNS", "200")
    groups = {"node": ["add", "list", "show", "remove"], "trust": ["add", "list", "remove"]}
    invocations = [[name] for name in COMMANDS if name not in groups]
    invocations += [[group, sub] for group, subs in groups.items() for sub in subs]
    for args in [[], *invocations]:
        shown = cli(*args, "--help")
        assert shown.code == 0, (args, shown.err)
        assert "<bool>" not in shown.out and "<list[" not in shown.out, (args, shown.out)
    assert re.search(r"--node\s+-n\s+<str>\s+Only this node", cli("deploy", "--help").out)  # one value, repeatable
