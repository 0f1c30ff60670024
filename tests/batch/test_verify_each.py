"""verify --each: its start without Typer, its batch shared with a forked child, its per-leaf
shortcuts; each held to the answers of the plain way (Typer, one process, the full readers).
Processes are chosen through the batch's executor, never by patching os.fork."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

import certfleet.cli as cli_module
from certfleet import testing
from certfleet._batch import files as batch_files
from certfleet._batch import options as batch_options
from certfleet._batch.executor import Executor, ForkExecutor, InProcessExecutor, Output
from certfleet._batch.files import GROUP_BYTES, EachResult, check_leaf_file, check_leaf_files, read_file
from certfleet._batch.options import Arity, EachOptions, parse_args
from certfleet._batch.verifier import BatchVerifier
from certfleet.certinfo import fingerprint
from certfleet.cli._each import run_each
from certfleet.cli._inputs import MAX_INPUT_BYTES
from certfleet.errors import CertfleetError, FormatError
from certfleet.problems import Problem, ProblemCode, Severity
from certfleet.trust import TrustStore
from certfleet.verify import Verifier, verify_chain
from conftest import PKI

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)

# --- a batch with every kind of leaf ------------------------------------------------------------


@dataclass
class Batch:
    folder: Path
    root: Path
    inter: Path
    leaves: list[Path]  # in the order given to the command; some invalid, some unreadable


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Batch:
    folder = tmp_path_factory.mktemp("each")
    root = testing.TestCA.root("Each Root", key="rsa:2048")
    inter = root.intermediate("Each Intermediate", key="rsa:2048")
    stranger = testing.TestCA.root("Stranger Root").intermediate("Stranger Intermediate")
    files: list[tuple[str, bytes]] = []
    for i in range(8):
        files.append((f"good{i}.pem", inter.leaf(f"host{i}.example.test", f"10.0.0.{i}", key="rsa:2048").cert_pem()))
    old = NOW - dt.timedelta(days=200.5)
    files += [
        ("expired.pem", inter.leaf("expired.example.test", not_before=old, days=90).cert_pem()),
        # half a day off the day boundary: "in 3 days" for every run of the test
        ("future.pem", inter.leaf("future.example.test", not_before=NOW + dt.timedelta(days=3.5)).cert_pem()),
        ("stranger.pem", stranger.leaf("stranger.example.test").cert_pem()),
        ("selfsigned.pem", testing.TestCA.root("self.example.test").cert_pem()),
        ("client-only.pem", inter.leaf("client.example.test", server_auth=False).cert_pem()),
        ("wildcard.pem", inter.leaf("*.wild.example.test").cert_pem()),
        ("ip-only.pem", inter.leaf("192.0.2.7").cert_pem()),
        ("no-san.pem", inter.leaf("nosan.example.test", san=False).cert_pem()),
        ("weak-key.pem", inter.leaf("weak.example.test", key="rsa:1024").cert_pem()),
        ("fullchain.pem", inter.leaf("full.example.test").fullchain_pem()),
        ("leaf.der", inter.leaf("der.example.test").cert.public_bytes(serialization.Encoding.DER)),
        ("crlf.pem", b"Subject: crlf\r\n" + inter.leaf("crlf.example.test").cert_pem().replace(b"\n", b"\r\n")),
        ("garbage.pem", b"not a certificate at all\n"),
        ("empty.pem", b""),
        ("broken.pem", b"-----BEGIN CERTIFICATE-----\nAAAA!!!!\n-----END CERTIFICATE-----\n"),
    ]
    leaves = []
    for name, data in files:
        path = folder / name
        path.write_bytes(data)
        leaves.append(path)
    (folder / "a-folder.pem").mkdir()
    leaves += [folder / "missing.pem", folder / "a-folder.pem"]
    root_file, inter_file = folder / "root.pem", folder / "inter.pem"
    root_file.write_bytes(root.cert_pem())
    inter_file.write_bytes(inter.cert_pem())
    # interleave the invalid ones with the good ones, as a real batch would have them
    good, rest = leaves[:8], leaves[8:]
    mixed = [path for pair in zip(rest, good * 3, strict=False) for path in pair] + rest[len(good * 3) :]
    return Batch(folder, root_file, inter_file, mixed)


def _args(batch: Batch, *extra: str | Path) -> list[str]:
    return [
        "verify",
        "--each",
        *map(str, batch.leaves),
        "--untrusted",
        str(batch.inter),
        "--trust-only",
        str(batch.root),
        *map(str, extra),
    ]


# --- the lean start reads the options as Typer does ---------------------------------------------


def test_options_table_is_the_typer_commands() -> None:
    from certfleet.cli._common import app

    _ = cli_module.app  # every command registered
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    params = command.commands["verify"].params
    typer_table = {}
    for param in params:
        if param.param_type_name == "option":
            assert isinstance(param, typer.core.TyperOption)
            arity = Arity.FLAG if param.is_flag else Arity.MANY if param.multiple else Arity.ONE
            assert not param.secondary_opts, "a --x/--no-x option: teach certfleet/_batch/options.py to read it"
            typer_table[param.name] = (tuple(param.opts), arity)
    assert typer_table == dict(batch_options.OPTIONS)
    # and EachOptions holds each of them, with the files
    fields = set(EachOptions.__dataclass_fields__)
    assert fields == ({p.name for p in params} - {"each"})


@pytest.mark.parametrize(
    "extra",
    [
        ["--json"],
        [],
        ["--name", "host3.example.test", "--json"],
        ["--name=host3.example.test"],
        ["-n", "HOST3.Example.Test", "--json"],
        ["--at", "2020-01-01", "--json"],
        ["--at=2020-01-01T12:00:00+02:00"],
        ["--password", "unused", "-p", "unused too", "--json"],
        ["--name", "bad..example.test"],
        ["--name", "*.example.test", "--json"],
        ["--at", "yesterday"],
        ["--system-trust"],
        ["--trust", "missing-roots.pem"],
        ["--untrusted", "missing-intermediates.pem", "--json"],
    ],
)
def test_lean_start_and_typer_answer_alike(
    cli: Any, batch: Batch, monkeypatch: pytest.MonkeyPatch, extra: list[str]
) -> None:
    args = _args(batch, *extra)
    assert parse_args(args) is not None

    def typer_not_expected(args: list[str]) -> int:
        raise AssertionError("verify --each went through Typer")

    with monkeypatch.context() as patch:
        patch.setattr(cli_module, "_run_typer", typer_not_expected)
        lean = cli(*args)
    with monkeypatch.context() as patch:
        patch.setattr(batch_options, "parse_args", lambda args: None)
        typed = cli(*args)
    assert (lean.code, lean.out, lean.err) == (typed.code, typed.out, typed.err)
    assert lean.out or lean.err


def test_options_may_come_anywhere_and_the_last_name_counts(cli: Any, batch: Batch) -> None:
    leaves = [str(p) for p in batch.leaves[:4]]
    ordered = cli(
        "verify", "--each", *leaves, "--untrusted", batch.inter, "--trust-only", batch.root, "--name", "x.test"
    )
    shuffled = cli(
        "--debug",
        "verify",
        "--name",
        "other.test",
        leaves[0],
        "--trust-only",
        batch.root,
        leaves[1],
        "--each",
        "--untrusted",
        batch.inter,
        *leaves[2:],
        "-n",
        "x.test",
    )
    assert (shuffled.code, shuffled.out, shuffled.err) == (ordered.code, ordered.out, ordered.err)


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "--each", "a.pem", "--help"],
        ["verify", "-h", "--each", "a.pem"],
        ["verify", "--each", "-nhost.test", "a.pem"],
        ["verify", "a.pem", "--json"],  # no --each: the one-chain verify
        ["verify", "--each", "--json"],  # no file
        ["verify", "--each", "--", "a.pem"],
        ["verify", "--each=yes", "a.pem"],
        ["verify", "--each", "a.pem", "--name"],
        ["verify", "--each", "a.pem", "--name", "--json"],
        ["verify", "--each", "a.pem", "--names", "x.test"],
        ["verify", "--each", "-", "a.pem"],
        ["verify", "--each", "a.pem", "--untrusted", ""],
        ["verify", "--each", "a.pem", "--debug"],
        ["--debug", "inspect", "--each", "a.pem"],
        ["--verbose", "verify", "--each", "a.pem"],
        [],
    ],
)
def test_anything_unusual_is_left_to_typer(args: list[str]) -> None:
    assert parse_args(args) is None


def test_parse_args_reads_every_option() -> None:
    request = parse_args(
        [
            "--debug",
            "verify",
            "a.pem",
            "--each",
            "--name=www.example.test",
            "--trust",
            "t1.pem",
            "--trust=t2.pem",
            "--trust-only",
            "only.pem",
            "--system-trust",
            "--at",
            "2026-01-01",
            "--untrusted",
            "i1.pem",
            "--untrusted",
            "i2.pem",
            "-p",
            "one",
            "--password",
            "two",
            "--password-file",
            "pw.txt",
            "--json",
            "b.pem",
        ]
    )
    assert request is not None
    assert request.debug
    assert request.options == EachOptions(
        files=("a.pem", "b.pem"),
        name="www.example.test",
        trust=(Path("t1.pem"), Path("t2.pem")),
        trust_only=(Path("only.pem"),),
        system_trust=True,
        at="2026-01-01",
        untrusted=(Path("i1.pem"), Path("i2.pem")),
        password=("one", "two"),
        password_file=Path("pw.txt"),
        as_json=True,
    )


def _loaded_after(code: str) -> set[str]:
    """The top-level packages, certfleet.cli and certfleet._batch modules a fresh interpreter holds after ``code``."""
    probe = (
        "import sys\n"
        f"{code}\n"
        "ours = ('certfleet.cli', 'certfleet._batch')\n"
        "print('\\n'.join(m for m in sys.modules if '.' not in m or m.startswith(ours)))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def test_each_starts_without_typer_rich_or_the_other_commands(batch: Batch) -> None:
    good = [str(p) for p in batch.leaves if p.name.startswith("good")]
    args = ["verify", "--each", *good, "--untrusted", str(batch.inter), "--trust-only", str(batch.root), "--json"]
    loaded = _loaded_after(
        f"from certfleet.cli import main\nimport io, contextlib\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    main({args!r})"
    )
    assert {"certfleet.cli._each", "certfleet._batch.runner", "certfleet._batch.executor"} <= loaded
    assert "cryptography" in loaded
    assert not loaded & {"typer", "click", "rich", "pydantic", "asyncio", "sqlalchemy", "multiprocessing"}
    assert not loaded & {f"certfleet.cli.{m}" for m in ("_core", "_common", "_fleet", "_deploy", "_check", "_serve")}


def test_a_command_loads_only_its_own_module(tmp_path: Path) -> None:
    loaded = _loaded_after(
        "from certfleet.cli import main\nimport io, contextlib\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    main(['names', 'www.example.test', '--json'])"
    )
    assert "certfleet.cli._core" in loaded
    assert not loaded & {f"certfleet.cli.{m}" for m in ("_fleet", "_deploy", "_check", "_serve")}
    assert not loaded & {"asyncio", "sqlalchemy"}


def test_every_command_is_mapped_to_its_module_and_listed_in_the_help(cli: Any) -> None:
    from certfleet.cli._common import app

    _ = cli_module.app
    registered = set()
    for info in app.registered_commands:
        assert info.callback is not None
        name = info.name or info.callback.__name__.replace("_", "-")
        registered.add((name, info.callback.__module__.rpartition(".")[2]))
    for group in app.registered_groups:  # a group lives in the module of its commands
        assert group.typer_instance is not None
        (module,) = {c.callback.__module__ for c in group.typer_instance.registered_commands if c.callback}
        registered.add((group.name, module.rpartition(".")[2]))
    assert registered == set(cli_module.COMMANDS.items())
    result = cli("--help")
    assert result.code == 0
    for name in cli_module.COMMANDS:
        assert f" {name} " in result.out, name


@pytest.mark.parametrize("command", ["verify", "status", "node", "trust", "rollback", "watch", "serve", "account"])
def test_a_command_of_each_module_answers_alone(command: str) -> None:
    # a fresh process, as a user starts it: the command's own module is enough for its help
    proc = subprocess.run(
        [sys.executable, "-m", "certfleet", command, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert f"certfleet {command}" in proc.stdout


# --- one process or two: the same answers --------------------------------------------------------


@dataclass(frozen=True)
class Journaled:
    """An executor around another that notes, in ``journal``, the process that takes each chunk.

    With ``wait``, a process goes on from its first chunk only once the other process has taken
    one too, so that both take some however fast either runs; with ``die``, the forked child
    dies with its first chunk undone."""

    inner: Executor
    journal: Path
    wait: bool = False
    die: bool = False

    def run(self, items: Sequence[str], work: Callable[[Sequence[str]], Output]) -> list[Output]:
        parent = os.getpid()

        def noted(chunk: Sequence[str]) -> Output:
            with self.journal.open("a") as fh:
                fh.write(f"{os.getpid()}\n")
            if self.wait:
                _wait_for(lambda: len(set(self.journal.read_text().split())) == 2, "one process took every chunk")
            if self.die and os.getpid() != parent:
                os._exit(3)  # a chunk taken, and never done
            return work(chunk)

        return self.inner.run(items, noted)


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    return tmp_path / "chunks"


def _wait_for(condition: Any, failure: str) -> None:
    import time

    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(failure)
        time.sleep(0.01)


def _run(capsys: pytest.CaptureFixture[str], args: list[str], executor: Executor) -> Any:
    """``certfleet ARGS`` (verify --each) as the command line runs it, with this executor."""
    request = parse_args(args)
    assert request is not None
    capsys.readouterr()
    code = run_each(request.options, executor=executor)
    captured = capsys.readouterr()
    return int(code), captured.out, captured.err


@pytest.mark.parametrize("extra", [["--json"], [], ["--name", "host1.example.test", "--json"]])
def test_forked_and_single_process_give_the_same_answers(
    cli: Any, capsys: pytest.CaptureFixture[str], batch: Batch, journal: Path, extra: list[str]
) -> None:
    args = _args(batch, *extra)
    # one leaf per chunk: as many chunks as leaves
    single = _run(capsys, args, Journaled(InProcessExecutor(chunk=1), journal))
    assert set(journal.read_text().split()) == {str(os.getpid())}
    journal.unlink()
    two = _run(capsys, args, Journaled(ForkExecutor(chunk=1), journal, wait=True))
    pids = journal.read_text().split()
    assert len(pids) == len(batch.leaves)
    assert len(set(pids)) == 2, "both processes took chunks"
    assert two == single
    plain = cli(*args)  # as a user runs it: the batch is small, one process does it all
    assert (plain.code, plain.out, plain.err) == single
    code, out, err = single
    assert code == 2  # unreadable files among the leaves
    lines = out.splitlines()
    if extra[-1:] == ["--json"]:
        records = [json.loads(line) for line in lines]
        assert [Path(r["file"]) for r in records] == batch.leaves
        by_file = {Path(r["file"]).name: r for r in records}
        if "--name" not in extra:
            assert by_file["good0.pem"]["valid"] is True
            assert by_file["expired.pem"]["problems"][0]["code"] == "expired"
            assert by_file["future.pem"]["problems"][0]["code"] == "not-yet-valid"
            assert by_file["client-only.pem"]["problems"][0]["code"] == "missing-server-auth"
            assert by_file["weak-key.pem"]["problems"][0]["code"] == "weak-key"
            assert by_file["fullchain.pem"]["valid"] is True
            assert by_file["leaf.der"]["valid"] is True
            assert by_file["crlf.pem"]["valid"] is True
            assert by_file["wildcard.pem"]["name"] == "*.wild.example.test"
            assert by_file["ip-only.pem"]["name"] == "192.0.2.7"
        assert not by_file["stranger.pem"]["valid"]
        assert "error" in by_file["garbage.pem"] and "error" in by_file["a-folder.pem"]
    else:
        assert lines[-1].startswith(f"{len(batch.leaves)} leaves: ")
    assert len(err.splitlines()) == 5  # garbage, empty, broken, missing, a folder


def test_a_child_that_dies_leaves_its_chunks_to_the_parent(
    cli: Any, capsys: pytest.CaptureFixture[str], batch: Batch, journal: Path
) -> None:
    single = cli(*_args(batch, "--json"))
    two = _run(capsys, _args(batch, "--json"), Journaled(ForkExecutor(chunk=1), journal, wait=True, die=True))
    assert two == (single.code, single.out, single.err)
    assert len(set(journal.read_text().split())) == 2  # the child took a chunk before it died


def test_no_second_process_to_be_had_means_one_does_all(
    cli: Any, capsys: pytest.CaptureFixture[str], batch: Batch
) -> None:
    single = cli(*_args(batch, "--json"))

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    alone = _run(capsys, _args(batch, "--json"), ForkExecutor(chunk=1, fork=no_fork))
    assert alone == (single.code, single.out, single.err)


# --- one leaf: the shortcuts answer as the full way does -----------------------------------------


def test_one_verifier_for_many_leaves_answers_as_a_fresh_one_for_each(batch: Batch) -> None:
    root = x509.load_pem_x509_certificate(batch.root.read_bytes())
    inter = x509.load_pem_x509_certificate(batch.inter.read_bytes())
    shared = Verifier(TrustStore((root,)), [inter], at=NOW, reuse_proven=True)
    checked = 0
    for path in batch.leaves:
        try:
            leaf = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            continue
        checked += 1
        for name in (None, "host2.example.test"):
            alone = verify_chain(leaf, [inter], TrustStore((root,)), name=name, at=NOW)
            assert shared.verify(leaf, name) == alone, path.name
    assert checked > 20
    assert shared.proven == (inter,)


def _pem_variants(cert: x509.Certificate) -> dict[str, bytes]:
    pem = cert.public_bytes(serialization.Encoding.PEM)
    body = b"".join(pem.splitlines()[1:-1])
    return {
        "plain": pem,
        "crlf": pem.replace(b"\n", b"\r\n"),
        "text around": b"Bag Attributes\n    friendlyName: www\n" + pem + b"trailing words\n",
        "no final newline": pem.rstrip(b"\n"),
        "one long line": b"-----BEGIN CERTIFICATE-----\n" + body + b"\n-----END CERTIFICATE-----\n",
        "utf-8 bom": b"\xef\xbb\xbf" + pem,
        "spaces in the base64": pem.replace(b"\n", b" \n", 3),
        "tabs before lines": pem.replace(b"\n", b"\n\t"),
        "missing end": pem.split(b"-----END")[0],
        "truncated base64": pem[: len(pem) // 2] + b"\n-----END CERTIFICATE-----\n",
    }


@pytest.mark.parametrize(
    "variant",
    [
        "plain",
        "crlf",
        "text around",
        "no final newline",
        "one long line",
        "utf-8 bom",
        "spaces in the base64",
        "tabs before lines",
        "missing end",
        "truncated base64",
    ],
)
def test_a_pem_leaf_read_straight_reads_as_the_full_reader_does(pki: PKI, tmp_path: Path, variant: str) -> None:
    from certfleet.formats import read_bytes

    data = _pem_variants(pki.leaf.cert)[variant]
    path = tmp_path / "leaf.pem"
    path.write_bytes(data)
    verifier = BatchVerifier(TrustStore((pki.root.cert,)), [pki.inter.cert], at=NOW)
    result = check_leaf_file(verifier, str(path), None, limit=MAX_INPUT_BYTES)
    try:
        expected_leaf: x509.Certificate | None = x509.load_pem_x509_certificate(data)
    except ValueError:
        try:
            certs = read_bytes(str(path), data).unique_certificates()
            expected_leaf = certs[0].cert if certs else None
        except CertfleetError:
            expected_leaf = None
    if expected_leaf is None:
        assert result.error is not None and result.sha256 is None
    else:
        assert result.error is None
        assert result.sha256 == fingerprint(expected_leaf)
        assert result == EachResult(str(path), True, "www.example.test", fingerprint(expected_leaf))


_PROBLEM = Problem(ProblemCode.EXPIRED, Severity.ERROR, "expired on 2024-06-01, 1 day ago", "renew it", "ab" * 32)


@pytest.mark.parametrize(
    "result",
    [
        EachResult("leaf.pem", True, "www.example.test", "ab" * 32),
        EachResult("leaf.pem", False, None, "cd" * 32),
        EachResult('dir/"quoted" \\ name\t.pem', True, "xn--bcher-kva.example", "ef" * 32),
        EachResult("blätter/zertifikat-\u00fc\u4e2d.pem", True, "192.0.2.1", "01" * 32),
        EachResult("odd-\udcff-bytes.pem", True, "x.test", "23" * 32),
        EachResult("broken.pem", False, None, None, error="not a certificate"),
        EachResult("old.pem", False, "old.example.test", "45" * 32, (_PROBLEM,)),
    ],
)
def test_the_json_line_is_json_dumps_of_the_record(result: EachResult) -> None:
    assert result.json_line() == json.dumps(result.to_dict())


# --- names that do not decode are said first, as before -----------------------------------------


def _tlv(tag: int, body: bytes) -> bytes:
    size = len(body)
    length = (
        bytes([size])
        if size < 128
        else bytes([0x80 | ((size.bit_length() + 7) // 8)]) + size.to_bytes((size.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + length + body


_ECDSA_SHA256 = _tlv(0x30, bytes.fromhex("06082a8648ce3d040302"))
_CN_UTF8 = bytes.fromhex("06035504030c")  # the OID of commonName, then the tag of a UTF8String


def _resigned(tbs: bytes, key: Any) -> x509.Certificate:
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return x509.load_der_x509_certificate(_tlv(0x30, tbs + _ECDSA_SHA256 + _tlv(0x03, b"\0" + signature)))


def _undecodable(cert: x509.Certificate, which: str, key: Any) -> x509.Certificate:
    """``cert`` re-signed by ``key`` with the UTF8String of one attribute of its subject or issuer under tag 0."""
    name = (cert.subject if which == "subject" else cert.issuer).public_bytes()
    broken = name.replace(_CN_UTF8, _CN_UTF8[:-1] + b"\x00", 1)
    assert broken != name
    tbs = cert.tbs_certificate_bytes
    start = tbs.index(name) if which == "issuer" else tbs.rindex(name)  # the issuer comes first
    damaged = _resigned(tbs[:start] + broken + tbs[start + len(name) :], key)
    with pytest.raises(ValueError):
        _ = damaged.subject if which == "subject" else damaged.issuer
    return damaged


def _verify(verifier: BatchVerifier, way: str, leaf: x509.Certificate, name: str | None = None) -> Any:
    """``leaf`` verified the plain way, or the batch's (an error raised, as verify does)."""
    if way == "verify":
        return verifier.verify(leaf, name)
    result = verifier.verify_many([leaf], name)[0]
    if isinstance(result, CertfleetError):
        raise result
    return result


