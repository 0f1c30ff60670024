"""One pass at a time over a store, on either backend: two ``certfleet renew`` started together,
one runs and the other says so and stops (exit 0); on PostgreSQL the lock is the database's (an
advisory lock, no lock file), so passes on several machines sharing the store exclude each other
too, and the lock goes with its holder's session when the holder is killed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certfleet.autopilot.lock import PassBusy, pass_lock
from certfleet.store import Store
from certfleet.store._engine import PASS_LOCK
from certfleet.testing import TestCA
from support import flock_held
from support.postgres import Backend, backend, pg_url, postgres

__all__ = ["backend", "pg_url", "postgres"]  # the fixtures, imported where they are used


def expect(result: Any, code: int = 0) -> Any:
    assert result.code == code, f"exit {result.code}\n{result.out}\n{result.err}"
    return result


def _held(backend: Backend) -> bool:
    """Whether some process holds the pass lock now (seen from outside certfleet)."""
    if backend.is_sqlite:
        return flock_held(backend.home / "locks" / "autopilot.lock")
    rows = backend.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = :cls AND objid = :obj",
        {"cls": PASS_LOCK[0], "obj": PASS_LOCK[1]},
    )
    return bool(rows[0][0])


def _wait_for(release: Path) -> str:
    return f"sh -c 'for i in $(seq 600); do [ -e {release} ] && exit 0; sleep 0.1; done; exit 1'"


def _slow_fleet(cli: Any, tmp_path: Path) -> None:
    """Lineage web with a bought certificate imported and one node that lacks it, whose config
    test waits until the file ``release`` appears (at most 60 s): the first pass deploys it,
    holding the lock until the test lets it go, however slow the machine."""
    ca = TestCA.root("Pass Lock Root").intermediate("Pass Lock CA")
    root = tmp_path / "root.pem"
    root.write_bytes(ca.root_cert.public_bytes(Encoding.PEM))
    expect(cli("init"))
    expect(cli("trust", "add", root))
    expect(cli("node", "add", "main", "--name", "www.example.test", "--target", f"pem:{tmp_path / 'main'}",
               "--test", _wait_for(tmp_path / "release"), "--lineage", "web"))  # fmt: skip
    expect(cli("issuer", "add", "shop", "--manual"))
    expect(cli("lineage", "set", "web", "--issuer", "shop"))
    leaf = ca.leaf("www.example.test", days=200)
    bought = tmp_path / "bought.pem"
    bought.write_bytes(leaf.cert_pem() + leaf.key_pem() + ca.cert.public_bytes(Encoding.PEM))
    expect(cli("import", "web", bought))


def test_two_renews_at_once_one_runs_the_other_stops(cli: Any, backend: Backend, tmp_path: Path) -> None:
    _slow_fleet(cli, tmp_path)
    argv = [sys.executable, "-m", "certfleet", "renew", "--no-probe"]
    first = subprocess.Popen([*argv, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not _held(backend):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        second = subprocess.run(argv, capture_output=True, timeout=120, check=False)
        (tmp_path / "release").touch()
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err.decode()
    assert second.returncode == 0, second.stderr.decode()
    said = second.stderr.decode().strip()
    assert said == f"another certfleet renew is running (pid {first.pid}): this one stops", said
    assert second.stdout == b""
    assert [r["action"] for r in json.loads(out)["lineages"]] == ["deployed"]
    with Store.open() as store:
        assert [e.detail["action"] for e in store.audit_log(action="renew")] == ["deployed"]
        assert len(store.deployments("web")) == 1
    # on PostgreSQL the lock is the database's: no lock file under the home
    assert (backend.home / "locks" / "autopilot.lock").exists() is backend.is_sqlite


HOLDER = textwrap.dedent(
    """
    import sys
    from certfleet.autopilot.lock import pass_lock
    from certfleet.store import Store

    store = Store.open()
    pass_lock(store).acquire()
    print("locked", flush=True)
    sys.stdin.readline()
    """
)


def test_the_pass_lock_goes_with_a_killed_holder(cli: Any, backend: Backend) -> None:
    expect(cli("init"))
    with Store.open() as store:
        lock = pass_lock(store)
        with lock:
            assert lock.held and _held(backend)
            with pytest.raises(PassBusy) as busy:  # another holder, even in this process
                pass_lock(store).acquire()
            assert busy.value.holder is not None and busy.value.holder.startswith("pid ")
        assert not lock.held and not _held(backend)

        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout is not None
        try:
            assert holder.stdout.readline().strip() == "locked"
            said = expect(cli("renew", "--json"))  # a pass now stops at once, exit 0
            report = said.json()
            assert report["busy"] == f"another certfleet renew is running (pid {holder.pid}): this one stops"
            assert report["lineages"] == []
            holder.send_signal(signal.SIGKILL)  # killed while holding it: the kernel or the server lets go
            holder.wait(timeout=30)
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
        deadline = time.monotonic() + 30
        while True:
            try:
                with pass_lock(store):
                    break
            except PassBusy:  # the server sees the socket close a moment later
                assert time.monotonic() < deadline
                time.sleep(0.05)


def test_an_issue_waits_for_no_pass_it_is_refused_while_one_runs(cli: Any, backend: Backend, tmp_path: Path) -> None:
    """`certfleet issue` holds the pass lock too: a pass may be issuing the same lineage."""
    _slow_fleet(cli, tmp_path)
    with Store.open() as store, pass_lock(store):
        refused = expect(cli("issue", "web", "--json"), 3)
        said = json.loads(refused.out)
        assert said["error"].startswith("an autopilot pass is running (pid ") and said["error"].endswith(
            ": nothing issued"
        ), said
        assert len(store.versions("web")) == 1  # the bought one only
    # with the lock free the command goes on to the lineage's issuer (manual: no ACME issue)
    after = cli("issue", "web", "--json")
    assert "autopilot pass" not in after.out + after.err
