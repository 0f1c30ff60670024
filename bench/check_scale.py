"""Benchmark: ``certfleet check`` of M endpoints against ``python -m sslyze --certinfo`` on the same ones.

Starts one nginx with M ``server`` blocks, each on its own loopback port with its own certificate
(leaves alternate RSA-2048 and ECDSA P-256, under an RSA and an ECDSA intermediate), then times one
invocation of each tool over all M endpoints, whole processes included (interpreter start, imports,
every handshake, verification, the JSON written). Both must find every endpoint valid. Prints
both times and the ratio.

sslyze lives in its own virtualenv (``bench/.venv-sslyze``), made by this script on first use.

    .venv/bin/python bench/check_scale.py                  # M = 100 and 1000
    .venv/bin/python bench/check_scale.py --m 1000 --repeat 5 --no-sslyze
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
import venv
from pathlib import Path

from certfleet.testing import TestCA, make_key

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support import mark_running  # noqa: E402
from support.servers import Nginx, Site, run_nginx  # noqa: E402 (the tests' own nginx launcher)

mark_running(peer=True)  # a benchmark starts real servers on purpose

SSLYZE_VENV = HERE / ".venv-sslyze"
# distinct certificates for every server, but a few keys shared between them: making a thousand
# RSA keys would take longer than the benchmark and says nothing about checking
KEYS_PER_TYPE = 8


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def make_sites(m: int) -> tuple[list[Site], bytes]:
    root = TestCA.root("certfleet Bench Root", key="rsa:2048")
    issuers = {
        "rsa:2048": root.intermediate("certfleet Bench RSA Intermediate", key="rsa:2048"),
        "ec:p256": root.intermediate("certfleet Bench ECDSA Intermediate", key="ec:p256"),
    }
    keys = {spec: [make_key(spec) for _ in range(KEYS_PER_TYPE)] for spec in issuers}
    sites = []
    for i in range(m):
        spec = "rsa:2048" if i % 2 == 0 else "ec:p256"
        key = keys[spec][(i // 2) % KEYS_PER_TYPE]
        leaf = issuers[spec].leaf(f"host{i:05d}.bench.test", private_key=key)
        sites.append(Site(f"host{i:05d}", leaf.fullchain_pem(), leaf.key_pem()))
    return sites, root.cert_pem()


def certfleet_command() -> list[str]:
    script = Path(sys.executable).with_name("certfleet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "certfleet"]


def sslyze_python() -> Path | None:
    """The sslyze virtualenv's python, made on first use; None (and why) when it cannot be."""
    python = SSLYZE_VENV / "bin" / "python"
    if python.exists():
        probe = subprocess.run([python, "-c", "import sslyze"], capture_output=True, check=False)
        if probe.returncode == 0:
            return python
    print(f"installing sslyze into {SSLYZE_VENV} ...", flush=True)
    venv.create(SSLYZE_VENV, with_pip=True, clear=True)
    proc = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "sslyze"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        print(f"sslyze could not be installed (pip exit {proc.returncode}):\n{proc.stderr.strip()[-2000:]}")
        return None
    return python


LAST_CPU: list[float] = [0.0]  # CPU seconds (user + system) of the last timed process


def timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, proc


def run_certfleet(folder: Path, m: int, concurrency: int) -> float:
    cmd = [
        *certfleet_command(),
        "check",
        "--file",
        "targets.txt",
        "--trust-only",
        "root.pem",
        "--concurrency",
        str(concurrency),
        "--json",
    ]
    elapsed, proc = timed(cmd, folder)
    try:
        results = json.loads(proc.stdout)
    except json.JSONDecodeError:
        results = []
    ok = sum(1 for r in results if r["ok"] and not r["problems"])
    if proc.returncode != 0 or ok != m:
        sys.exit(f"certfleet check: {ok} of {m} ok, exit {proc.returncode}: {proc.stderr.decode()[-1000:]}")
    return elapsed


