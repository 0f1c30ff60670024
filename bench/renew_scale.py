"""Benchmark: ``certfleet renew`` from due to proven on every node of a lineage of N local nodes.

Starts Pebble 2.4 on loopback issuing 6-day certificates (``certificateValidityPeriod``,
``PEBBLE_VA_NOSLEEP=1``) with ``pebble-challtestsrv`` as its DNS, and N nginx servers on loopback,
each serving its own node's ``live`` files on its own port: N nodes of one lineage (a web farm:
every node serves ``farm.bench.test``), each with its own target folder, its nginx's config test
and reload, and its own probe endpoint. (One nginx for all N would not do: a config test or a
reload for one node reads every node's files, and may read another node's certificate and key
from either side of its switch.) The name is proven by http-01
answered by certfleet itself (``http-01:standalone`` on Pebble's http-01 port).

A first pass issues version 1 and puts its files on every node (before nginx starts, so that
nginx has files to read); then each timed run is one whole ``certfleet renew --force`` process
(interpreter start, the plan, the preflight, the order, the import, the deploy to every node —
upload, switch, config test, reload, a probe until 3 handshakes in a row serve the new chain —,
every node probed again for the alerts, the report). ``--force`` makes the lineage due now: the
same work as a lineage whose time has come. Each run must end with every node serving the new
certificate (checked by a plain TLS client, not by certfleet), or the script stops.

    .venv/bin/python bench/renew_scale.py                     # N = 100, 3 runs, 8 nodes at once
    .venv/bin/python bench/renew_scale.py --n 100 --concurrency 32 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from acme_issue import ChallTestSrv, certfleet_command  # noqa: E402

import support  # noqa: E402 (the tests' own launchers)
from certfleet.acme import accounts  # noqa: E402
from certfleet.acme.lookup import DnsSettings  # noqa: E402
from certfleet.acme.model import SolverRule  # noqa: E402
from certfleet.autopilot.renew import RenewSettings, renew  # noqa: E402
from certfleet.certinfo import fingerprint  # noqa: E402
from certfleet.fleet.nodes import make_node  # noqa: E402
from certfleet.store import Store  # noqa: E402
from support.pebble import PebbleServer  # noqa: E402
from support.servers import NginxServer, served_chain  # noqa: E402

NAME = "farm.bench.test"
LIFETIME = dt.timedelta(days=6)


def servers(folder: Path, lives: list[Path], stack: ExitStack) -> list[NginxServer]:
    """One nginx per node (one worker each), serving that node's certfleet files."""
    out = []
    for i, live in enumerate(lives):
        server = NginxServer(folder / f"n{i:03d}", cert=live / "fullchain.pem", key=live / "privkey.pem", rlimit=256)
        out.append(stack.enter_context(server))
    return out


def setup(folder: Path, pebble: PebbleServer, n: int) -> list[Path]:
    """The store: Pebble trusted and registered, N nodes without commands yet, version 1 issued
    and its files put on every node."""
    from cryptography import x509

    targets = [folder / "nodes" / f"n{i:03d}" for i in range(n)]
    with Store.init() as store:
        store.add_trust_anchor(x509.load_pem_x509_certificate(pebble.root_pem()))
        accounts.add_acme_issuer(
            store, "pebble", pebble.directory, agree_tos=True, ca_bundle=pebble.ca_bundle.read_text()
        )
        for i, target in enumerate(targets):
            store.put_node(make_node(f"n{i:03d}", [NAME], [f"nginx:{target}"]))
        store.put_lineage("farm", nodes=[f"n{i:03d}" for i in range(n)])
        solver = SolverRule.parse(f"*=http-01:standalone:127.0.0.1:{pebble.http_port}")
        store.set_policy("farm", issuers=["pebble"], solvers=[solver])
        report = asyncio.run(renew(store, dns=DnsSettings.from_env(), settings=RenewSettings(probe=False)))
        (run,) = report.lineages
        if not run.ok or run.deployed is None:
            sys.exit(f"the first pass failed: {run.summary}")
    return [t / "live" for t in targets]


def with_commands(farm: list[NginxServer]) -> None:
    with Store.open() as store:
        for i, server in enumerate(farm):
            node = store.node(f"n{i:03d}")
            store.put_node(
                make_node(
                    node.name, node.names, list(node.targets), test_cmd=server.test_cmd,
                    reload_cmd=server.reload_cmd, probe=server.probe,
                )
            )  # fmt: skip


