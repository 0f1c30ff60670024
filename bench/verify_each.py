"""Benchmark: ``certfleet verify --each`` against ``openssl verify`` on the same N chains.

Creates an RSA-2048 root, an RSA-2048 intermediate and N leaves with subjectAltNames, written as
PEM files in a temporary folder, then times one invocation of each tool over all N leaves, whole
processes included (interpreter start, imports, reading the files, printing the results). Both
must agree that every chain is valid. The runs of the two tools alternate, so that other work on
the machine weighs on both alike. Prints every run, the best and the median of each tool, their
rates and ratios, and the load average.

    .venv/bin/python bench/verify_each.py            # N = 10,000
    .venv/bin/python bench/verify_each.py --n 1000 --repeat 5
    .venv/bin/python bench/verify_each.py --keep /tmp/chains --repeat 9   # made once, then reused
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from certfleet.testing import TestCA, make_key


def chains(folder: Path, n: int) -> list[str]:
    """The N leaves in ``folder``: made there unless an earlier run with the same N left them."""
    listing = folder / "leaves.txt"
    if listing.exists():
        names = listing.read_text().split()
        if len(names) == n and all((folder / name).exists() for name in (*names, "root.pem", "inter.pem")):
            return names
    names = make_chains(folder, n)
    listing.write_text("\n".join(names) + "\n")
    return names


def make_chains(folder: Path, n: int) -> list[str]:
    root = TestCA.root("certfleet Bench Root", key="rsa:2048")
    inter = root.intermediate("certfleet Bench Intermediate", key="rsa:2048")
    (folder / "root.pem").write_bytes(root.cert_pem())
    (folder / "inter.pem").write_bytes(inter.cert_pem())
    # Making 10,000 keys would take longer than the benchmark: the leaves share one. certfleet
    # checks each leaf's key on its own (a valid point on a curve phones accept), remembering
    # nothing by key, so sharing one does not flatter it.
    key = make_key("ec:p256")
    names = []
    for i in range(n):
        leaf = inter.leaf(
            f"host{i}.bench.test", f"alt{i}.bench.test", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", private_key=key
        )
        name = f"leaf{i:06d}.pem"
        (folder / name).write_bytes(leaf.cert_pem())
        names.append(name)
    return names


def certfleet_command() -> list[str]:
    script = Path(sys.executable).with_name("certfleet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "certfleet"]


# as on a user's machine: Python caches the bytecode of what it imports (this sandbox's default
# PYTHONDONTWRITEBYTECODE would make every run compile certfleet's sources again)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


@dataclass
class Run:
    wall: float  # seconds, start to exit
    cpu: float  # user + system seconds of the process and the workers it started

    def __lt__(self, other: Run) -> bool:
        return self.wall < other.wall


def timed(cmd: list[str], cwd: Path) -> tuple[Run, subprocess.CompletedProcess[bytes]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, check=False, env=ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu), proc


def run_openssl(folder: Path, leaves: list[str]) -> Run:
    cmd = ["openssl", "verify", "-no-CApath", "-no-CAstore", "-CAfile", "root.pem", "-untrusted", "inter.pem", *leaves]
    run, proc = timed(cmd, folder)
    ok = sum(1 for line in proc.stdout.decode().splitlines() if line.endswith(": OK"))
    if proc.returncode != 0 or ok != len(leaves):
        sys.exit(f"openssl verify: {ok} of {len(leaves)} OK, exit {proc.returncode}: {proc.stderr.decode()[:500]}")
    return run


def run_certfleet(folder: Path, leaves: list[str]) -> Run:
    cmd = [
        *certfleet_command(),
        "verify",
        "--each",
        *leaves,
        "--untrusted",
        "inter.pem",
        "--trust-only",
        "root.pem",
        "--json",
    ]
    run, proc = timed(cmd, folder)
    results = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]
    ok = sum(1 for r in results if r["valid"])
    if proc.returncode != 0 or ok != len(leaves) or [r["file"] for r in results] != leaves:
        sys.exit(
            f"certfleet verify --each: {ok} of {len(leaves)} valid, exit {proc.returncode}: "
            f"{proc.stderr.decode()[:500]}"
        )
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of chains (default 10000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool (default 3)")
    parser.add_argument("--keep", type=Path, help="make the chains in this folder and keep them (reused next time)")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="certfleet-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        start = time.perf_counter()
        leaves = chains(folder, args.n)
        print(f"{args.n} chains ready in {time.perf_counter() - start:.1f} s in {folder}")
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        version = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=False).stdout.strip()
        print(f"machine: {cpus} cores; {version}")
        run_certfleet(folder, leaves[:10])  # once, so the bytecode cache is written as on any machine
        openssl: list[Run] = []
        certfleet: list[Run] = []
        for i in range(args.repeat):
            load = os.getloadavg()[0]
            openssl.append(run_openssl(folder, leaves))
            certfleet.append(run_certfleet(folder, leaves))
            print(
                f"run {i + 1}: openssl {openssl[-1].wall:6.3f} s, certfleet {certfleet[-1].wall:6.3f} s "
                f"({openssl[-1].wall / certfleet[-1].wall:.2f}x; load average {load:.2f})"
            )
        for label, runs in (("openssl verify:         ", openssl), ("certfleet verify --each:", certfleet)):
            best = min(runs)
            median = statistics.median(run.wall for run in runs)
            print(
                f"{label} best {best.wall:6.3f} s {args.n / best.wall:7.0f} chains/s (CPU {best.cpu:.3f} s); "
                f"median {median:6.3f} s {args.n / median:7.0f} chains/s"
            )
        best_ratio = min(openssl).wall / min(certfleet).wall
        median_ratio = statistics.median(r.wall for r in openssl) / statistics.median(r.wall for r in certfleet)
        print(f"ratio: best {best_ratio:.2f}x, median {median_ratio:.2f}x (all {args.n} valid for both)")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
