"""What a plain command loads at start: opening a store whose schema is current loads no part of
Alembic, and no command but ``serve`` loads the web stack. Each command runs in a fresh
interpreter, whose ``sys.modules`` is then looked at (nothing is timed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory

from certfleet.store import Store
from certfleet.store._engine import Database, _alembic_config, database_url

# the web console's stack, the migrations' machinery and its templates
_HEAVY = ("alembic", "mako", "fastapi", "starlette", "uvicorn", "jinja2", "multipart", "httptools", "websockets")


def _run_fresh(home: Path, args: list[str]) -> tuple[int, Any, set[str]]:
    """``certfleet ARGS --json`` in a fresh interpreter: its exit code, its JSON, the modules it loaded."""
    probe = (
        "import contextlib, io, json, sys\n"
        "from certfleet.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    code = main({args!r})\n"
        "print(json.dumps({'code': code, 'out': out.getvalue(), 'modules': sorted(sys.modules)}))\n"
    )
    env = {**os.environ, "CERTFLEET_HOME": str(home)}
    env.pop("CERTFLEET_DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    said = json.loads(proc.stdout.splitlines()[-1])
    return said["code"], json.loads(said["out"]), set(said["modules"])


def _heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in _HEAVY}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CERTFLEET_HOME", str(home))
    monkeypatch.delenv("CERTFLEET_DATABASE_URL", raising=False)
    Store.init(home).close()
    return home


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["issuer", "list", "--json"], "issuers"),
        (["status", "--json"], "lineages"),
        (["node", "list", "--json"], "nodes"),
    ],
    ids=["issuer list", "status", "node list"],
)
def test_a_command_on_a_current_store_loads_neither_alembic_nor_the_web_stack(
    home: Path, args: list[str], key: str
) -> None:
    code, out, modules = _run_fresh(home, args)
    assert code == 0
    assert out[key] == []
    assert "certfleet.store._store" in modules  # the store was opened
    assert "sqlalchemy" in modules
    assert _heavy(modules) == set()


def test_an_older_schema_is_still_brought_up_to_date_on_opening(home: Path) -> None:
    revisions = [r.revision for r in ScriptDirectory.from_config(_alembic_config()).walk_revisions()]
    head, before = revisions[0], revisions[1]  # newest first
    db = Database(database_url(home), timeout=5)
    db.downgrade(before)
    assert db.current() == {before}
    db.dispose()

    code, out, modules = _run_fresh(home, ["issuer", "list", "--json"])
    assert code == 0
    assert out == {"issuers": []}
    assert "alembic" in modules  # what migrating needs is loaded when there is migrating to do
    db = Database(database_url(home), timeout=5)
    assert db.current() == db.heads() == {head}
    db.dispose()
