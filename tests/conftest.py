"""Fixtures every test area shares: a test PKI made at run time, and ways to run the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from certfleet.testing import TestCA, TestLeaf
from support import mark_running


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    mark_running(item.get_closest_marker("peer") is not None)


@dataclass
class PKI:
    root: TestCA
    inter: TestCA
    leaf: TestLeaf  # for www.example.test and example.test, ECDSA P-256

    def root_file(self, folder: Path) -> Path:
        path = folder / "root.pem"
        path.write_bytes(self.root.cert_pem())
        return path


@pytest.fixture(scope="session")
def pki() -> PKI:
    root = TestCA.root("certfleet Test Root")
    inter = root.intermediate("certfleet Test Intermediate")
    leaf = inter.leaf("www.example.test", "example.test")
    return PKI(root=root, inter=inter, leaf=leaf)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``certfleet ARGS`` in this process; returns exit code, stdout and stderr."""
    from certfleet.cli import main

    def run(*args: str | os.PathLike[str]) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def cli_proc() -> Any:
    """Run ``python -m certfleet ARGS`` as a real process (exit codes and output as a user sees them)."""

    def run(*args: str | os.PathLike[str], env: dict[str, str] | None = None, input: bytes | None = None) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "certfleet", *map(str, args)],
            capture_output=True,
            env={**os.environ, **(env or {})},
            input=input,
            timeout=120,
            check=False,
        )
        return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    return run


@pytest.fixture
def certfleet_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, empty CERTFLEET_HOME for tests of the store."""
    home = tmp_path / "home"
    monkeypatch.setenv("CERTFLEET_HOME", str(home))
    yield home


_SUMMARY = pytest.StashKey[list[str]]()


@pytest.fixture
def summary_line(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Add a line to the end of the test run's report, where a reader sees it (also under -q)."""
    return pytestconfig.stash.setdefault(_SUMMARY, []).append


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for line in config.stash.get(_SUMMARY, []):
        terminalreporter.write_line(line)
