"""A store shared on PostgreSQL: commands racing each other as real processes, a server restart in
the middle of writing, a SQLite store copied in, the sealing secret of another machine refused, the
deploy lock held in the database and a COMMIT cut on its way."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from certfleet import testing
from certfleet.errors import EnvError
from certfleet.fleet.model import NodeSpec, Outcome, TargetSpec
from certfleet.store import KEY_FILE, PASSPHRASE_ENV, URL_ENV, NodeResult, Store
from support.postgres import PostgresCluster, pg_url, postgres

__all__ = ["pg_url", "postgres"]  # the fixtures, imported where they are used

pytestmark = pytest.mark.peer

ROUNDS = 20
UTC = dt.UTC


def _add(node: str, lineage: str) -> list[str]:
    return ["node", "add", node, "--name", f"{node}.example.test", "--target", f"pem:/srv/{node}", "-l", lineage]


@pytest.fixture
def shared(pg_url: str, certfleet_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a machine using the PostgreSQL store of this test."""
    monkeypatch.setenv(URL_ENV, pg_url)
    return {URL_ENV: pg_url, "CERTFLEET_HOME": str(certfleet_home)}


# certfleet commands run one by one in a process of their own: each waits, imports done, for a
# line on stdin (its arguments and environment), runs the command as `certfleet ARGS` would, and
# answers with its exit code and output. The two processes of a race read their lines within
# microseconds of each other, and start-up is paid once per test, not once per round.
RACER = textwrap.dedent(
    """
    import contextlib, io, json, os, sys
    import certfleet.store, certfleet.fleet.lineage, psycopg, alembic.command
    from certfleet.cli import _MODULES, _register, main

    _register(_MODULES)
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        os.environ.update(request["env"])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(request["args"])
        print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue()}), flush=True)
    """
)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Racers:
    """Two certfleet processes that run one command each at the same moment, round after round."""

    def __init__(self, env: dict[str, str]) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, **env},
            )
            for _ in range(2)
        ]
        for proc in self.procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.communicate(timeout=60)

    def race(self, *commands: Sequence[str | Path], env: dict[str, str] | None = None) -> list[Run]:
        lines = [json.dumps({"args": [str(a) for a in args], "env": env or {}}) + "\n" for args in commands]
        for proc, line in zip(self.procs, lines, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(line)
            proc.stdin.flush()
        runs = []
        for proc in self.procs:
            assert proc.stdout is not None
            answer = proc.stdout.readline()
            assert answer, proc.communicate(timeout=60)
            runs.append(Run(**json.loads(answer)))
        return runs

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def racers(shared: dict[str, str]) -> Iterator[Racers]:
    r = Racers(shared)
    yield r
    r.close()


def _ok(result: Any) -> Any:
    assert result.code == 0, f"exit {result.code}\n{result.out}\n{result.err}"
    assert result.err == "", result.err
    return result


# -- the races of the issue, 20 rounds each ------------------------------------------------------------


def test_two_node_adds_into_one_new_lineage(shared: dict[str, str], cli_proc: Any, racers: Racers) -> None:
    _ok(cli_proc("init", env=shared))
    for i in range(ROUNDS):
        for r in racers.race(_add(f"a{i}", f"new{i}"), _add(f"b{i}", f"new{i}")):
            _ok(r)
    with Store.open() as store:
        for i in range(ROUNDS):
            assert store.lineage(f"new{i}").nodes == (f"a{i}", f"b{i}")
        created = [e.detail["lineage"] for e in store.audit_log(limit=1000, action="lineage.create")]
        assert sorted(created) == sorted(f"new{i}" for i in range(ROUNDS))  # each made once


def test_two_requests_of_one_lineage(shared: dict[str, str], cli_proc: Any, racers: Racers, tmp_path: Path) -> None:
    _ok(cli_proc("init", env=shared))
    _ok(cli_proc(*_add("main", "web"), env=shared))
    for i in range(ROUNDS):
        for r in racers.race(*(["request", "web", "--key", "ec:p256", "-o", tmp_path / f"{i}-{k}.csr"] for k in "ab")):
            _ok(r)
    with Store.open() as store:
        versions = store.versions("web")
        assert [v.number for v in versions] == list(range(1, 2 * ROUNDS + 1))
        csrs = {x509.load_pem_x509_csr(p.read_bytes()) for p in tmp_path.glob("*.csr")}
        assert {v.csr for v in versions} == csrs  # every request kept, as its own version
        assert len(store.audit_log(limit=1000, action="version.request")) == 2 * ROUNDS


def test_two_inits_of_an_empty_database(postgres: PostgresCluster, racers: Racers, tmp_path: Path) -> None:
    for i in range(ROUNDS):
        url = postgres.create_database(f"init{i}")
        env = {URL_ENV: url, "CERTFLEET_HOME": str(tmp_path / f"home{i}")}
        try:
            results = [_ok(r).json() for r in racers.race(["init", "--json"], ["init", "--json"], env=env)]
            assert sorted(r["created"] for r in results) == [False, True]
            rows = postgres.execute("SELECT action FROM audit_log", database=url.rsplit("/", 1)[1])
            assert rows == [("init",)]
        finally:
            postgres.drop_database(url)


# -- a restart of the server while certfleet writes --------------------------------------------------

# adds a node and records a one-node deploy of it, again and again, saying what it committed
WRITER = textwrap.dedent(
    """
    import datetime as dt, sys
    from certfleet.fleet.model import NodeSpec, Outcome, TargetSpec
    from certfleet.store import NodeResult, Store

    store = Store.open()
    for i in range(int(sys.argv[1])):
        name = f"n{i}"
        store.add_node(NodeSpec(name, (f"{name}.example.test",), (TargetSpec("pem", "/srv/" + name),)), lineage="web")
        now = dt.datetime.now(dt.UTC)
        store.record_deployment("web", 1, [NodeResult(name, Outcome.OK, now, now)])
        print(name, flush=True)
    """
)


def _issued(store: Store) -> None:
    ca = testing.TestCA.root("pg root").intermediate("pg intermediate")
    leaf = ca.leaf("www.example.test")
    store.issue("web", leaf.cert, leaf.chain, key=leaf.key)


def test_a_server_restart_during_a_long_write_sequence_loses_and_doubles_nothing(
    shared: dict[str, str], postgres: PostgresCluster
) -> None:
    with Store.init() as store:
        _issued(store)
    count = 150
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    committed: list[str] = []
    try:
        for after in (10, 50, 100):  # three restarts, each with the writer in full flow
            while len(committed) < after:
                line = writer.stdout.readline()
                assert line, writer.communicate()
                committed.append(line.strip())
            postgres.restart()
        out, err = writer.communicate(timeout=300)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, err
    assert committed + out.split() == [f"n{i}" for i in range(count)]
    with Store.open() as store:
        names = {f"n{i}" for i in range(count)}
        assert {n.name for n in store.nodes("web")} == names
        assert len(store.audit_log(limit=10_000, action="node.add")) == count  # none twice
        deployments = store.deployments("web", limit=10_000)
        assert sorted(r.node for d in deployments for r in d.results) == sorted(names)
        assert set(store.last_results("web")) == names


def test_a_server_restart_in_the_middle_of_a_deploy_keeps_its_outcome(
    shared: dict[str, str], postgres: PostgresCluster, cli_proc: Any, tmp_path: Path
) -> None:
    with Store.init() as store:
        _issued(store)
        # the config test runs for 2 s; the server restarts 1 s into it
        store.add_node(
            NodeSpec("main", ("www.example.test",), (TargetSpec("pem", str(tmp_path / "main")),), test_cmd="sleep 2"),
            lineage="web",
        )
    deploy = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "deploy", "web", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = dt.datetime.now(UTC) + dt.timedelta(seconds=60)
        while not (tmp_path / "main" / "live").exists():  # switched: the config test runs now
            assert deploy.poll() is None, deploy.communicate()
            assert dt.datetime.now(UTC) < deadline
            os.sched_yield()
        postgres.restart()
        out, err = deploy.communicate(timeout=120)
    finally:
        if deploy.poll() is None:
            deploy.kill()
    assert deploy.returncode == 0, err
    report = json.loads(out)
    assert [(n["node"], n["outcome"]) for n in report["nodes"]] == [("main", "ok")]
    with Store.open() as store:
        [recorded] = store.deployments("web")
        assert recorded.id == report["deployment"]
        assert [(r.node, r.outcome) for r in recorded.results] == [("main", Outcome.OK)]


# -- a SQLite store copied into PostgreSQL -------------------------------------------------------------


def _history(store: Store) -> None:
    """Two issued versions and a pending one, nodes, an anchor, deployments, console rows."""
    ca = testing.TestCA.root("copy root").intermediate("copy intermediate")
    store.add_trust_anchor(testing.TestCA.root("copy anchor").cert)
    for name in ("main", "gw1", "gw2"):
        store.add_node(NodeSpec(name, (f"{name}.example.test",), (TargetSpec("pem", f"/srv/{name}"),)), lineage="web")
    t0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    for number in (1, 2):
        key = testing.make_key("ec:p256")
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "www.example.test")]))
            .sign(key, hashes.SHA256())
        )
        store.add_pending("web", key, csr, ["www.example.test"])
        store.issue("web", ca.sign_csr(csr), ca.chain)
        for round_ in range(3):
            at = t0 + dt.timedelta(days=number, hours=round_)
            outcome = Outcome.OK if round_ != 1 else Outcome.ROLLED_BACK
            store.record_deployment(
                "web", number, [NodeResult(n, outcome, at, at, output=f"round {round_}") for n in ("main", "gw1")]
            )
    key = testing.make_key("rsa:2048")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "www.example.test")]))
        .sign(key, hashes.SHA256())
    )
    store.add_pending("web", key, csr, ["www.example.test"])
    store.activate("web", 1)
    with store.session(write=True) as s:
        s.execute(
            text("INSERT INTO console_login_failures (key, failures, last_at) VALUES ('alice', 3, :at)"),
            {"at": t0},
        )


