"""Benchmark: ``certfleet verify --each`` against ``openssl verify`` on the same N chains.

Creates an RSA-2048 root, an RSA-2048 intermediate and N leaves with subjectAltNames, written as
PEM files in a temporary folder, then times one invocation of each tool over all N leaves, whole
processes included (interpreter start, imports, reading the files, printing the results). Both
must agree that every chain is valid. Prints both rates and the ratio.

    .venv/bin/python bench/verify_each.py            # N = 10,000
    .venv/bin/python bench/verify_each.py --n 1000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from certfleet.testing import TestCA, make_key


def make_chains(folder: Path, n: int) -> list[str]:
    root = TestCA.root("certfleet Bench Root", key="rsa:2048")
    inter = root.intermediate("certfleet Bench Intermediate", key="rsa:2048")
    (folder / "root.pem").write_bytes(root.cert_pem())
    (folder / "inter.pem").write_bytes(inter.cert_pem())
    # The leaves' own key plays no part in verifying them (their issuer's does), and making
    # 10,000 keys would take longer than the benchmark: the leaves share one.
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
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool; the best is kept (default 3)")
    parser.add_argument("--keep", type=Path, help="make the chains in this folder and keep them")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="certfleet-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        start = time.perf_counter()
        leaves = make_chains(folder, args.n)
        print(f"made {args.n} chains in {time.perf_counter() - start:.1f} s in {folder}")
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        version = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=False).stdout.strip()
        print(f"machine: {cpus} cores; {version}")
        run_certfleet(folder, leaves[:10])  # once, so the bytecode cache is written as on any machine
        best_openssl = min(run_openssl(folder, leaves) for _ in range(args.repeat))
        best_certfleet = min(run_certfleet(folder, leaves) for _ in range(args.repeat))
        rate_openssl = args.n / best_openssl.wall
        rate_certfleet = args.n / best_certfleet.wall
        for label, run, rate in (
            ("openssl verify:         ", best_openssl, rate_openssl),
            ("certfleet verify --each:", best_certfleet, rate_certfleet),
        ):
            print(f"{label} {run.wall:7.3f} s  {rate:9.0f} chains/s  (CPU {run.cpu:.3f} s)")
        print(f"ratio: {rate_certfleet / rate_openssl:.2f}x (all {args.n} valid for both)")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
