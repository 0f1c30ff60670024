"""The console speaks of its own pages, never of command-line options: every hint the library
gives that can reach a console page is said in the console's words; a password or trust hint on a
page names the field or the page to use. And an error page says what happened: a page that does
not exist is "Not found"."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.console.hints import Face, console_hint
from certfleet.testing import TestCA
from support import REPO
from support.console import ConsoleEnv, add_node, logged_in, make_env, upload

SRC = REPO / "src" / "certfleet"
# words of the command line: a `certfleet ...` command, an option, the password variable
CLI_WORDS = re.compile(
    r"`certfleet |certfleet (?:init|node|apply|request|import|export|deploy|rollback|trust|key|history|status) "
    r"|(?<![\w-])--[a-z]|CERTFLEET_PASSWORD"
)
# texts with command-line words that never reach a console page, and why
NOT_IN_THE_CONSOLE = {
    "--listen": "certfleet watch's metrics listener",
    "--trust-only and --system": "the CLI's trust options",
    "--name {}:": "check HOST --name, a CLI argument",
    "--name {} is a wildcard": "check HOST --name, a CLI argument",
    "--legacy": "the console sends legacy only with PKCS#12",
    "--friendly-name": "the console sends no friendly name",
    "--no-key-password, not both": "the console always sends a password",
    "raise --deadline or --concurrency": "certfleet check's batch deadline",
    "run `certfleet init`": "the console runs on a store it opened",
    "`certfleet node add`": "certfleet apply's fleet file",
    "# certfleet fleet file": "a comment in the fleet file certfleet writes",
    "as `certfleet status` says": "a metric's description",
}
# driven from the command line only so far: no console page or API route renews or sends alerts
# (the autopilot: its words go to `certfleet renew` and to the alert destinations), or copies a
# store, so none of their hints can reach a console page yet. Issuing (acme/, store/_issuers.py)
# has its pages (Issuers, a lineage's Issuing page, issue now, revoke): its hints are held here.
# The checks asked of a zone's worker (jobs/zone_checks.py) are `certfleet check --nodes/--zone`'s:
# the console has no endpoint check (its status shows the recorded probes, worded in jobs/probes.py)
NOT_IN_THE_CONSOLE_YET = ("autopilot/", "renewal.py", "store/_copy.py", "jobs/zone_checks.py")


def _text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)  # type: ignore[misc]
    return None


def _library_texts() -> Iterator[tuple[str, str]]:
    """Every string the library can show a user (docstrings left out), as (where, text)."""
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        # the faces' own words, and _batch: the option table of `verify --each`, a command line
        if rel.parts[0] in ("cli", "console", "_batch") or rel.name == "testing.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)  # type: ignore[attr-defined]
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        parts = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in docstrings or (id(node) in parts and not isinstance(node, ast.JoinedStr)):
                continue
            text = _text(node)
            if text is not None:
                yield f"{rel}:{getattr(node, 'lineno', 0)}", text


def _cli_worded() -> list[tuple[str, str]]:
    out = []
    for where, text in _library_texts():
        if where.startswith(NOT_IN_THE_CONSOLE_YET):
            continue
        if CLI_WORDS.search(text) and not any(key in text for key in NOT_IN_THE_CONSOLE):
            out.append((where, text))
    return out


CLI_WORDED = _cli_worded()


def test_the_scan_finds_the_library_hints() -> None:
    # if this fails, the scan no longer sees the library's hints (or they moved)
    assert len(CLI_WORDED) > 15
    assert any("CERTFLEET_PASSWORD" in text for _, text in CLI_WORDED)


@pytest.mark.parametrize(("where", "text"), CLI_WORDED, ids=[w for w, _ in CLI_WORDED])
@pytest.mark.parametrize("face", list(Face))
def test_every_library_hint_is_said_in_the_consoles_words(where: str, text: str, face: Face) -> None:
    said = console_hint(text.replace("{}", "web"), face)
    assert not CLI_WORDS.search(said), f"{where}: {said!r}"


@pytest.mark.parametrize(
    ("hint", "page", "api"),
    [
        (
            "give it with --password, --password-file or CERTFLEET_PASSWORD",
            "type it in the Password field and read the files again",
            "send it in the password field",
        ),
        (
            "if this is your own CA, trust its root: `certfleet trust add ROOT.pem`; "
            "else add the CA's intermediate bundle to the import",
            "if this is your own CA, add its root on the Trust anchors page; "
            "else add the CA's intermediate bundle to the import",
            "if this is your own CA, add its root with POST /api/v1/trust-anchors; "
            "else add the CA's intermediate bundle to the import",
        ),
        (
            "renew: `certfleet request web`, then import and deploy",
            "renew: generate a CSR for web, then import and deploy",
            "renew: generate a CSR for web, then import and deploy",
        ),
        ("check the certificate's dates", "check the certificate's dates", "check the certificate's dates"),
        ("`certfleet account list` lists them", "the Accounts page lists them", "GET /api/v1/accounts lists them"),
        (
            "`certfleet account reset-password` changes its password",
            "Reset password on the Accounts page changes it",
            "POST /api/v1/accounts/NAME/password changes it",
        ),
    ],
)
def test_known_hints_in_each_faces_words(hint: str, page: str, api: str) -> None:
    assert console_hint(hint) == page
    assert console_hint(hint, Face.API) == api
    assert console_hint(None) == ""


@pytest.fixture
def env(tmp_path: Path) -> ConsoleEnv:
    return make_env(tmp_path / "home")


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.root("hints Test Root").intermediate("hints Test Intermediate")


def test_password_hint_names_the_field_not_an_option(env: ConsoleEnv, ca: TestCA, tmp_path: Path) -> None:
    from certfleet.export import pkcs12 as make_pfx

    csrf = logged_in(env)
    add_node(env, csrf, "main", ["www.example.test"], [f"pem:{tmp_path / 'main'}"], new_lineage="web")
    leaf = ca.leaf("www.example.test")
    pfx = make_pfx(leaf.key, leaf.cert, tuple(leaf.chain), password=b"secret")
    page = upload(env, csrf, "web", [("site.pfx", pfx)])
    assert page.status_code == 400
    assert "type it in the Password field" in page.text and "--password" not in page.text
    api = env.client.post(
        "/api/v1/lineages/web/import", files=[("files", ("site.pfx", pfx))], headers={"x-csrf-token": csrf}
    )
    assert api.status_code == 400 and api.json()["hint"] == "send it in the password field"


def test_an_unknown_page_is_titled_not_found(env: ConsoleEnv) -> None:
    logged_in(env)
    r = env.client.get("/no/such/page")
    assert r.status_code == 404
    assert "<title>Not found · certfleet</title>" in r.text and "<h1>Not found</h1>" in r.text
    assert "Refused" not in r.text
