"""Benchmark: ``certfleet deploy`` of one lineage to N local nodes (pem targets), whole process.

Makes a store in a temporary folder with one lineage (``web``) and N nodes (default 1,000), each
with one ``pem`` target folder of its own and a reload command (``true``), all declared in one
fleet file (``certfleet apply``). A test CA made at run time signs the store's CSR, and the
certificate is imported (``certfleet import``): a real version, as in production. Then it times,
each as a whole process (interpreter start and imports included) under GNU time:

- ``certfleet deploy web --json``: the first deploy (every node gets the version: upload, switch,
  reload), then the same deploy again (every node is ``unchanged``: read and checked only);
- ``certfleet status --json`` after those deploys.

For each: wall time, CPU time (user + system, children included) and peak memory (RSS).

``--backend sqlite|postgresql``: the store (default SQLite; PostgreSQL is a throw-away cluster, the
tests' launcher). ``--workers N`` (N >= 1, PostgreSQL): the first deploy and the same again as
jobs, ``certfleet deploy web --queue`` with N ``certfleet worker`` processes (``--batch``) started
before it and stopped with SIGTERM after, measured as a whole (see :func:`run_queued`) and checked
(:func:`check_deployment`, :func:`check_live`); then the plain deploy of a fresh version on the
same store, for comparison.

    .venv/bin/python bench/deploy_scale.py                          # N = 1000, concurrency 8
    .venv/bin/python bench/deploy_scale.py --nodes 200 --concurrency 32
    .venv/bin/python bench/deploy_scale.py --profile /tmp/deploy.prof  # cProfile of the first deploy
    .venv/bin/python bench/deploy_scale.py --backend postgresql
    .venv/bin/python bench/deploy_scale.py --workers 2 --batch 16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.testing import TestCA

URL_ENV = "CERTFLEET_DATABASE_URL"

TIME = "/usr/bin/time"  # GNU time (Debian's time package)
NAME = "www.bench.test"


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class Cli:
    """``certfleet`` as a child process of this interpreter, against one store."""

    def __init__(self, home: Path, folder: Path) -> None:
        self.env = {**os.environ, "CERTFLEET_HOME": str(home)}
        self.env.pop("CERTFLEET_DATABASE_URL", None)
        self.folder = folder

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "certfleet", *args], env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"certfleet {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def timed(self, *args: str, ok: tuple[int, ...] = (0,)) -> tuple[float, float, float, str]:
        """Wall s, CPU s (children included), peak RSS MiB, stdout of one ``certfleet`` process."""
        out, usage = self.folder / "out.txt", self.folder / "usage.txt"
        argv = [TIME, "-f", "%M %U %S", "-o", str(usage), sys.executable, "-m", "certfleet", *args]
        start = time.perf_counter()
        with out.open("w") as fh:
            done = subprocess.run(argv, stdout=fh, stderr=subprocess.PIPE, env=self.env, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode not in ok:
            raise SystemExit(f"certfleet {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        rss_kib, user, system = usage.read_text().split()[-3:]
        return wall, float(user) + float(system), int(rss_kib) / 1024, out.read_text()


def fleet_file(nodes: int, root: Path, *, reload: str = "true", extra: str = "") -> str:
    """N nodes, each with a pem target under ``root``, all in lineage web."""
    members = ", ".join(f'"n{i:05d}"' for i in range(nodes))
    lines = ["version = 1", "", "[lineages.web]", f"nodes = [{members}]", ""]
    for i in range(nodes):
        lines += [
            f"[nodes.n{i:05d}]",
            f'names = ["{NAME}"]',
            f'reload = "{reload}"',
            *([extra] if extra else []),
            f'targets = [{{ kind = "pem", path = "{root / f"n{i:05d}"}" }}]',
            "",
        ]
    return "\n".join(lines)


def make_version(cli: Cli, folder: Path) -> str:
    """Request web's key, have a test CA sign it, trust the CA, import: the leaf's fingerprint."""
    root = TestCA.root("bench root")
    inter = root.intermediate("bench intermediate")
    csr_file = folder / "web.csr"
    cli.run("request", "web", "--out", str(csr_file))
    leaf = inter.sign_csr(x509.load_pem_x509_csr(csr_file.read_bytes()))
    (folder / "root.pem").write_bytes(pem(root.cert))
    (folder / "leaf.pem").write_bytes(pem(leaf))
    (folder / "inter.pem").write_bytes(pem(inter.cert))
    cli.run("trust", "add", str(folder / "root.pem"))
    cli.run("import", "web", str(folder / "leaf.pem"), str(folder / "inter.pem"), "--no-fetch")
    from certfleet.certinfo import fingerprint

    return fingerprint(leaf)


def has_worker(cli: Cli) -> bool:
    """Whether this installation has ``certfleet worker`` (its --help exits 0)."""
    done = subprocess.run(
        [sys.executable, "-m", "certfleet", "worker", "--help"], env=cli.env, capture_output=True, check=False
    )
    return done.returncode == 0


def outcomes(report: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in json.loads(report)["nodes"]:
        counts[node["outcome"]] = counts.get(node["outcome"], 0) + 1
    return counts


def line(what: str, wall: float, cpu: float, rss: float, extra: str = "") -> str:
    return f"| {what} | {wall:.2f} s | {cpu:.2f} s | {rss:.0f} MiB | {extra} |"


# -- workers: a queued deploy and N `certfleet worker` processes, measured as a whole ----------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """CPU seconds of a live process and its children it has waited for (``/proc/PID/stat``:
    utime + stime + cutime + cstime), read without psutil."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / CLK_TCK


