"""The README runs as written.

The tour ("## A tour: from the names to the server files") is run command by command, in README
order, in an empty folder, each command through ``bash -c`` as a reader types it, with
``certfleet`` on ``PATH`` as ``. .venv/bin/activate`` puts it there (a wrapper calling the
``[project.scripts]`` entry point of pyproject.toml, as pip's does). The files the tour does not
make itself are made at run time by a private demo CA (:class:`DemoCA`): its root
``demo-root.pem``, the package ``www_example_com.zip`` it sends back for the CSR of step 2, a PFX
with another password, and the inputs of ``verify --each``.

Each command of a ``console`` block must exit as its output says (:func:`expected_exit`) and
print exactly the lines the README shows, once the values that differ from run to run are
replaced (:data:`VARYING`: fingerprints, key ids, days left, dates, serials). Each command of an
``sh`` block must exit 0. The one place a command is not run exactly as written is listed in
:data:`REWRITTEN`, with its reason.

The first command of the README (install, then ``certfleet serve``) is checked without
reinstalling, by :func:`test_first_command_installs_certfleet_and_serves_on_the_embedded_default`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from certfleet.certinfo import fingerprint
from certfleet.testing import TestCA, pem
from support import REPO

README = REPO / "README.md"
TOUR = "## A tour: from the names to the server files"

# What differs from one run of the tour to the next, on both sides of the comparison. Each value
# is replaced by a placeholder, so the words around it are still compared.
VARYING: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[0-9a-f]{64}\b"), "<sha256>"),  # a full SHA-256: a key id, a fingerprint
    (re.compile(r"\bsha256:[0-9a-f]{16}…"), "sha256:<fingerprint>…"),  # a certificate, shortened
    (re.compile(r"\b\d+ days left\b"), "<n> days left"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)?(?: UTC)?"), "<date>"),
    (re.compile(r"\bserial(\s+)[0-9a-f]{2,40}\b"), r"serial\1<serial>"),
)

# Commands not run exactly as written: what is changed, and why.
REWRITTEN: dict[str, str] = {
    "/etc/": (
        "writing under /etc needs root: the path is taken inside the tour's folder (etc/), where "
        "etc/apache2, etc/nginx and etc/haproxy exist as on a machine with those servers"
    ),
}

# The width of the reader's terminal: the README's lines are up to 100 columns of tree.
COLUMNS = "100"


@dataclass(frozen=True)
class Step:
    """One command of the tour: as written (continuations joined), and what the README shows."""

    command: str
    shown: tuple[str, ...] | None  # the output under it in a console block; None in an sh block
    line: int  # where it starts in README.md

    @property
    def where(self) -> str:
        return f"README.md:{self.line}: {self.command}"


def tour_section(text: str) -> tuple[str, int]:
    """The tour's text and the README line it starts on."""
    start = text.index(TOUR)
    end = text.find("\n## ", start + len(TOUR))
    return text[start : end if end != -1 else len(text)], text.count("\n", 0, start) + 1


def parse_steps(section: str, first_line: int = 1) -> list[Step]:
    """Every command of the ``console`` and ``sh`` blocks of ``section``, in order."""
    steps: list[Step] = []
    fence: str | None = None
    lines = section.splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i]
        number = first_line + i
        i += 1
        if raw.startswith("```"):
            fence = raw[3:].strip() if fence is None else None
            continue
        if fence not in ("console", "sh"):
            continue
        if fence == "console" and not raw.startswith("$ "):
            last = steps[-1] if steps else None
            if last is None or last.shown is None:
                raise AssertionError(f"README.md:{number}: console output before any command")
            steps[-1] = Step(last.command, (*last.shown, raw.rstrip()), last.line)
            continue
        text = raw[2:] if fence == "console" else raw
        if fence == "sh" and (not text.strip() or text.lstrip().startswith("#")):
            continue
        while text.endswith("\\") and i < len(lines):
            text = text[:-1].rstrip() + " " + lines[i].strip()
            i += 1
        command = text.strip()
        steps.append(Step(command, () if fence == "console" else None, number))
    return [Step(s.command, _trim(s.shown), s.line) for s in steps]


