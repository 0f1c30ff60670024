"""Two processes at once, and a writer killed mid-write: the store stays whole, nothing committed is
lost; on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from certfleet.errors import StoreBusyError
from certfleet.fleet.model import NodeSpec, TargetSpec
from certfleet.store import Store
from support.postgres import Backend, backend, pg_url, postgres

# the fixtures of either backend, imported where they are used
__all__ = ["backend", "pg_url", "postgres"]

# adds nodes one by one and prints each name once its transaction has committed
WRITER = textwrap.dedent(
    """
    import sys
    from certfleet.errors import StoreBusyError
    from certfleet.fleet.model import NodeSpec, TargetSpec
    from certfleet.store import Store

    store = Store.open()
    prefix, count = sys.argv[1], int(sys.argv[2])
    for i in range(count):
        name = f"{prefix}-{i}"
        names = (f"{name}.example.test", f"alt.{name}.example.test")
        spec = NodeSpec(name, names, (TargetSpec("pem", "/srv/" + name),))
        try:
            store.add_node(spec, lineage=prefix)
            store.put_lineage(prefix, names=[f"{prefix}-extra-{i}.example.test"])
        except StoreBusyError:
            print("busy", flush=True)
            continue
        print(name, flush=True)
    """
)

# takes the write lock the way any SQLite writer does, holds it until told to let go
SQLITE_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO settings (key, value) VALUES ('held', 'yes')")
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("ROLLBACK")
    """
)

# takes the store's write lock on PostgreSQL as every certfleet writer does, holds it until told
PG_HOLDER = textwrap.dedent(
    """
    import sys
    from certfleet.store._engine import Database

    with Database(sys.argv[1], timeout=10).session(write=True):
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


def _integrity(backend: Backend) -> str:
    if not backend.is_sqlite:
        return "ok"  # PostgreSQL has no such check; what it committed is whole by design
    with sqlite3.connect(backend.home / "certfleet.db") as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


@pytest.fixture
def home(backend: Backend) -> Backend:
    Store.init().close()
    return backend


@pytest.mark.parametrize("after", [1, 9, 33])
def test_writer_killed_mid_write_loses_nothing_committed(home: Backend, after: int) -> None:
    writer = _spawn(WRITER, "fleet", "100000")
    assert writer.stdout is not None
    committed = [writer.stdout.readline().strip() for _ in range(after)]
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    committed += writer.stdout.read().split()  # printed between our last read and the kill
    assert "busy" not in committed

    assert _integrity(home) == "ok"
    store = Store.open()
    present = {n.name for n in store.nodes()}
    assert set(committed) <= present
    # the kill may land after a commit and before its print: at most one more, never a half record
    assert len(present) - len(committed) in (0, 1)
    for spec in store.nodes():
        assert spec.targets[0].path == f"/srv/{spec.name}"
        assert len(spec.names) == 2
    assert set(store.lineage("fleet").nodes) == present
    store.add_node(NodeSpec("after", ("after.example.test",), (TargetSpec("pem", "/srv/after"),)))
    store.close()


def test_two_writers_at_once_both_finish(home: Backend) -> None:
    writers = [_spawn(WRITER, prefix, "40") for prefix in ("a", "b")]
    outputs = [w.communicate(timeout=300) for w in writers]
    for w, (_, err) in zip(writers, outputs, strict=True):
        assert w.returncode == 0, err
        assert err == ""
    done = [line for out, _ in outputs for line in out.split() if line != "busy"]
    assert _integrity(home) == "ok"
    store = Store.open()
    assert sorted(n.name for n in store.nodes()) == sorted(done)
    # with the default busy timeout neither had to give up
    assert len(done) == 80
    assert len(store.audit_log(limit=1000, action="node.add")) == 80
    store.close()


def test_busy_store_answers_store_busy(home: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTFLEET_BUSY_TIMEOUT", "0.5")
    store = Store.open()
    holder = _spawn(SQLITE_HOLDER, str(home.home / "certfleet.db")) if home.is_sqlite else _spawn(PG_HOLDER, home.url)
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        spec = NodeSpec("main", ("www.example.test",), (TargetSpec("pem", "/srv/main"),))
        with pytest.raises(StoreBusyError) as err:
            store.add_node(spec)
        assert str(err.value) == "store is busy: another certfleet is writing; try again"
        assert err.value.exit_code == 3
        assert store.nodes() == []  # reading goes on while another process writes
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    store.add_node(spec)  # once the other writer is gone, the same write goes through
    assert [n.name for n in store.nodes()] == ["main"]
    assert _integrity(home) == "ok"
    store.close()