def config_test(server: NginxServer) -> float:
    """CPU seconds of one ``nginx -t`` of a node (each deploy runs one, and a reload)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(server.test_cmd, shell=True, check=True, capture_output=True)  # noqa: S602 (the node's own command)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def timed_renew(concurrency: int, env: dict[str, str]) -> tuple[float, float, dict[str, object]]:
    argv = [*certfleet_command(), "renew", "--force", "--json", "--concurrency", str(concurrency)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        said = f"{proc.stdout.decode()[-3000:]}\n{proc.stderr.decode()[-2000:]}"
        sys.exit(f"certfleet renew failed ({proc.returncode}):\n{said}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(proc.stdout)


def check_served(farm: list[NginxServer]) -> str:
    """Every node serves one and the same certificate, as a plain TLS client sees it; its fingerprint."""
    seen = {fingerprint(served_chain(server.port, NAME)[0]) for server in farm}
    if len(seen) != 1:
        sys.exit(f"the nodes serve {len(seen)} different certificates")
    return seen.pop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="nodes in the lineage (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--concurrency", type=int, default=8, help="nodes deployed at once (default 8)")
    args = parser.parse_args()
    support.mark_running(True)  # the launchers start real servers only when asked to, as here
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpus} cores; load {os.getloadavg()[0]:.2f}; python {sys.version.split()[0]}")
    print(f"N = {args.n} nodes, {args.concurrency} at once, a {LIFETIME.days}-day certificate from Pebble", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="certfleet-renew-bench-"))
    env = {**os.environ, "CERTFLEET_HOME": str(folder / "certfleet")}
    os.environ.update(CERTFLEET_HOME=env["CERTFLEET_HOME"])
    runs: list[tuple[float, float]] = []
    try:
        with ChallTestSrv(folder / "dns") as dns:
            env.update(CERTFLEET_DNS_RESOLVER=dns.probe)
            os.environ.update(CERTFLEET_DNS_RESOLVER=dns.probe)
            pebble = PebbleServer(folder / "pebble", dns=dns.probe, validity=int(LIFETIME.total_seconds()))
            with pebble:
                env.update(CERTFLEET_ACME_HTTP_PORT=str(pebble.http_port))
                os.environ.update(CERTFLEET_ACME_HTTP_PORT=str(pebble.http_port))
                lives = setup(folder, pebble, args.n)
                with ExitStack() as stack:
                    farm = servers(folder / "nginx", lives, stack)
                    print(f"{len(farm)} nginx servers up; one config test: {config_test(farm[0]):.3f} s CPU")
                    with_commands(farm)
                    before = check_served(farm)
                    for i in range(args.repeat):
                        wall, cpu, report = timed_renew(args.concurrency, env)
                        (run,) = report["lineages"]
                        nodes = run["deploy"]["nodes"]
                        ok = sum(1 for node in nodes if node["outcome"] == "ok")
                        if ok != args.n:
                            bad = [node["output"][-600:] for node in nodes if node["outcome"] != "ok"][:2]
                            sys.exit(f"run {i}: {ok} of {args.n} nodes deployed: {run['summary']}\n{bad}")
                        served = check_served(farm)
                        if served == before or served != run["deploy"]["fingerprint"]:
                            sys.exit(f"run {i}: the nodes do not serve the new certificate")
                        before = served
                        started = dt.datetime.fromisoformat(run["deploy"]["started_at"])
                        finished = dt.datetime.fromisoformat(run["deploy"]["finished_at"])
                        issue = run["issue"]["seconds"]
                        deploy = (finished - started).total_seconds()
                        print(
                            f"  run {i + 1}: {wall:6.2f} s wall, {cpu:5.2f} s CPU (certfleet and the commands it ran);"
                            f" issue {issue:.2f} s, deploy+prove {deploy:.2f} s, rest {wall - issue - deploy:.2f} s;"
                            f" load {os.getloadavg()[0]:.2f}",
                            flush=True,
                        )
                        runs.append((wall, cpu))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    walls, cpus_used = [w for w, _ in runs], [c for _, c in runs]
    best, median = min(walls), statistics.median(walls)
    print(f"\nfrom due to proven on {args.n} nodes: best {best:.2f} s, median {median:.2f} s wall;", end="")
    print(f" median {statistics.median(cpus_used):.2f} s CPU")


if __name__ == "__main__":
    main()