def _trim(shown: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if shown is None:
        return None
    out = list(shown)
    while out and not out[-1]:
        out.pop()
    return tuple(out)


def normalise(lines: Iterator[str] | tuple[str, ...] | list[str]) -> list[str]:
    out = []
    for line in lines:
        for pattern, placeholder in VARYING:
            line = pattern.sub(placeholder, line)
        out.append(line.rstrip())
    while out and not out[-1]:
        out.pop()
    return out


def expected_exit(shown: tuple[str, ...] | None) -> int:
    """The exit code the README's own rule gives the output it shows: 2 for bad input (one
    ``error:`` line), 1 when the check found problems (a ``✗`` line), else 0; an sh block's
    command exits 0."""
    if not shown:
        return 0
    if shown[0].startswith("error:"):
        return 2
    return 1 if any(line.startswith("✗") for line in shown) else 0


def difference(step: Step, code: int, printed: str) -> str | None:
    """What differs between the README's step and what its command did; None when nothing."""
    want = expected_exit(step.shown)
    problems = []
    if code != want:
        problems.append(f"exit code {code}, the README's output means {want}")
    if step.shown is not None:
        shown, got = normalise(step.shown), normalise(printed.splitlines())
        if shown != got:
            diff = difflib.unified_diff(shown, got, "README.md", "printed", lineterm="", n=1)
            problems.append("\n".join(diff))
    if not problems:
        return None
    return f"{step.where}\n" + "\n".join(problems) + f"\n--- as printed ---\n{printed}"


# -- the private demo CA ----------------------------------------------------------------------------


class DemoCA:
    """The CA of the tour: it publishes its root and answers a CSR with a zip, as CAs do."""

    PFX_PASSWORD = b"the right one"

    def __init__(self) -> None:
        self.root = TestCA.root("Demo Root CA")
        self.issuing = self.root.intermediate("Demo Issuing CA G2")
        self.makers: dict[str, Callable[[Path], object]] = {
            "demo-root.pem": lambda path: path.write_bytes(self.root.cert_pem()),
            "www_example_com.zip": self.package,
            "micollab.pfx": self.pfx,
            "pfx-pass.txt": lambda path: path.write_text("pfx password for the tour\n"),
            "intermediates.pem": lambda path: path.write_bytes(self.issuing.cert_pem()),
            "roots.pem": lambda path: path.write_bytes(self.root.cert_pem()),
            "leaves/": self.leaves,
        }

    def provide(self, command: str, folder: Path) -> None:
        """Make the files ``command`` names that the tour expects from elsewhere, once."""
        for name, make in self.makers.items():
            path = folder / name
            if name in command and not path.exists():
                make(path)

    def package(self, path: Path) -> None:
        """What the CA sends back for ``www.csr`` (made by step 2): the certificate and a bundle
        with the issuing CA and the root."""
        csr = x509.load_pem_x509_csr((path.parent / "www.csr").read_bytes())
        leaf = self.issuing.sign_csr(csr)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("www_example_com.crt", pem(leaf))
            z.writestr("bundle.crt", pem(self.issuing.cert, self.root.cert))

    def pfx(self, path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = self.issuing.leaf("micollab.example.com", private_key=key)
        encryption = BestAvailableEncryption(self.PFX_PASSWORD)
        path.write_bytes(pkcs12.serialize_key_and_certificates(b"micollab", key, leaf.cert, leaf.chain, encryption))

    def leaves(self, path: Path) -> None:
        path.mkdir()
        for name in ("www.example.com", "mbg.example.com"):
            (path / f"{name}.pem").write_bytes(self.issuing.leaf(name).cert_pem())


# -- running the tour -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    step: Step
    command: str  # as run (after REWRITTEN)
    code: int
    printed: str  # stdout and stderr, interleaved as on a terminal


def entry_point() -> str:
    """``module:function`` that ``pip install .`` makes ``.venv/bin/certfleet`` call."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    target: str = project["project"]["scripts"]["certfleet"]
    return target


def install_command(bin_dir: Path) -> None:
    """A ``certfleet`` command as pip writes it: this interpreter, the entry point, the args."""
    module, function = entry_point().split(":")
    code = f"import sys; from {module} import {function}; sys.argv[0] = 'certfleet'; sys.exit({function}())"
    script = bin_dir / "certfleet"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(code)} "$@"\n')
    script.chmod(0o755)


def tour_env(tmp: Path) -> dict[str, str]:
    """A reader's shell: ``certfleet`` on PATH, a home of its own (no store of the user is
    touched), nothing of certfleet's settings from the environment the tests run in."""
    bin_dir = tmp / "venv-bin"
    bin_dir.mkdir(parents=True)
    install_command(bin_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERTFLEET_", "XDG_"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        HOME=str(tmp / "home"),
        CERTFLEET_HOME=str(tmp / "home" / "certfleet"),
        COLUMNS=COLUMNS,
        PYTHONUNBUFFERED="1",  # stdout and stderr in the order a terminal shows them
    )
    (tmp / "home").mkdir()
    return env


def rewrite(command: str, folder: Path) -> str:
    return command.replace(" /etc/", f" {folder}/etc/")


def run_tour(tmp: Path, steps: list[Step], demo: DemoCA) -> list[Ran]:
    env = tour_env(tmp)
    folder = tmp / "tour"
    folder.mkdir()
    for server in ("apache2", "nginx", "haproxy"):
        (folder / "etc" / server).mkdir(parents=True)
    ran = []
    for step in steps:
        demo.provide(step.command, folder)
        command = rewrite(step.command, folder)
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
        ran.append(Ran(step, command, proc.returncode, proc.stdout.decode(errors="replace")))
    return ran


@pytest.fixture(scope="module")
def steps() -> list[Step]:
    section, first = tour_section(README.read_text())
    return parse_steps(section, first)


@dataclass(frozen=True)
class Tour:
    folder: Path
    env_tmp: Path
    demo: DemoCA
    ran: list[Ran]


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory, steps: list[Step]) -> Tour:
    tmp = tmp_path_factory.mktemp("readme-tour")
    demo = DemoCA()
    return Tour(tmp / "tour", tmp, demo, run_tour(tmp, steps, demo))


