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

Workers: ``--workers 1`` (the default) is one ``certfleet deploy`` process doing all the work.
``--workers 2`` starts two ``certfleet worker`` processes beside a deploy queued for them, when
this installation has that command (``certfleet worker --help`` exits 0); otherwise it says so
and stops.

    .venv/bin/python bench/deploy_scale.py                          # N = 1000, concurrency 8
    .venv/bin/python bench/deploy_scale.py --nodes 200 --concurrency 32
    .venv/bin/python bench/deploy_scale.py --profile /tmp/deploy.prof  # cProfile of the first deploy
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.testing import TestCA

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


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8, help="certfleet deploy --concurrency")
    parser.add_argument("--workers", type=int, default=1, choices=[1, 2])
    parser.add_argument("--profile", type=Path, help="write a cProfile of the first deploy here")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="certfleet-deploy-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        cli = Cli(folder / "home", folder)
        if args.workers > 1 and not has_worker(cli):
            raise SystemExit("--workers 2 needs `certfleet worker`, which this installation does not have")
        cli.run("init")
        (folder / "fleet.toml").write_text(fleet_file(args.nodes, folder / "nodes"))
        (folder / "nodes").mkdir()
        for i in range(args.nodes):
            (folder / "nodes" / f"n{i:05d}").mkdir()
        wall, cpu, rss, _ = cli.timed("apply", str(folder / "fleet.toml"), "--json")
        rows = [line(f"apply (fleet file of {args.nodes} nodes)", wall, cpu, rss)]
        print(rows[-1], flush=True)
        fp = make_version(cli, folder)
        deploy = ("deploy", "web", "--json", "--concurrency", str(args.concurrency))
        if args.workers > 1:
            # PLACE FOR THE WORKERS: with `certfleet worker`, the deploy is queued and two worker
            # processes share its nodes; the figures are the whole: queue, workers, until done.
            raise SystemExit("--workers 2: run the queued deploy with two `certfleet worker` processes here")
        for label in ("first deploy", "deploy again (unchanged)"):
            profile = args.profile if (args.profile and label == "first deploy") else None
            if profile:
                argv = ("-m", "cProfile", "-o", str(profile), "-m", "certfleet", *deploy)
                wall, cpu, rss, out = timed_python(cli, argv)
            else:
                wall, cpu, rss, out = cli.timed(*deploy)
            (folder / f"{label.split()[0]}-deploy.json").write_text(out)
            counts = outcomes(out)
            served = {(folder / "nodes" / f"n{i:05d}" / "live" / "cert.pem").read_bytes() for i in (0, args.nodes - 1)}
            assert len(served) == 1, "the nodes' live files differ"
            rows.append(
                line(
                    f"{label}, {args.nodes} nodes, concurrency {args.concurrency}",
                    wall,
                    cpu,
                    rss,
                    ", ".join(f"{v} {k}" for k, v in counts.items()),
                )
            )
            print(rows[-1], f"load {os.getloadavg()[0]:.1f}", flush=True)
        wall, cpu, rss, out = cli.timed("status", "--json")
        reported = sum(len(lin["nodes"]) for lin in json.loads(out)["lineages"])
        rows.append(line(f"status --json, {reported} nodes", wall, cpu, rss))
        print(rows[-1], flush=True)
        print(f"\nleaf {fp[:16]}; {args.nodes} nodes; workers {args.workers}\n")
        print("| what | wall | CPU | peak memory | outcomes |")
        print("|---|---|---|---|---|")
        print("\n".join(rows))


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