def run_sslyze(python: Path, folder: Path, m: int) -> float:
    cmd = [
        str(python),
        "-m",
        "sslyze",
        "--certinfo",
        "--certinfo_ca_file",
        "root.pem",
        "--targets_in",
        "sslyze-targets.txt",
        "--json_out",
        "sslyze.json",
        "--quiet",
    ]
    elapsed, proc = timed(cmd, folder)
    ok = 0
    if (folder / "sslyze.json").exists():
        data = json.loads((folder / "sslyze.json").read_text())
        for server in data.get("server_scan_results", []):
            certinfo = ((server.get("scan_result") or {}).get("certificate_info") or {}).get("result") or {}
            deployments = certinfo.get("certificate_deployments") or []
            # sslyze 6 checks the name inside path validation; older versions reported it apart
            if deployments and all(
                any(v.get("was_validation_successful") for v in d.get("path_validation_results", []))
                and d.get("leaf_certificate_subject_matches_hostname", True)
                for d in deployments
            ):
                ok += 1
    if ok != m:
        sys.exit(f"sslyze: {ok} of {m} valid, exit {proc.returncode}: {proc.stderr.decode()[-1000:]}")
    return elapsed


def write_targets(folder: Path, server: Nginx, sites: list[Site]) -> None:
    lines = [f"{server.target(s.name)} {s.name}.bench.test" for s in sites]
    (folder / "targets.txt").write_text("\n".join(lines) + "\n")
    # sslyze: the name for SNI and the certificate, the address in braces
    ssl_lines = [f"{s.name}.bench.test:{server.ports[s.name]}{{{server.hosts[s.name]}}}" for s in sites]
    (folder / "sslyze-targets.txt").write_text("\n".join(ssl_lines) + "\n")


def bench(m: int, repeat: int, sslyze: Path | None, concurrency: int, workers: int) -> tuple[float, float | None]:
    folder = Path(tempfile.mkdtemp(prefix=f"certfleet-check-{m}-"))
    try:
        start = time.perf_counter()
        sites, root_pem = make_sites(m)
        (folder / "root.pem").write_bytes(root_pem)
        print(f"M = {m}: made {m} certificates in {time.perf_counter() - start:.1f} s", flush=True)
        with run_nginx(
            folder / "nginx", sites, workers=workers, rlimit=4 * m + 4096, connections=2 * m + 1024
        ) as server:
            write_targets(folder, server, sites)
            run_certfleet(folder, m, concurrency)  # warm the page cache and nginx's workers
            runs = [(run_certfleet(folder, m, concurrency), LAST_CPU[0]) for _ in range(repeat)]
            best = min(t for t, _ in runs)
            shown = ", ".join(f"{t:.2f} s ({cpu:.2f} s CPU)" for t, cpu in runs)
            print(f"  certfleet check: best {best:6.2f} s of {repeat}: {shown}", flush=True)
            other = None
            if sslyze is not None:
                other = run_sslyze(sslyze, folder, m)
                print(
                    f"  sslyze --certinfo: {other:6.2f} s ({LAST_CPU[0]:.2f} s CPU)   ratio: {other / best:.1f}x",
                    flush=True,
                )
        return best, other
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--m", type=int, action="append", help="endpoints (repeatable; default 100 and 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of certfleet per M; the best is kept")
    parser.add_argument("--concurrency", type=int, default=200, help="certfleet --concurrency (default 200)")
    parser.add_argument("--workers", type=int, default=1, help="nginx worker processes (default 1)")
    parser.add_argument("--no-sslyze", action="store_true", help="time certfleet only")
    args = parser.parse_args()
    sizes = args.m or [100, 1000]
    limit = raise_fd_limit()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpus} cores; open files: {limit}; python {sys.version.split()[0]}")
    sslyze = None if args.no_sslyze else sslyze_python()
    results = {m: bench(m, args.repeat, sslyze, args.concurrency, args.workers) for m in sizes}
    print("\n   M   certfleet   sslyze    ratio")
    for m, (ours, theirs) in results.items():
        other = f"{theirs:7.2f} s  {theirs / ours:5.1f}x" if theirs is not None else "      -       -"
        print(f"{m:5d}  {ours:7.2f} s  {other}")
    if len(results) > 1:
        (m1, (t1, _)), (m2, (t2, _)) = sorted(results.items())[0], sorted(results.items())[-1]
        print(f"scaling {m1} -> {m2}: {t2 / t1:.1f}x the time for {m2 / m1:.0f}x the endpoints")


if __name__ == "__main__":
    main()