# -- the tests -------------------------------------------------------------------------------------


def test_every_command_of_the_tour_exits_and_prints_what_the_readme_shows(tour: Tour) -> None:
    problems = [d for r in tour.ran if (d := difference(r.step, r.code, r.printed)) is not None]
    assert not problems, "\n\n".join(problems)


def test_the_tour_is_what_this_test_runs(steps: list[Step]) -> None:
    """The parse found the tour (not an empty section), every command is certfleet's, each
    console command shows its output, and each rewrite of REWRITTEN is still needed."""
    verbs = [s.command.split()[1] for s in steps]
    assert all(s.command.startswith("certfleet ") for s in steps), [s.where for s in steps]
    assert {"names", "csr", "chain", "convert", "verify", "inspect"} <= set(verbs), verbs
    assert all(s.shown for s in steps if s.shown is not None), [s.where for s in steps if s.shown == ()]
    assert sum(s.shown is not None for s in steps) >= 5
    for needle in REWRITTEN:
        assert any(needle in s.command for s in steps), f"REWRITTEN lists {needle!r}, which no command has"
    # every command that judges a chain from the demo CA is given its root
    judged = [s for s in steps if s.command.split()[1] in ("chain", "convert", "verify") and "--each" not in s.command]
    assert judged and all("--trust demo-root.pem" in s.command for s in judged), [s.where for s in judged]


def test_the_files_the_tour_says_it_writes_are_there(tour: Tour) -> None:
    folder = tour.folder
    key = folder / "www.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert {p.name for p in (folder / "etc/apache2/tls/www").iterdir()} >= {"cert.pem", "chain.pem", "privkey.pem"}
    assert {p.name for p in (folder / "etc/nginx/tls/www").iterdir()} >= {"fullchain.pem", "privkey.pem"}
    haproxy = (folder / "etc/haproxy/www.pem").read_bytes()
    assert haproxy.count(b"BEGIN CERTIFICATE") == 2 and b"PRIVATE KEY" in haproxy
    chain = x509.load_pem_x509_certificates((folder / "fullchain.pem").read_bytes())
    assert [c.subject.rfc4514_string() for c in chain[1:]] == [tour.demo.issuing.cert.subject.rfc4514_string()]
    password = (folder / "pfx-pass.txt").read_text().strip().encode()
    for name in ("www.pfx", "www-2016.pfx"):
        loaded = pkcs12.load_pkcs12((folder / name).read_bytes(), password)
        assert loaded.cert is not None and fingerprint(loaded.cert.certificate) == fingerprint(chain[0])


def test_verify_each_prints_one_json_object_per_leaf(tour: Tour) -> None:
    (each,) = [r for r in tour.ran if "--each" in r.command]
    objects = [json.loads(line) for line in each.printed.splitlines() if line.strip()]
    assert len(objects) == len(list((tour.folder / "leaves").iterdir())) == 2, each.printed