def reap(proc: subprocess.Popen[bytes]) -> tuple[int, float, float]:
    """Wait for ``proc`` with wait4: its exit status, CPU s (user + system, its waited-for children
    included, as GNU time counts them) and peak RSS MiB (the largest of it and those children)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


class WorkerProc:
    """``certfleet worker --json`` in a process of its own; its events counted as they come."""

    def __init__(self, cli: Cli, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "certfleet", "worker", "--json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli.env,
        )
        self.ended: dict[int | None, int] = {}  # deployment: jobs recorded or failed here
        self.released = 0
        self.err = b""
        self.changed = threading.Condition()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True),
        ]
        for r in self.readers:
            r.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            event = json.loads(raw)
            with self.changed:
                if event["event"] in ("recorded", "failed"):
                    self.ended[event["deployment"]] = self.ended.get(event["deployment"], 0) + 1
                elif event["event"] == "released":
                    self.released += 1
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def _drain(self, stream: IO[bytes]) -> None:
        self.err = stream.read()

    def stop(self) -> tuple[int, float, float]:
        """SIGTERM, then wait: exit status, CPU s of its whole life, peak RSS MiB."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        done = reap(self.proc)
        for r in self.readers:
            r.join(10)
        return done


@dataclass(frozen=True)
class Measured:
    wall: float  # from the deploy's start to the last node's result
    cpu: float  # deploy process + workers while it ran (see run_queued)
    rss: float  # sum of the processes' peaks
    deploy: tuple[float, float, float]  # the queueing process alone: wall, CPU, peak RSS
    workers: tuple[tuple[float, float, float], ...]  # each worker: CPU during, CPU whole life, peak RSS
    deployment: int
    released: int