def _picture(store: Store) -> dict[str, Any]:
    """Everything a user can read from a store, keys included."""
    versions = store.versions("web")
    return {
        "nodes": [n.to_dict() for n in store.nodes()],
        "lineages": [r.to_dict() for r in store.lineages()],
        "versions": [v.to_dict() for v in versions],
        "keys": [
            store.material("web", v.number).key.private_numbers()  # type: ignore[union-attr]
            for v in versions
            if v.leaf is not None
        ],
        "pending": [(v.number, k.private_numbers()) for v, k in store.pending_keys("web")],  # type: ignore[union-attr]
        "anchors": [(a.fingerprint, a.subject, a.added_at) for a in store.trust_anchors()],
        "deployments": [d.to_dict() for d in store.deployments(limit=1000)],
        "last": {n: (d.id, r) for n, (d, r) in store.last_results("web").items()},
        "audit": [e.to_dict() for e in reversed(store.audit_log(limit=1000)) if e.action != "store.copy"],
    }


@pytest.mark.parametrize("keys", ["keyfile", "passphrase"])
def test_store_copy_moves_a_sqlite_store_with_history_into_postgresql(
    pg_url: str, certfleet_home: Path, monkeypatch: pytest.MonkeyPatch, cli_proc: Any, keys: str
) -> None:
    monkeypatch.delenv(URL_ENV, raising=False)
    if keys == "passphrase":
        monkeypatch.setenv(PASSPHRASE_ENV, "one passphrase for every machine")
    with Store.init() as store:
        _history(store)
        before = _picture(store)

    copied = _ok(cli_proc("store", "copy", "--to", pg_url, "--json")).json()
    assert copied["rows"]["versions"] == 3
    assert copied["rows"]["deployment_results"] == 12
    assert copied["rows"]["console_login_failures"] == 1
    assert copied["keys"] == keys

    monkeypatch.setenv(URL_ENV, pg_url)
    with Store.open() as store:
        assert _picture(store) == before
        assert [e.action for e in store.audit_log(limit=1)] == ["store.copy"]
        with store.session() as s:
            assert s.execute(text("SELECT key, failures FROM console_login_failures")).all() == [("alice", 3)]
        # the copy goes on from there: new rows get new ids
        store.add_node(NodeSpec("gw3", ("gw3.example.test",), (TargetSpec("pem", "/srv/gw3"),)), lineage="web")
        at = dt.datetime.now(UTC)
        new = store.record_deployment("web", 2, [NodeResult("gw3", Outcome.OK, at, at)])
        assert new > max(d["id"] for d in before["deployments"])
        assert store.last_results("web")["gw3"][0].id == new
    monkeypatch.delenv(URL_ENV)
    with Store.open() as source:  # the source is as it was, and says where it went
        assert _picture(source) == before
        assert source.audit_log(limit=1)[0].detail["to"] == pg_url

    again = cli_proc("store", "copy", "--to", pg_url)
    assert again.code == 3
    assert "already holds data (table " in again.err
    assert "store copy fills an empty database only" in again.err