@pytest.mark.parametrize("way", ["verify", "verify_many"])
@pytest.mark.parametrize("which", ["subject", "issuer"])
@pytest.mark.parametrize("name", [None, "www.example.test", "bad..example.test"])
def test_a_leaf_whose_names_do_not_decode_is_said_so(pki: PKI, way: str, which: str, name: str | None) -> None:
    leaf = _undecodable(pki.inter.leaf("www.example.test").cert, which, pki.inter.key)
    verifier = BatchVerifier(TrustStore((pki.root.cert,)), [pki.inter.cert], at=NOW, reuse_proven=True)
    _verify(verifier, way, pki.leaf.cert)  # the intermediate proven: the next leaf may take the shortcut
    assert verifier.proven == (pki.inter.cert,)
    with pytest.raises(FormatError, match="subject or issuer name does not decode"):
        _verify(verifier, way, leaf, name)


@pytest.mark.parametrize("way", ["verify", "verify_many"])
def test_a_path_found_does_not_hide_an_issuer_name_that_does_not_decode(way: str) -> None:
    # A trust store refuses such an anchor today; should one ever hold it, the leaf it issued
    # verifies in cryptography, and its issuer's name is still said not to decode.
    root = testing.TestCA.root("Broken Root")
    leaf = root.leaf("www.example.test").cert
    name = root.cert.subject.public_bytes()
    broken = name.replace(_CN_UTF8, _CN_UTF8[:-1] + b"\x00", 1)
    broken_root = _resigned(root.cert.tbs_certificate_bytes.replace(name, broken), root.key)
    broken_leaf = _resigned(leaf.tbs_certificate_bytes.replace(name, broken), root.key)
    store = TrustStore((root.cert,))
    object.__setattr__(store, "certs", (broken_root,))
    verifier = BatchVerifier(store, at=NOW)
    with pytest.raises(FormatError, match="subject or issuer name does not decode"):
        _verify(verifier, way, broken_leaf)