def test_the_demo_root_is_needed_so_the_trust_step_matters(tour: Tour, steps: list[Step]) -> None:
    """The demo CA is private: without ``--trust demo-root.pem`` the tour's chain step fails."""
    (chain,) = [s for s in steps if s.command.split()[1] == "chain"]
    bare = chain.command.replace("--trust demo-root.pem", "").replace("--out fullchain.pem", "--out bare.pem")
    proc = subprocess.run(
        ["bash", "-c", bare],
        cwd=tour.folder,
        env=tour_env(tour.env_tmp / "bare"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[untrusted]" in proc.stdout and "give its root with --trust" in proc.stdout
    assert not (tour.folder / "bare.pem").exists()


def test_a_readme_that_drifts_from_the_program_fails(tour: Tour) -> None:
    """The comparison is strict: one changed word, one missing line or another exit code is caught."""
    ran = next(r for r in tour.ran if r.step.shown and r.step.command.split()[1] == "chain")
    assert difference(ran.step, ran.code, ran.printed) is None
    shown = ran.step.shown or ()
    reworded = tuple(line.replace("matches the leaf", "fits the leaf") for line in shown)
    missing = shown[:-1]
    for drifted in (reworded, missing):
        assert difference(Step(ran.step.command, drifted, ran.step.line), ran.code, ran.printed) is not None
    assert difference(ran.step, 1, ran.printed) is not None
    # and what varies from run to run is all that is forgiven
    assert normalise(["└── leaf: www.example.com  sha256:ced3c178308286b1…  89 days left"]) == [
        "└── leaf: www.example.com  sha256:<fingerprint>…  <n> days left"
    ]


def test_the_parser_joins_continuations_and_keeps_output_with_its_command() -> None:
    section = (
        "intro\n```console\n$ certfleet a \\\n    --b c\nout 1\n\nout 2\n\n$ certfleet d\n```\n"
        "```sh\n# a comment\ncertfleet e  # says e\n\ncertfleet f \\\n    --g\n```\n```toml\nx = 1\n```\n"
    )
    assert parse_steps(section, 10) == [
        Step("certfleet a --b c", ("out 1", "", "out 2"), 12),
        Step("certfleet d", (), 18),
        Step("certfleet e  # says e", None, 22),
        Step("certfleet f --g", None, 24),
    ]


# -- the first command: install, then the console on the embedded default ----------------------------


def _first_command() -> list[str]:
    text = README.read_text()
    block = re.search(r"```sh\n(.+?)\n```", text, re.S)
    assert block, "the README has no sh block"
    return [part.strip() for part in block.group(1).split("&&")]


@pytest.mark.peer  # starts certfleet serve
def test_first_command_installs_certfleet_and_serves_on_the_embedded_default(tmp_path: Path) -> None:
    """The README's first command makes ``.venv``, installs certfleet into it (pyproject's
    ``[project.scripts]`` gives ``.venv/bin/certfleet``) and runs ``certfleet serve``: with no
    setting at all it creates the SQLite store in the folder the README names under ``$HOME``
    and prints the address, the certificate's fingerprint and the one-time setup link.

    The port is chosen free at run time (``--port``): the default, 8443, may be in use on the
    machine the tests run on. The served certificate, TLS versions and a restart are checked in
    tests/console/test_console_tls.py (test_fresh_home_serves_bootstrap_with_printed_fingerprint_
    and_setup_link), through ``CERTFLEET_HOME``.
    """
    from support.console import serve
    from support.servers import served_chain

    venv, install, run = _first_command()
    assert venv == "python3 -m venv .venv" and install == ".venv/bin/pip install ."
    program, command, *args = shlex.split(run)
    assert (program, command) == (".venv/bin/certfleet", "serve")
    assert ". .venv/bin/activate" in README.read_text(), "the README must say how the tour's certfleet is reached"
    module, function = entry_point().split(":")
    assert callable(getattr(__import__(module, fromlist=[function]), function))

    said = re.search(r"a SQLite store in `([^`]+)`", README.read_text())
    assert said, "the README no longer says where the embedded store is"
    user_home = tmp_path / "user"
    home = user_home / said.group(1).removeprefix("~/")
    home.parent.mkdir(parents=True)
    unset = {"CERTFLEET_HOME": "", "XDG_DATA_HOME": "", "CERTFLEET_DATABASE_URL": "", "HOME": str(user_home)}
    with serve(home, *args, env=unset) as served:
        out = served.out()
        assert f"certfleet console on https://127.0.0.1:{served.port}/" in out, out
        assert served.fingerprint() == fingerprint(served_chain(served.port, "localhost")[0]), out
        link = served.setup_url()
        assert link is not None and link.startswith(served.url + "/setup/"), out
        assert (home / "certfleet.db").is_file(), sorted(p.name for p in user_home.rglob("*"))