# -- the sealing secret of another machine -----------------------------------------------------------


def _audit_count(url: str, postgres: PostgresCluster) -> int:
    return int(postgres.execute("SELECT count(*) FROM audit_log", database=url.rsplit("/", 1)[1])[0][0])


def test_a_machine_with_another_master_key_is_refused_before_it_writes(
    shared: dict[str, str], postgres: PostgresCluster, cli_proc: Any, tmp_path: Path
) -> None:
    _ok(cli_proc("init", env=shared))
    _ok(cli_proc(*_add("main", "web"), env=shared))
    url, first_home = shared[URL_ENV], Path(shared["CERTFLEET_HOME"])
    written = _audit_count(url, postgres)

    other = tmp_path / "other-machine"
    other.mkdir(mode=0o700)
    (other / KEY_FILE).write_bytes(os.urandom(32))
    (other / KEY_FILE).chmod(0o600)
    env = {**shared, "CERTFLEET_HOME": str(other)}
    for args in (["node", "add", "gw1", "--name", "gw.example.test", "--target", "pem:/srv/gw1"], ["status"], ["init"]):
        refused = cli_proc(*args, env=env)
        assert refused.code == 3, refused
        assert refused.err.splitlines() == [
            "error: cannot decrypt the keys: wrong master key or passphrase",
            "hint: use the master.key or the CERTFLEET_PASSPHRASE this store was created with",
        ]
    assert _audit_count(url, postgres) == written

    (other / KEY_FILE).unlink()  # no key at all: init says where to get it, and keys are refused
    missing = cli_proc("init", env=env)
    assert missing.code == 3
    assert "the master key file is missing" in missing.err
    assert "copy master.key (0600) from the machine that made the store" in missing.err
    assert cli_proc("request", "web", "-o", tmp_path / "x.csr", env=env).code == 3
    assert _audit_count(url, postgres) == written

    shutil.copy2(first_home / KEY_FILE, other / KEY_FILE)  # the same key file: one store, two machines
    _ok(cli_proc("request", "web", "-o", tmp_path / "web.csr", env=env))
    with Store.open() as store:
        assert [v.number for v in store.versions("web")] == [1]
        assert len(store.pending_keys("web")) == 1  # sealed on one machine, opened on the other