# --- many leaves at once: the steps answer as one leaf at a time does -------------------------------


def _alone(root: x509.Certificate, inter: x509.Certificate, leaf: x509.Certificate, name: str | None) -> Any:
    """A fresh verifier's answer for one leaf: its Verification, or the kind and words of its error."""
    try:
        return Verifier(TrustStore((root,)), [inter], at=NOW).verify(leaf, name)
    except CertfleetError as exc:
        return (type(exc), str(exc))


@pytest.mark.parametrize("name", [None, "host2.example.test", "bad..example.test"])
def test_verify_many_answers_as_verify_does_leaf_by_leaf(batch: Batch, pki: PKI, name: str | None) -> None:
    root = x509.load_pem_x509_certificate(batch.root.read_bytes())
    inter = x509.load_pem_x509_certificate(batch.inter.read_bytes())
    leaves = []
    for path in batch.leaves:
        try:
            leaves.append(x509.load_pem_x509_certificate(path.read_bytes()))
        except (OSError, ValueError):
            continue
    # leaves whose names do not decode, among the others
    broken = [_undecodable(pki.inter.leaf("www.example.test").cert, w, pki.inter.key) for w in ("subject", "issuer")]
    leaves[3:3] = broken[:1]
    leaves += broken[1:]
    shared = BatchVerifier(TrustStore((root,)), [inter], at=NOW, reuse_proven=True)
    many = shared.verify_many(leaves, name)
    assert len(many) == len(leaves) > 20
    got = [(type(r), str(r)) if isinstance(r, CertfleetError) else r for r in many]
    assert got == [_alone(root, inter, leaf, name) for leaf in leaves]
    if name == "bad..example.test":
        assert all(isinstance(r, CertfleetError) for r in many)
    else:
        assert sum(isinstance(r, CertfleetError) for r in many) == 2  # the two leaves whose names do not decode
        assert any(not isinstance(r, CertfleetError) and r.valid for r in many)


