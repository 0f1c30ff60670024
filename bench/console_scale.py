"""Benchmark: the console's dashboard, nodes page and ``/metrics`` with 1,000 nodes, after 0 and
250 deploys of every node.

Makes a store as ``bench/status_scale.py`` does (one lineage ``web`` with one issued version and N
nodes, no probe endpoint, so nothing is probed; the history filled by bulk inserts, the last
deploy through ``record_deployment``), opens the console over it in this process (the app
``certfleet serve`` runs, driven by Starlette's test client: no TLS, no socket), logs in as an
admin, and times each page, best of ``--repeat`` (wall time, and the CPU time of this process):

- ``/`` (the dashboard: the first page of nodes, the counts over all of them) and ``/?page=2``;
- ``/nodes`` (the node list, first page);
- ``/metrics`` (Prometheus text: every node's status, the deployments' counts).

    .venv/bin/python bench/console_scale.py                       # N = 1000, D = 0 and 250, SQLite
    .venv/bin/python bench/console_scale.py --deploys 250 --backend postgresql
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from status_scale import add_deploys, backend_env, environ, make_fleet  # noqa: E402

from support.console import account_token, bearer, logged_in, make_env  # noqa: E402

PAGES = ("/", "/?page=2", "/nodes", "/metrics")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--deploys", type=int, action="append", help="deploys of every node (repeatable; 0 and 250)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    deploys = sorted(args.deploys or [0, 250])
    rows = []
    with tempfile.TemporaryDirectory(prefix="certfleet-console-") as tmp:
        for name in args.backend or ["sqlite"]:
            with backend_env(name, Path(tmp)) as env, environ(env):
                console = make_env(Path(env["CERTFLEET_HOME"]))
                store = console.store
                number = make_fleet(store, args.nodes)
                names = [n.name for n in store.nodes("web")]
                logged_in(console)
                metrics = bearer(console, account_token(console, "prometheus", "viewer", token_role="metrics"))  # noqa: S106 (a role)
                for d in deploys:
                    start = time.perf_counter()
                    add_deploys(store, number, names, d)
                    print(f"{name}: history of {d} deploys of every node in {time.perf_counter() - start:.1f} s")
                    for page in PAGES:
                        client = metrics if page == "/metrics" else console.client
                        times, cpus, size = [], [], 0
                        for _ in range(args.repeat):
                            start, cpu = time.perf_counter(), time.process_time()
                            r = client.get(page)
                            times.append(time.perf_counter() - start)
                            cpus.append(time.process_time() - cpu)
                            assert r.status_code == 200, (page, r.status_code, r.text[:300])
                            size = len(r.content)
                        shown = ", ".join(f"{t:.2f}" for t in times)
                        print(
                            f"  {page}: best {min(times):.2f} s of [{shown}], CPU {min(cpus):.2f} s,"
                            f" {size / 1024:.0f} KiB;"
                            f" load {os.getloadavg()[0]:.1f}",
                            flush=True,
                        )
                        rows.append((name, d, page, min(times), min(cpus), size))
                store.close()
    print()
    print(f"| backend | deploys of every node | page ({args.nodes} nodes) | best time | CPU | size |")
    print("|---|---|---|---|---|---|")
    for name, d, page, best, cpu, size in rows:
        print(f"| {name} | {d} | `{page}` | {best:.2f} s | {cpu:.2f} s | {size / 1024:.0f} KiB |")


if __name__ == "__main__":
    main()
