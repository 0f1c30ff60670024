"""Benchmark: ``certfleet status --json`` and ``Store.last_results`` with 1,000 nodes, after 0 and 250
deploys of every node, on SQLite and on PostgreSQL.

Makes a store with one lineage (``web``, one issued version) and N nodes (no probe endpoint, so
``status`` reads the store and probes nothing). Then, for each number of deploys D, it fills the
history up to D deploys of every node: all but the last by bulk inserts (one deployment row and N
result rows each, as ``record_deployment`` writes them), the last through ``record_deployment``
itself, which keeps each node's last result. At each D it times:

- ``certfleet status --json`` as a whole process (interpreter start and imports included): the
  best wall time and the best CPU time (user + system) of ``--repeat`` runs, and peak memory;
- ``Store.last_results("web")`` in this process, best of ``--repeat``;
- what ``last_results`` did before (``deployments("web", limit=500)``, every result of each), once,
  in a process of its own (its time and peak memory).

certfleet runs from compiled bytecode, as an installed package does: the script compiles its
package first and lets the children write bytecode whatever ``PYTHONDONTWRITEBYTECODE`` says
(with it set, a source checkout compiles its modules again at every run).

PostgreSQL runs as a throw-away cluster (the tests' launcher: initdb and pg_ctl as the postgres
user when run as root, a loopback port, a temporary folder).

    .venv/bin/python bench/status_scale.py                        # N = 1000, D = 0 and 250, both backends
    .venv/bin/python bench/status_scale.py --backend sqlite --deploys 0 --deploys 50
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from certfleet.fleet.model import Outcome
from certfleet.store import NodeResult, Store
from certfleet.store._models import (
    DeploymentRow,
    LineageRow,
    NodeResultRow,
    NodeRow,
    TargetRow,
    VersionRow,
    lineage_nodes,
)
from certfleet.testing import TestCA

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import support  # noqa: E402 (the tests' own PostgreSQL launcher)
from support.postgres import PostgresCluster  # noqa: E402

UTC = dt.UTC
TIME = "/usr/bin/time"  # GNU time (Debian's time package)
_BATCH = 5000


@contextmanager
def backend_env(name: str, folder: Path) -> Iterator[dict[str, str]]:
    """The environment of a store on ``name``: a fresh home, and a fresh cluster for PostgreSQL."""
    env = {"CERTFLEET_HOME": str(folder / f"home-{name}")}
    if name == "sqlite":
        env["CERTFLEET_DATABASE_URL"] = ""
        yield env
        return
    support.mark_running(True)
    with PostgresCluster() as cluster:
        env["CERTFLEET_DATABASE_URL"] = cluster.create_database("bench")
        yield env


@contextmanager
def environ(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    for k, v in env.items():
        if v:
            os.environ[k] = v
        else:
            os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def make_fleet(store: Store, n: int) -> int:
    """N nodes in lineage web with one issued version; the version's number."""
    leaf = TestCA.root("bench root").intermediate("bench intermediate").leaf("www.bench.test")
    version = store.issue("web", leaf.cert, leaf.chain, key=leaf.key)
    now = dt.datetime.now(UTC)
    with store.session(write=True) as s:
        lineage_id = s.scalar(select(LineageRow.id).where(LineageRow.name == "web"))
        nodes = [
            NodeRow(
                name=f"node{i:05d}",
                names=[f"node{i:05d}.bench.test"],
                transport="local",
                options={},
                created_at=now,
                updated_at=now,
                targets=[TargetRow(position=0, kind="pem", path=f"/srv/node{i:05d}", options={})],
            )
            for i in range(n)
        ]
        s.add_all(nodes)
        s.flush()
        s.execute(insert(lineage_nodes), [{"lineage_id": lineage_id, "node_id": node.id} for node in nodes])
    return version.number


def results_for(names: list[str], at: dt.datetime, round_: int) -> list[NodeResult]:
    outcome = Outcome.ROLLED_BACK if round_ % 10 == 9 else Outcome.OK
    output = "nginx: [emerg] cannot load certificate" if outcome is Outcome.ROLLED_BACK else ""
    step = "test" if outcome is Outcome.ROLLED_BACK else None
    return [NodeResult(n, outcome, at, at + dt.timedelta(seconds=2), step, output, None) for n in names]


def add_deploys(store: Store, number: int, names: list[str], upto: int) -> None:
    """Fill the history up to ``upto`` deploys of every node (bulk inserts, the last one recorded)."""
    with store.session() as s:
        have = s.scalar(select(func.count()).select_from(DeploymentRow)) or 0
        lineage_id = s.scalar(select(LineageRow.id).where(LineageRow.name == "web"))
        version_id = s.scalar(select(VersionRow.id).where(VersionRow.lineage_id == lineage_id))
    t0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
    for round_ in range(have, upto):
        at = t0 + dt.timedelta(hours=round_)
        results = results_for(names, at, round_)
        if round_ == upto - 1:
            store.record_deployment("web", number, results, started_at=at)
            continue
        with store.session(write=True) as s:
            dep_id = s.scalar(
                insert(DeploymentRow)
                .values(lineage_id=lineage_id, version_id=version_id, actor="bench", started_at=at, finished_at=at)
                .returning(DeploymentRow.id)
            )
            rows = [
                {
                    "deployment_id": dep_id,
                    "node_name": r.node,
                    "outcome": r.outcome,
                    "failed_step": r.failed_step,
                    "output": r.output,
                    "served_fingerprint": r.served_fingerprint,
                    "started_at": r.started_at,
                    "finished_at": r.finished_at,
                }
                for r in results
            ]
            for i in range(0, len(rows), _BATCH):
                s.execute(insert(NodeResultRow), rows[i : i + _BATCH])