def test_verify_many_without_anything_trusted_refuses_each_leaf(batch: Batch) -> None:
    inter = x509.load_pem_x509_certificate(batch.inter.read_bytes())
    leaf = x509.load_pem_x509_certificate(batch.leaves[1].read_bytes())
    verifier = BatchVerifier(TrustStore(()), [inter], at=NOW)
    many = verifier.verify_many([leaf, leaf])
    assert many == [verifier.verify(leaf)] * 2
    assert not any(isinstance(r, CertfleetError) or r.valid for r in many)


@pytest.mark.parametrize(("leaves", "size"), [(1, GROUP_BYTES), (3, GROUP_BYTES), (64, 1)])
def test_groups_of_any_bound_give_the_same_records(batch: Batch, leaves: int, size: int) -> None:
    root = x509.load_pem_x509_certificate(batch.root.read_bytes())
    inter = x509.load_pem_x509_certificate(batch.inter.read_bytes())
    paths = [str(p) for p in batch.leaves]

    def records(**group: int) -> list[EachResult]:
        verifier = BatchVerifier(TrustStore((root,)), [inter], at=NOW)
        return check_leaf_files(verifier, paths, None, (), limit=MAX_INPUT_BYTES, **group)

    whole = records()
    # a size of 1: every file makes a group of its own
    assert records(group_leaves=leaves, group_bytes=size) == whole
    assert [r.file for r in whole] == paths
    assert whole == [
        check_leaf_file(BatchVerifier(TrustStore((root,)), [inter], at=NOW), p, None, (), limit=MAX_INPUT_BYTES)
        for p in paths
    ]