def run_queued(cli: Cli, workers: int, worker_args: Sequence[str], nodes: int, timeout: float = 3600) -> Measured:
    """``certfleet deploy web --queue`` with ``workers`` ``certfleet worker`` processes started
    before it (and their imports done) and stopped with SIGTERM once every node has its result.

    Wall: from the deploy process's start until the workers have reported all ``nodes`` results
    (their ``recorded``/``failed`` events). CPU: the deploy process (wait4: it is a child of this
    interpreter) plus each worker's CPU from the deploy's start until the end (``/proc/PID/stat``,
    utime + stime + cutime + cstime, so the reload commands they ran are in it; their start-up and
    idle polling before are not). Peak memory: the sum of the processes' peak RSS (wait4's
    ru_maxrss of each): they all run at once, so this bounds what the whole holds at a time.
    """
    procs = [WorkerProc(cli, *worker_args) for _ in range(workers)]
    try:
        # started and their imports done: each has connected and polled (no job yet), idle
        time.sleep(3)
        for w in procs:
            if w.proc.poll() is not None:
                raise SystemExit(f"certfleet worker ended at once:\n{w.err.decode(errors='replace')[-3000:]}")
        before = [proc_cpu(w.proc.pid) for w in procs]
        start = time.perf_counter()
        out, err = cli.folder / "out.txt", cli.folder / "err.txt"
        with out.open("wb") as o, err.open("wb") as e:
            deploy = subprocess.Popen(
                [sys.executable, "-m", "certfleet", "deploy", "web", "--queue", "--json"],
                stdout=o,
                stderr=e,
                env=cli.env,
            )
            code, d_cpu, d_rss = reap(deploy)
        d_wall = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"certfleet deploy --queue failed ({code}):\n{err.read_text(errors='replace')[-3000:]}")
        deployment = int(json.loads(out.read_text())["deployment"])
        deadline = time.monotonic() + timeout
        while sum(w.ended.get(deployment, 0) for w in procs) < nodes:
            alive = [w for w in procs if w.proc.poll() is None]
            if not alive or time.monotonic() > deadline:
                raise SystemExit(
                    "the workers did not finish: " + " / ".join(w.err.decode(errors="replace")[-2000:] for w in procs)
                )
            with procs[0].changed:
                procs[0].changed.wait(0.05)
        wall = time.perf_counter() - start
        during = [proc_cpu(w.proc.pid) - b for w, b in zip(procs, before, strict=True)]
    finally:
        stopped = [w.stop() for w in procs]
    for w, (code, _, _) in zip(procs, stopped, strict=True):
        if code != 128 + signal.SIGTERM:
            raise SystemExit(f"a worker ended with {code}:\n{w.err.decode(errors='replace')[-3000:]}")
    return Measured(
        wall=wall,
        cpu=d_cpu + sum(during),
        rss=d_rss + sum(s[2] for s in stopped),
        deploy=(d_wall, d_cpu, d_rss),
        workers=tuple((c, s[1], s[2]) for c, s in zip(during, stopped, strict=True)),
        deployment=deployment,
        released=sum(w.released for w in procs),
    )