def compile_certfleet() -> None:
    """Bytecode for certfleet's own modules, where it runs from (a source checkout has none)."""
    import certfleet

    compileall.compile_dir(str(Path(certfleet.__file__).parent), quiet=1)


def spawn(argv: list[str], env: dict[str, str], folder: Path) -> tuple[float, float, float, str]:
    """Run ``argv`` with the store's ``env``: wall s, CPU s (user + system), peak RSS MiB, its output."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    full = {**base, **{k: v for k, v in env.items() if v}}
    if not env.get("CERTFLEET_DATABASE_URL"):
        full.pop("CERTFLEET_DATABASE_URL", None)
    out, usage = folder / "out.txt", folder / "usage.txt"
    # GNU time measures the child alone: a child's own peak memory would count what it shared
    # with this (large) process until exec
    argv = [TIME, "-f", "%M %U %S", "-o", str(usage), *argv]
    start = time.perf_counter()
    with out.open("w") as fh:
        subprocess.run(argv, stdout=fh, stderr=subprocess.DEVNULL, env=full, check=True)
    wall = time.perf_counter() - start
    rss_kib, user, system = usage.read_text().split()[-3:]
    return wall, float(user) + float(system), int(rss_kib) / 1024, out.read_text()


def run_status(env: dict[str, str], folder: Path) -> tuple[float, float, float, int]:
    """One ``certfleet status --json``: wall s, CPU s, peak RSS MiB, nodes reported."""
    wall, cpu, rss, out = spawn([sys.executable, "-m", "certfleet", "status", "--json"], env, folder)
    return wall, cpu, rss, sum(len(lin["nodes"]) for lin in json.loads(out)["lineages"])


# what Store.last_results did before deployment_last_results: the newest 500 deployments, whole
OLD_LAST_RESULTS = """
import json, time
from certfleet.store import Store

store = Store.open()
start = time.perf_counter()
out = {}
for dep in store.deployments("web", limit=500):
    for r in dep.results:
        out.setdefault(r.node, (dep.id, r.outcome.value))
print(json.dumps({"seconds": time.perf_counter() - start, "last": out}))
"""


def best_of(repeat: int, fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn(*args)
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    # a benchmark stopped with kill still stops its PostgreSQL cluster (the with blocks run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--deploys", type=int, action="append", help="deploys of every node (repeatable; 0 and 250)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timing; the best is kept")
    parser.add_argument("--no-old", action="store_true", help="skip timing the former last_results")
    args = parser.parse_args()
    deploys = sorted(args.deploys or [0, 250])
    rows = []
    compile_certfleet()
    with tempfile.TemporaryDirectory(prefix="certfleet-status-") as tmp:
        for name in args.backend or ["sqlite", "postgresql"]:
            with backend_env(name, Path(tmp)) as env, environ(env):
                store = Store.init()
                start = time.perf_counter()
                number = make_fleet(store, args.nodes)
                names = [n.name for n in store.nodes("web")]
                print(f"{name}: {len(names)} nodes made in {time.perf_counter() - start:.1f} s", flush=True)
                for d in deploys:
                    start = time.perf_counter()
                    add_deploys(store, number, names, d)
                    print(f"{name}: history of {d} deploys of every node in {time.perf_counter() - start:.1f} s")
                    runs = [run_status(env, Path(tmp)) for _ in range(args.repeat)]
                    # the best wall time and the best CPU time, each of its own run
                    wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
                    rss, reported = max(r[2] for r in runs), runs[0][3]
                    assert reported == len(names), reported
                    lr, last = best_of(args.repeat, store.last_results, "web")
                    assert len(last) == (len(names) if d else 0)
                    old = old_rss = None
                    if not args.no_old:
                        _, _, old_rss, out = spawn([sys.executable, "-c", OLD_LAST_RESULTS], env, Path(tmp))
                        before = json.loads(out)
                        old = before["seconds"]
                        assert before["last"] == {n: [d.id, r.outcome.value] for n, (d, r) in last.items()}
                    shown = ", ".join(f"{r[0]:.2f}" for r in runs) + f"; load {os.getloadavg()[0]:.1f}"
                    print(
                        f"  status --json: best {wall:.2f} s of [{shown}], cpu {cpu:.2f} s, peak {rss:.0f} MiB;"
                        f" last_results {lr * 1000:.0f} ms"
                        + (f" (before: {old * 1000:.0f} ms, peak {old_rss:.0f} MiB)" if old is not None else ""),
                        flush=True,
                    )
                    rows.append((name, d, wall, cpu, rss, lr, old, old_rss))
                store.close()
    print()
    print("| backend | deploys of every node | status --json | CPU | peak memory | last_results | before |")
    print("|---|---|---|---|---|---|---|")
    for name, d, wall, cpu, rss, lr, old, old_rss in rows:
        before = f"{old:.2f} s, {old_rss:.0f} MiB" if old is not None else "-"
        print(f"| {name} | {d} | {wall:.2f} s | {cpu:.2f} s | {rss:.0f} MiB | {lr * 1000:.0f} ms | {before} |")


if __name__ == "__main__":
    main()