# --- the files, and the end of the process ---------------------------------------------------------------


_CHUNK = batch_files._READ_CHUNK  # the first read's size


@pytest.mark.parametrize("size", [0, 1, 977, _CHUNK - 1, _CHUNK, _CHUNK + 1, 200_003])
def test_a_file_is_read_whole_whatever_its_size(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "leaf"
    path.write_bytes(data)
    assert read_file(str(path), MAX_INPUT_BYTES) == data


def test_a_file_is_read_up_to_one_byte_over_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "large"
    path.write_bytes(os.urandom(300_000))
    assert read_file(str(path), 100_000) == path.read_bytes()[:100_001]


def test_a_pipe_written_in_parts_is_read_whole(tmp_path: Path) -> None:
    import threading
    import time

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    parts = [b"-----BEGIN CERTIFICATE-----\n", b"M", b"IIB\n" * 5000]

    def write() -> None:
        with fifo.open("wb", buffering=0) as fh:
            for part in parts:
                fh.write(part)
                time.sleep(0.05)  # each part a read of its own

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert read_file(str(fifo), MAX_INPUT_BYTES) == b"".join(parts)
    finally:
        writer.join(timeout=30)


def test_a_batch_process_ends_with_all_its_output_and_its_exit_code(cli: Any, cli_proc: Any, batch: Batch) -> None:
    for extra in (["--json"], []):
        inside = cli(*_args(batch, *extra))
        process = cli_proc(*_args(batch, *extra))
        assert (process.code, process.out, process.err) == (inside.code, inside.out, inside.err)
        assert process.code == 2  # unreadable files among the leaves
        assert len(process.out.splitlines()) == len(batch.leaves) + (0 if extra else 1)