def check_deployment(url: str, deployment: int, nodes: int) -> dict[str, int]:
    """Every node has exactly one result in the deployment, and every job is done, once run:
    the outcomes counted."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT node_name, count(*), min(outcome) FROM deployment_results WHERE deployment_id = :d"
                    " GROUP BY node_name"
                ),
                {"d": deployment},
            ).all()
            jobs = conn.execute(
                text("SELECT state, count(*), max(attempts) FROM jobs WHERE deployment_id = :d GROUP BY state"),
                {"d": deployment},
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == nodes, f"deployment {deployment}: {len(rows)} nodes have a result, not {nodes}"
    twice = [r[0] for r in rows if r[1] != 1]
    assert not twice, f"deployment {deployment}: nodes with more than one result: {twice[:5]}"
    assert [(s, c) for s, c, _ in jobs] == [("done", nodes)], f"deployment {deployment}: jobs {jobs}"
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r[2]).lower()] = counts.get(str(r[2]).lower(), 0) + 1
    counts["max attempts"] = int(jobs[0][2])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8, help="certfleet deploy --concurrency")
    parser.add_argument(
        "--backend", choices=["sqlite", "postgresql"], help="the store (default: sqlite; postgresql with --workers)"
    )
    parser.add_argument("--workers", type=int, default=0, help="N >= 1: a queued deploy run by N `certfleet worker`s")
    parser.add_argument("--batch", type=int, default=16, help="certfleet worker --batch")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the first (plain) deploy here")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    backend = args.backend or ("postgresql" if args.workers else "sqlite")
    if args.workers < 0 or (args.workers and backend != "postgresql"):
        parser.error("--workers N (N >= 1) needs --backend postgresql: queued deploys need a PostgreSQL store")
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="certfleet-deploy-"))
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        cli = Cli(folder / "home", folder)
        url = ""
        if backend == "postgresql":
            url = start_postgres(stack)
            cli.env[URL_ENV] = url
        if args.workers and not has_worker(cli):
            raise SystemExit("--workers needs `certfleet worker`, which this installation does not have")
        cli.run("init")
        (folder / "fleet.toml").write_text(fleet_file(args.nodes, folder / "nodes"))
        (folder / "nodes").mkdir()
        for i in range(args.nodes):
            (folder / "nodes" / f"n{i:05d}").mkdir()
        wall, cpu, rss, _ = cli.timed("apply", str(folder / "fleet.toml"), "--json")
        rows = [line(f"apply (fleet file of {args.nodes} nodes), {backend}", wall, cpu, rss)]
        print(rows[-1], f"load {load()}", flush=True)
        if args.workers:
            worker_args = ("--batch", str(args.batch), "--poll", "0.2")
            make_version(cli, folder)
            for label in ("first", "again (unchanged)"):
                m = run_queued(cli, args.workers, worker_args, args.nodes)
                counts = check_deployment(url, m.deployment, args.nodes)
                check_live(folder, args.nodes)
                each = "; ".join(f"worker {i + 1}: {c:.2f} s CPU, {r:.0f} MiB" for i, (c, _, r) in enumerate(m.workers))
                rows.append(
                    line(
                        f"queued deploy {label}, {args.nodes} nodes, {args.workers} worker(s), batch {args.batch}",
                        m.wall,
                        m.cpu,
                        m.rss,
                        ", ".join(f"{v} {k}" for k, v in counts.items())
                        + f"; deploy --queue {m.deploy[0]:.2f} s, {m.deploy[1]:.2f} s CPU, {m.deploy[2]:.0f} MiB"
                        + f"; {each}"
                        + (f"; {m.released} released" if m.released else "")
                        + f"; load {load()}",
                    )
                )
                print(rows[-1], flush=True)
        fp = make_version(cli, folder)  # a fresh version: the plain deploy's first is a real one too
        deploy = ("deploy", "web", "--json", "--concurrency", str(args.concurrency))
        for label in ("first deploy", "deploy again (unchanged)"):
            profile = args.profile if (args.profile and label == "first deploy") else None
            if profile:
                argv = ("-m", "cProfile", "-o", str(profile), "-m", "certfleet", *deploy)
                wall, cpu, rss, out = timed_python(cli, argv)
            else:
                wall, cpu, rss, out = cli.timed(*deploy)
            (folder / f"{label.split()[0]}-deploy.json").write_text(out)
            counts = outcomes(out)
            check_live(folder, args.nodes)
            rows.append(
                line(
                    f"plain {label}, {args.nodes} nodes, concurrency {args.concurrency}",
                    wall,
                    cpu,
                    rss,
                    ", ".join(f"{v} {k}" for k, v in counts.items()) + f"; load {load()}",
                )
            )
            print(rows[-1], flush=True)
        wall, cpu, rss, out = cli.timed("status", "--json")
        reported = sum(len(lin["nodes"]) for lin in json.loads(out)["lineages"])
        rows.append(line(f"status --json, {reported} nodes", wall, cpu, rss, f"load {load()}"))
        print(rows[-1], flush=True)
        print(f"\nleaf {fp[:16]}; {args.nodes} nodes; {backend}; workers {args.workers}\n")
        print("| what | wall | CPU | peak memory | outcomes, load |")
        print("|---|---|---|---|---|")
        print("\n".join(rows))


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def check_live(folder: Path, nodes: int) -> None:
    """Every node's live certificate is the version just imported (leaf.pem)."""
    leaf = (folder / "leaf.pem").read_bytes()
    stale = [i for i in range(nodes) if (folder / "nodes" / f"n{i:05d}" / "live" / "cert.pem").read_bytes() != leaf]
    assert not stale, f"{len(stale)} node(s) do not serve the new version, e.g. n{stale[0]:05d}"


def start_postgres(stack: contextlib.ExitStack) -> str:
    """A throw-away PostgreSQL cluster (the tests' launcher), stopped when ``stack`` closes: the
    URL of a fresh database in it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import support
    from support.postgres import PostgresCluster

    support.mark_running(True)
    cluster = stack.enter_context(PostgresCluster())
    return cluster.create_database("bench")


def timed_python(cli: Cli, argv: tuple[str, ...]) -> tuple[float, float, float, str]:
    out, usage = cli.folder / "out.txt", cli.folder / "usage.txt"
    start = time.perf_counter()
    with out.open("w") as fh:
        subprocess.run(
            [TIME, "-f", "%M %U %S", "-o", str(usage), sys.executable, *argv],
            stdout=fh,
            stderr=subprocess.DEVNULL,
            env=cli.env,
            check=False,
        )
    wall = time.perf_counter() - start
    rss_kib, user, system = usage.read_text().split()[-3:]
    return wall, float(user) + float(system), int(rss_kib) / 1024, out.read_text()


if __name__ == "__main__":
    main()
