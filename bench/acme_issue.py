"""Benchmark: ``certfleet issue`` against ``certbot certonly`` on the same Pebble, for N names.

Starts Pebble on loopback (``PEBBLE_VA_NOSLEEP=1``, no nonce rejected, no authorization reused)
asking ``pebble-challtestsrv`` for DNS (every name is 127.0.0.1), and proves every name by
http-01 answered by the tool itself on Pebble's http-01 port: certbot ``--standalone``, certfleet
``http-01:standalone``. Both tools have their account made beforehand and an RSA-2048 key per
certificate; each run is one whole process (interpreter start, imports, the order, every
authorization, finalize, download, and for certfleet its preflight and the import into the store).
Prints every run, each tool's best and median wall time and CPU, and the ratios of the medians
and of the best runs.

certbot lives in its own virtualenv (``bench/.venv-certbot``), made by this script on first use.
Both tools run from compiled bytecode, as installed packages do (pip compiles certbot's): the
script compiles certfleet's package first and lets the children write bytecode whatever
``PYTHONDONTWRITEBYTECODE`` says, so that no run pays for compiling the sources.

    .venv/bin/python bench/acme_issue.py                   # N = 1, 15 and 100, 3 runs of each tool
    .venv/bin/python bench/acme_issue.py --n 15 --repeat 5
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import support  # noqa: E402 (the tests' own launchers)
from support.pebble import PebbleServer  # noqa: E402
from support.servers import Server, free_port  # noqa: E402

CERTBOT_VENV = Path(os.environ.get("CERTBOT_VENV", HERE / ".venv-certbot"))
ZONE = "bench.test"


class ChallTestSrv(Server):
    """pebble-challtestsrv as a DNS server only: every A question is answered 127.0.0.1."""

    name = "pebble-challtestsrv"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.management = free_port()
        self.addresses = [(self.host, self.management)]

    def command(self) -> list[str]:
        return [
            "pebble-challtestsrv", "-dns01", f"{self.host}:{self.port}",
            "-management", f"{self.host}:{self.management}", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
            "-http01", "", "-https01", "", "-tlsalpn01", "",
        ]  # fmt: skip


def certbot_binary() -> Path:
    """certbot in its own virtualenv, made on first use."""
    binary = CERTBOT_VENV / "bin" / "certbot"
    if binary.exists():
        return binary
    print(f"installing certbot into {CERTBOT_VENV} ...", flush=True)
    venv.create(CERTBOT_VENV, with_pip=True, clear=True)
    subprocess.run([CERTBOT_VENV / "bin" / "pip", "install", "-q", "certbot"], check=True)
    return binary


def certfleet_command() -> list[str]:
    script = Path(sys.executable).with_name("certfleet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "certfleet"]


def compile_certfleet(env: dict[str, str]) -> None:
    """Bytecode for certfleet's own modules, where it runs from (a source checkout has none)."""
    probe = "import certfleet, pathlib; print(pathlib.Path(certfleet.__file__).parent)"
    found = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    compileall.compile_dir(found.stdout.strip(), quiet=1)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one whole process; stops the benchmark if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        said = f"{proc.stdout.decode()[-2000:]}\n{proc.stderr.decode()[-2000:]}"
        sys.exit(f"{argv[0]} failed ({proc.returncode}):\n{said}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def setup_certfleet(folder: Path, pebble: PebbleServer, dns: ChallTestSrv, env: dict[str, str]) -> None:
    cf = certfleet_command()
    root = folder / "pebble-root.pem"
    root.write_bytes(pebble.root_pem())
    for args in (
        ["init"],
        ["trust", "add", str(root)],
        ["issuer", "add", "pebble", "--acme", pebble.directory, "--ca-bundle", str(pebble.ca_bundle), "--agree-tos"],
    ):
        timed([*cf, *args], env)


def certfleet_run(n: int, run: int, folder: Path, port: int, env: dict[str, str]) -> tuple[float, float]:
    cf = certfleet_command()
    lineage = f"n{n}-{run}"
    names = [a for i in range(n) for a in ("--name", f"h{i}.{lineage}.{ZONE}")]
    timed([*cf, "node", "add", lineage, *names, "--target", f"nginx:{folder / lineage}", "--lineage", lineage], env)
    solver = f"*=http-01:standalone:127.0.0.1:{port}"
    timed([*cf, "lineage", "set", lineage, "--issuer", "pebble", "--solver", solver], env)
    return timed([*cf, "issue", lineage, "--json"], env)


def certbot_args(folder: Path) -> list[str]:
    return ["--config-dir", str(folder / "etc"), "--work-dir", str(folder / "work"), "--logs-dir", str(folder / "logs")]


def certbot_run(n: int, run: int, folder: Path, pebble: PebbleServer, env: dict[str, str]) -> tuple[float, float]:
    name = f"cb{n}-{run}"
    names = [a for i in range(n) for a in ("-d", f"h{i}.{name}.{ZONE}")]
    argv = [
        str(certbot_binary()), "certonly", "--standalone", "--non-interactive", "--server", pebble.directory,
        "--http-01-address", "127.0.0.1", "--http-01-port", str(pebble.http_port), "--cert-name", name,
        "--key-type", "rsa", "--rsa-key-size", "2048", *certbot_args(folder), *names,
    ]  # fmt: skip
    return timed(argv, env)


def summary(tool: str, runs: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Median wall, median CPU and best wall of a tool's runs, printed with every run."""
    walls = [w for w, _ in runs]
    cpus = [c for _, c in runs]
    shown = ", ".join(f"{w:.2f} s ({c:.2f} s CPU)" for w, c in runs)
    print(f"    {tool:<10} best {min(walls):6.2f} s  median {statistics.median(walls):6.2f} s   {shown}", flush=True)
    return statistics.median(walls), statistics.median(cpus), min(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="names per certificate (repeatable; default 1, 15, 100)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool per N (default 3)")
    parser.add_argument("--no-certbot", action="store_true", help="time certfleet only")
    args = parser.parse_args()
    sizes = args.n or [1, 15, 100]
    support.mark_running(True)  # the launchers start real servers only when asked to, as here
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpus} cores; load {os.getloadavg()[0]:.2f}; python {sys.version.split()[0]}")
    certbot = None if args.no_certbot else certbot_binary()
    folder = Path(tempfile.mkdtemp(prefix="certfleet-acme-bench-"))
    results: dict[int, tuple[tuple[float, float, float], tuple[float, float, float] | None]] = {}
    try:
        with ChallTestSrv(folder / "dns") as dns, PebbleServer(folder / "pebble", dns=dns.probe) as pebble:
            env = {
                **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                "CERTFLEET_HOME": str(folder / "certfleet"),
                "CERTFLEET_DNS_RESOLVER": dns.probe,
                "CERTFLEET_ACME_HTTP_PORT": str(pebble.http_port),
                "REQUESTS_CA_BUNDLE": str(pebble.ca_bundle),  # certbot's way to trust Pebble's HTTPS
            }
            compile_certfleet(env)
            setup_certfleet(folder, pebble, dns, env)
            if certbot is not None:
                register = ["register", "--non-interactive", "--agree-tos", "--register-unsafely-without-email"]
                timed([str(certbot), *register, "--server", pebble.directory, *certbot_args(folder)], env)
            for n in sizes:
                print(f"  N = {n} (load {os.getloadavg()[0]:.2f})", flush=True)
                ours, theirs = [], []
                for run in range(args.repeat):  # in turn, so that other work weighs on both alike
                    ours.append(certfleet_run(n, run, folder, pebble.http_port, env))
                    if certbot is not None:
                        theirs.append(certbot_run(n, run, folder, pebble, env))
                mine = summary("certfleet", ours)
                other = summary("certbot", theirs) if theirs else None
                results[n] = (mine, other)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("\n    N   certfleet, median (CPU)   certbot, median (CPU)   certbot / certfleet: median  best wall")
    for n, ((w, c, b), other) in results.items():
        theirs_text = "-"
        if other:
            theirs_text = f"{other[0]:6.2f} s ({other[1]:5.2f} s)       {other[0] / w:5.2f}x     {other[2] / b:5.2f}x"
        print(f"{n:5d}   {w:6.2f} s ({c:5.2f} s)         {theirs_text}")


if __name__ == "__main__":
    main()
