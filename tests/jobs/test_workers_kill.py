"""Two ``certfleet worker`` processes on one PostgreSQL store deploy 50 nodes; one of them is
killed with SIGKILL at a random point (10 seeds). Every node ends serving one whole key and
certificate of the new version, every node's outcome is recorded exactly once, the deployment is
finished, and no job was run again unless the worker that held it died before recording it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pytest
from jobs_fleet import issue, make_fleet, ok, served

from certfleet.fleet.model import Outcome
from certfleet.store import URL_ENV, DeploymentState, JobState, Store
from conftest import PKI
from support.postgres import pg_url, postgres

__all__ = ["pg_url", "postgres"]  # the fixtures, imported where they are used

pytestmark = pytest.mark.peer

NODES = 50
SEEDS = 10
LEASE = ["--lease", "2", "--heartbeat", "0.5", "--poll", "0.1", "--batch", "4", "--json"]


class WorkerProc:
    """``certfleet worker`` in a process of its own; its JSON events read as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "certfleet", "worker", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
        )
        self.events: list[dict[str, Any]] = []
        self.err = b""
        self._lock = threading.Lock()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True),
        ]
        for r in self._readers:
            r.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            with self._lock:
                self.events.append(json.loads(line))

    def _drain(self, stream: IO[bytes]) -> None:
        self.err = stream.read()

    def recorded(self) -> list[str]:
        with self._lock:
            return [e["node"] for e in self.events if e["event"] == "recorded"]

    def finish(self, sig: int, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        for r in self._readers:
            r.join(10)
        return code


def _wait_done(store: Store, deployment: int, workers: list[WorkerProc], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while store.jobs(deployment=deployment, states=JobState.OPEN):
        alive = [w for w in workers if w.proc.poll() is None]
        assert alive, "every worker ended: " + " / ".join(w.err.decode(errors="replace")[-2000:] for w in workers)
        assert time.monotonic() < deadline, f"jobs left: {store.jobs(deployment=deployment, states=JobState.OPEN)}"
        time.sleep(0.1)


@pytest.mark.usefixtures("certfleet_home")
def test_a_worker_killed_at_random_points_loses_nothing_and_runs_nothing_twice(
    pg_url: str, cli: Any, tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, pg_url)
    names = [f"n{i:02d}" for i in range(NODES)]
    make_fleet(cli, tmp_path, pki, dict.fromkeys(names))
    taken_over = 0
    for seed in range(SEEDS):
        rng = random.Random(seed)
        leaf = issue(cli, tmp_path, pki, f"v{seed}")
        victim, survivor = WorkerProc(*LEASE), WorkerProc(*LEASE)
        deployment = ok(cli("deploy", "web", "--queue", "--json")).json()["deployment"]
        # the kill: after the victim recorded some nodes (or at once), a little later still
        after = rng.randint(0, 12)
        deadline = time.monotonic() + 60
        while len(victim.recorded()) < after and victim.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.08))
        assert victim.finish(signal.SIGKILL) == -signal.SIGKILL
        with Store.open() as store:
            _wait_done(store, deployment, [survivor])
            jobs = store.jobs(deployment=deployment, limit=1000)
            [record] = [d for d in store.deployments("web", limit=5) if d.id == deployment]
        assert survivor.finish(signal.SIGTERM) == 128 + signal.SIGTERM, survivor.err.decode(errors="replace")

        # every node serves one whole key and certificate of the new version
        assert {n: served(tmp_path, n, pki) for n in names} == dict.fromkeys(names, leaf), f"seed {seed}"
        # every node's outcome recorded exactly once, and the deployment finished
        assert record.state is DeploymentState.FINISHED, f"seed {seed}"
        assert sorted(r.node for r in record.results) == names
        assert {r.node: r.outcome for r in record.results} == dict.fromkeys(names, Outcome.OK), f"seed {seed}"
        assert len(jobs) == NODES and all(j.state == JobState.DONE for j in jobs), f"seed {seed}"
        assert not any(j.result and j.result["duplicate"] for j in jobs)
        logged = Counter(victim.recorded() + survivor.recorded())
        assert max(logged.values()) == 1, f"seed {seed}: recorded twice: {[n for n, c in logged.items() if c > 1]}"
        # nothing run twice: a job was taken again only when its worker died before recording it
        again = {j.node for j in jobs if j.attempts > 1}
        assert not again & set(victim.recorded()), f"seed {seed}"
        assert all(j.lease_owner and "/" in j.lease_owner for j in jobs)
        taken_over += len(again)
    # the kills landed while the victim held jobs: some were taken over after their lease
    assert taken_over > 0
