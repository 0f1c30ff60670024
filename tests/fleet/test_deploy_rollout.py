"""Deploying a lineage from the store (``certfleet.fleet.rollout``) as a user meets it: one deploy
of a lineage at a time, even across processes and after a SIGKILL; rollback of some nodes or of
the whole lineage; a node reached over SSH with its own known_hosts and key. The deploys that the
store records (rollback, interrupted, history and status) run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certfleet.certinfo import fingerprint
from certfleet.store import Store
from certfleet.testing import pem
from conftest import PKI
from support.deploy import small_disk
from support.postgres import Backend, backend, pg_url, postgres
from support.servers import SshServer, empty_home, sshd

__all__ = ["backend", "empty_home", "pg_url", "postgres", "small_disk", "sshd"]

NAMES = {"a": ("a.example.test",), "b": ("b.example.test", "www.example.test")}


def ok(result: Any, code: int = 0) -> Any:
    assert result.code == code, f"exit {result.code}\n{result.out}\n{result.err}"
    return result


def one_line(text: str) -> str:
    return " ".join(text.split())  # the terminal may wrap long lines


def issue(cli: Any, tmp_path: Path, pki: PKI, name: str) -> str:
    """Request a certificate for the lineage web, have the test CA sign it, import it; its fingerprint."""
    csr_file = tmp_path / f"{name}.csr"
    ok(cli("request", "web", "--out", csr_file))
    leaf = pki.inter.sign_csr(x509.load_pem_x509_csr(csr_file.read_bytes()))
    (tmp_path / f"{name}.crt").write_bytes(pem(leaf))
    (tmp_path / "inter.crt").write_bytes(pem(pki.inter.cert))
    ok(cli("import", "web", tmp_path / f"{name}.crt", tmp_path / "inter.crt", "--no-fetch"))
    return fingerprint(leaf)


def add_nodes(cli: Any, tmp_path: Path, pki: PKI, **extra: list[str]) -> None:
    ok(cli("init"))
    ok(cli("trust", "add", pki.root_file(tmp_path)))
    for node, names in NAMES.items():
        flags = [a for n in names for a in ("--name", n)]
        ok(cli("node", "add", node, *flags, "--target", f"pem:{tmp_path / node}", *extra.get(node, []), "-l", "web"))


def live_leaf(tmp_path: Path, node: str) -> str:
    return fingerprint(x509.load_pem_x509_certificate((tmp_path / node / "live" / "cert.pem").read_bytes()))


def test_rollback_of_some_nodes_keeps_the_active_version_and_of_all_makes_the_previous_one_active(
    backend: Backend, cli: Any, tmp_path: Path, pki: PKI
) -> None:
    add_nodes(cli, tmp_path, pki)
    v1 = issue(cli, tmp_path, pki, "v1")
    ok(cli("deploy", "web"))
    v2 = issue(cli, tmp_path, pki, "v2")
    ok(cli("deploy", "web"))
    assert (live_leaf(tmp_path, "a"), live_leaf(tmp_path, "b")) == (v2, v2)

    some = ok(cli("rollback", "web", "--node", "a"))
    assert "rollback to version 1" in some.out
    assert "only these nodes were rolled back; the active version of web stays 2" in one_line(some.out)
    assert (live_leaf(tmp_path, "a"), live_leaf(tmp_path, "b")) == (v1, v2)
    again = ok(cli("deploy", "web", "--json")).json()
    assert (again["version"], again["fingerprint"]) == (2, v2)
    assert (live_leaf(tmp_path, "a"), live_leaf(tmp_path, "b")) == (v2, v2)

    planned = ok(cli("rollback", "web", "--dry-run", "--json")).json()
    assert (planned["version"], planned["activates"], planned["active"], planned["deployment"]) == (1, True, 2, None)
    assert "would become the active version" in ok(cli("rollback", "web", "--dry-run")).out
    assert (live_leaf(tmp_path, "a"), live_leaf(tmp_path, "b")) == (v2, v2)

    whole = ok(cli("rollback", "web"))
    assert "version 1 is now the active version of web" in one_line(whole.out)
    assert (live_leaf(tmp_path, "a"), live_leaf(tmp_path, "b")) == (v1, v1)
    history = ok(cli("history", "web", "--json")).json()
    assert history["active"] == 1
    later = ok(cli("deploy", "web", "--json")).json()  # the withdrawn version does not come back
    assert (later["version"], later["fingerprint"]) == (1, v1)
    assert (live_leaf(tmp_path, "a"), live_leaf(tmp_path, "b")) == (v1, v1)

    with Store.open() as store:
        rollbacks = [e.detail for e in store.audit_log(action="rollback")]
        assert rollbacks == [
            {"lineage": "web", "version": 1, "from": 2, "nodes": ["a", "b"], "activates": True},
            {"lineage": "web", "version": 1, "from": 2, "nodes": ["a"], "activates": False},
        ]
        assert store.audit_log(action="version.activate")[0].detail == {"lineage": "web", "version": 1}
        recorded = store.deployments("web")
        assert [(d.version, d.ok) for d in recorded] == [
            (1, True),
            (1, True),
            (2, True),
            (1, True),
            (2, True),
            (1, True),
        ]
    nothing_before = cli("rollback", "web")
    assert nothing_before.code == 2 and "no version before version 1" in nothing_before.err


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            said = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"the deploy ended early with {proc.returncode}: {said}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_one_deploy_of_a_lineage_at_a_time_and_a_killed_one_leaves_no_lock(
    backend: Backend, cli: Any, cli_proc: Any, tmp_path: Path, pki: PKI
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    # the config test holds the deploy until the test lets it go
    hold = f"touch {shlex.quote(str(started))}; while [ ! -e {shlex.quote(str(release))} ]; do sleep 0.05; done"
    add_nodes(cli, tmp_path, pki, a=["--test", hold])
    v1 = issue(cli, tmp_path, pki, "v1")

    first = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "deploy", "web"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(started, first)
        second = cli_proc("deploy", "web")
        assert second.code == 3, second
        assert f"a deploy of lineage web is already running (pid {first.pid})" in second.err
        assert "Traceback" not in second.err
        assert cli_proc("rollback", "web", "--to", "1").code == 3
        assert ok(cli_proc("deploy", "web", "--dry-run", "--json")).json()["dry_run"]  # changes nothing: no lock
        release.touch()
        assert first.wait(timeout=120) == 0, first.stderr.read() if first.stderr else ""
    finally:
        release.touch()
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    assert live_leaf(tmp_path, "a") == v1

    # killed while it holds the lock (its config test still running, orphaned): the lock goes with it
    started.unlink()
    release.unlink()
    v2 = issue(cli, tmp_path, pki, "v2")  # a is settled on v1: only a new version runs its test again
    killed = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "deploy", "web"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(started, killed)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        # the orphaned test command holds no lock (a flock on SQLite, an advisory lock on PostgreSQL)
        with Store.open() as store, store.deploy_lock("web") as lock:
            assert lock.held
    finally:
        release.touch()
        if killed.poll() is None:
            killed.kill()
            killed.wait(timeout=30)
    history = ok(cli_proc("history", "web", "--json")).json()
    assert history["deployments"][0]["state"] == "interrupted"  # recorded before it touched a node
    assert {r["node"]: r["outcome"] for r in history["deployments"][0]["results"]}["a"] == "interrupted"
    assert "INTERRUPTED" in ok(cli_proc("history", "web")).out
    # status reads a's live link from the node: the new version, switched to and never proven there
    told = cli_proc("status", "web", "--json")
    assert told.code == 1
    a = {n["node"]: n for n in told.json()["lineages"][0]["nodes"]}["a"]
    assert a["last_deployment"]["state"] == "interrupted"
    assert (a["live"]["versions"], a["live"]["proven"]) == ([2], False)
    assert [p["code"] for p in a["problems"]] == ["interrupted"]
    human = one_line(cli_proc("status", "web").out)
    assert "never finished here; live points at version 2, which no deploy proved on this node" in human
    finished = ok(cli_proc("deploy", "web", "--json")).json()
    outcomes = {n["node"]: n["outcome"] for n in finished["nodes"]}
    assert outcomes["a"] == "ok"  # its test and reload run again: it never finished v2
    assert outcomes["b"] in {"ok", "unchanged"}  # b may have finished v2 before the kill
    assert (live_leaf(tmp_path, "a"), live_leaf(tmp_path, "b")) == (v2, v2)


def test_a_deploy_is_dated_by_the_clock_it_is_given(backend: Backend, cli: Any, tmp_path: Path, pki: PKI) -> None:
    from certfleet.fleet.rollout import prepare_deploy

    add_nodes(cli, tmp_path, pki)
    issue(cli, tmp_path, pki, "v1")
    minute = [dt.datetime(2030, 1, 1, 0, i, tzinfo=dt.UTC) for i in range(60)]
    ticks = iter(minute)

    def clock() -> dt.datetime:
        return next(ticks)

    with Store.open() as store, prepare_deploy(store, "web") as rollout:
        result = asyncio.run(rollout.run(clock=clock))
        [recorded] = store.deployments("web")
    report = result.report
    assert report.ok
    # the deployment recorded as running, the engine's start, each node's start and end (two
    # nodes), the engine's end: six readings
    assert (report.started_at, report.finished_at) == (minute[1], minute[6])
    assert {t for n in report.nodes for t in (n.started_at, n.finished_at)} == set(minute[2:6])
    assert recorded.started_at == minute[0]
    assert {(r.node, r.finished_at) for r in recorded.results} == {(n.node, n.finished_at) for n in report.nodes}


@pytest.mark.peer
def test_the_console_refuses_a_deploy_while_one_runs(backend: Backend, tmp_path: Path, cli: Any, pki: PKI) -> None:
    from support.console import logged_in, make_env, wait_job

    add_nodes(cli, tmp_path, pki)
    issue(cli, tmp_path, pki, "v1")
    env = make_env(backend.home)
    csrf = logged_in(env)
    with env.store.deploy_lock("web"):
        refused = env.client.post("/api/v1/lineages/web/deploy", json={}, headers={"x-csrf-token": csrf})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == f"a deploy of lineage web is already running (pid {os.getpid()})"
        page = env.client.post("/deploy", data={"csrf_token": csrf, "lineage": "web", "nodes": ["a"]})
        assert page.status_code == 503 and "already running" in page.text
    started = env.client.post("/api/v1/lineages/web/deploy", json={}, headers={"x-csrf-token": csrf})
    assert started.status_code == 202, started.text
    assert wait_job(env, started.json()["id"])["ok"]


@pytest.mark.peer
@pytest.mark.usefixtures("empty_home")
def test_a_node_added_with_its_ssh_files_deploys_through_sshd(
    cli: Any, certfleet_home: Path, tmp_path: Path, pki: PKI, sshd: SshServer
) -> None:
    ssh = ["--transport", sshd.url, "--known-hosts", str(sshd.known_hosts), "--identity", str(sshd.user_key)]
    add_nodes(cli, tmp_path, pki, b=ssh)
    shown = ok(cli("node", "show", "b", "--json")).json()
    assert shown["options"] == {"known_hosts": str(sshd.known_hosts), "identity": str(sshd.user_key)}
    human = ok(cli("node", "show", "b")).out
    assert f"known_hosts = {sshd.known_hosts}" in human and f"identity = {sshd.user_key}" in human
    fleet_file = tmp_path / "fleet.toml"
    ok(cli("export-fleet", "--out", fleet_file))
    assert f'known_hosts = "{sshd.known_hosts}"' in fleet_file.read_text()
    assert ok(cli("apply", fleet_file, "--json")).json()["changed"] is False

    fp = issue(cli, tmp_path, pki, "v1")
    deployed = ok(cli("deploy", "web", "--json")).json()
    assert {n["node"]: n["outcome"] for n in deployed["nodes"]} == {"a": "ok", "b": "ok"}
    assert live_leaf(tmp_path, "b") == fp

    # the same node without its files: this HOME knows no host key, so the connection is refused
    ok(cli("node", "add", "c", "--name", "a.example.test", "--target", f"pem:{tmp_path / 'c'}",
           "--transport", sshd.url, "-l", "web"))  # fmt: skip
    refused = cli("deploy", "web", "--node", "c", "--json")
    assert refused.code == 1
    [c] = refused.json()["nodes"]
    assert (c["outcome"], c["step"]) == ("failed", "connect") and "host key" in c["message"]

    local = cli("node", "add", "d", "--name", "d.example.test", "--target", "pem:/srv/d", "--identity", sshd.user_key)
    assert local.code == 2 and "identity apply only to a node reached over SSH" in local.err
    missing = cli("node", "add", "d", "--name", "d.example.test", "--target", "pem:/srv/d",
                  "--transport", sshd.url, "--identity", tmp_path / "nope")  # fmt: skip
    assert missing.code == 2


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_undo_the_step_print_the_report_and_record_it(  # noqa: PLR0917 (parametrized)
    backend: Backend, cli: Any, tmp_path: Path, pki: PKI, signum: int, code: int
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    hold = f"touch {shlex.quote(str(started))}; while [ ! -e {shlex.quote(str(release))} ]; do sleep 0.05; done"
    add_nodes(cli, tmp_path, pki, a=["--test", hold, "--reload", "true"])
    release.touch()
    v1 = issue(cli, tmp_path, pki, "v1")
    ok(cli("deploy", "web"))
    started.unlink()
    release.unlink()
    v2 = issue(cli, tmp_path, pki, "v2")

    proc = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "deploy", "web"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(started, proc)  # a is in its config test, b (no test) is done or nearly
        time.sleep(0.5)
        proc.send_signal(signum)
        time.sleep(0.3)
        release.touch()  # the test step finishes; then a is switched back
        out, err = proc.communicate(timeout=120)
    finally:
        release.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    said = one_line(out.decode())
    assert proc.returncode == code, (out, err)
    assert "stopping: each node finishes or undoes the step it is in" in err.decode()
    assert "stopped deploy of version 2" in said  # the report, not silence
    assert "a: the deploy was stopped at reload; switched back to what it had before" in said
    assert (live_leaf(tmp_path, "a"), live_leaf(tmp_path, "b")) == (v1, v2)
    [last, *_] = ok(cli("history", "web", "--json")).json()["deployments"]
    assert last["state"] == "interrupted" and last["version"] == 2
    assert {r["node"]: r["outcome"] for r in last["results"]} == {"a": "rolled-back", "b": "ok"}
    assert "INTERRUPTED" in ok(cli("history", "web")).out


def test_a_deploy_whose_last_write_fails_prints_its_report_and_the_next_command_records_it(
    cli: Any, tmp_path: Path, pki: PKI, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERTFLEET_HOME", str(small_disk / "store"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # on another disk
    filler = small_disk / "filler"
    # the node's config test fills the store's disk while the deploy runs
    fill = f"dd if=/dev/zero of={shlex.quote(str(filler))} bs=64k 2>/dev/null; true"
    add_nodes(cli, tmp_path, pki, a=["--test", fill])
    v1 = issue(cli, tmp_path, pki, "v1")

    full = cli("deploy", "web")
    assert full.code == 3, full
    said = one_line(full.out)
    assert "deploy of version 1" in said and "a ok" in said and "b ok" in said  # the per-node report
    err = one_line(full.err)
    assert "the deploy could not be recorded: the store cannot be written: the disk is full" in err
    assert "ENOSPC" in err and "restore a backup" not in err
    assert (live_leaf(tmp_path, "a"), live_leaf(tmp_path, "b")) == (v1, v1)
    [recovery] = (tmp_path / "state" / "certfleet" / "recovery").iterdir()
    assert stat.S_IMODE(recovery.stat().st_mode) == 0o600

    filler.unlink()
    later = ok(cli("history", "web", "--json"))
    assert f"from {recovery}" in one_line(later.err)
    [dep] = later.json()["deployments"]
    assert dep["state"] == "finished"
    assert {r["node"]: r["outcome"] for r in dep["results"]} == {"a": "ok", "b": "ok"}
    assert not recovery.exists()