def test_a_machine_with_another_passphrase_is_refused_before_it_writes(
    shared: dict[str, str], postgres: PostgresCluster, cli_proc: Any
) -> None:
    _ok(cli_proc("init", env={**shared, PASSPHRASE_ENV: "the right one"}))
    written = _audit_count(shared[URL_ENV], postgres)
    wrong = {**shared, PASSPHRASE_ENV: "a wrong one"}
    refused = cli_proc("node", "add", "gw1", "--name", "gw.example.test", "--target", "pem:/srv/gw1", env=wrong)
    assert refused.code == 3
    assert refused.err.startswith("error: cannot decrypt the keys: wrong master key or passphrase\n")
    assert _audit_count(shared[URL_ENV], postgres) == written
    _ok(
        cli_proc(
            "node",
            "add",
            "gw1",
            "--name",
            "gw.example.test",
            "--target",
            "pem:/srv/gw1",
            env={**shared, PASSPHRASE_ENV: "the right one"},
        )
    )


# -- the deploy lock ------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from certfleet.store import Store

    store = Store.open()
    lock = store.deploy_lock("web")
    lock.acquire()
    print("locked", flush=True)
    sys.stdin.readline()
    """
)


def test_the_deploy_lock_is_held_in_the_database(shared: dict[str, str], tmp_path: Path) -> None:
    with Store.init() as store:
        _issued(store)
        other = Store.open()
        lock = store.deploy_lock("web")
        with lock:
            assert lock.held
            with pytest.raises(EnvError) as err:  # another session, even in this process
                other.deploy_lock("web").acquire()
            assert str(err.value) == f"a deploy of lineage web is already running (pid {os.getpid()})"
            assert err.value.hint == "wait for it to finish, then run this again"
        assert not lock.held
        with other.deploy_lock("web") as again:
            assert again.held
        other.close()

        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None
        try:
            assert holder.stdout.readline().strip() == "locked"
            with pytest.raises(EnvError, match=rf"already running \(pid {holder.pid}\)"):
                store.deploy_lock("web").acquire()
            holder.send_signal(signal.SIGKILL)  # killed while holding it: the server lets go
            holder.wait(timeout=30)
        finally:
            if holder.poll() is None:
                holder.kill()
        deadline = dt.datetime.now(UTC) + dt.timedelta(seconds=30)
        while True:
            try:
                with store.deploy_lock("web"):
                    break
            except EnvError:  # the server sees the socket close a moment later
                assert dt.datetime.now(UTC) < deadline
        assert not (Path(shared["CERTFLEET_HOME"]) / "locks").exists()  # no flock on this backend


# -- a COMMIT cut on its way ----------------------------------------------------------------------


class _CutCommit(Session):
    """Loses the connection once, at COMMIT: after the server committed (``committed=True``: the
    answer never came back) or before (the server rolled the transaction back)."""

    committed = True
    cuts = 0

    def commit(self) -> None:
        if type(self).cuts == 0:
            type(self).cuts += 1
            if type(self).committed:
                super().commit()
            else:
                self.rollback()
            lost = psycopg.OperationalError("server closed the connection unexpectedly")
            raise OperationalError("COMMIT", {}, lost, connection_invalidated=True)
        super().commit()


@pytest.mark.parametrize("committed", [True, False])
def test_a_commit_cut_on_its_way_is_neither_lost_nor_made_twice(
    shared: dict[str, str], monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    with Store.init() as store:
        monkeypatch.setattr(_CutCommit, "committed", committed)
        monkeypatch.setattr(_CutCommit, "cuts", 0)
        monkeypatch.setattr(store._db._write, "class_", _CutCommit)
        store.add_node(NodeSpec("main", ("www.example.test",), (TargetSpec("pem", "/srv/main"),)), lineage="web")
        assert _CutCommit.cuts == 1
        assert [n.name for n in store.nodes()] == ["main"]
        assert len(store.audit_log(action="node.add")) == 1
