"""Benchmark and proof: two consoles and two workers on one PostgreSQL deploy a thousand nodes, and
one worker is killed half way.

In one run, all as real processes on loopback:

- a throw-away PostgreSQL cluster (the tests' launcher) holds the store: lineage ``web`` with N
  nodes (default 1,000), each a ``pem`` target folder of its own, all in zone ``dmz``, and a
  version signed by a test CA made at run time;
- two ``certfleet serve --no-autopilot`` (A and B), each with a home of its own, sharing the
  store and its sealing secret (``CERTFLEET_PASSPHRASE``), as two consoles behind one name would
  (their autopilot off: it would deploy the new version by itself before the administrator asks);
- two ``certfleet worker --zone dmz`` (``--lease``, ``--batch``), as two machines in the DMZ.

The administrator is made through B's one-time link and logs in on A; the session works on both.
The deploy is started on A (``POST /api/v1/lineages/web/deploy``) and followed on B
(``GET /api/v1/deploy/jobs/ID``, as its page does). When B shows a third of the nodes done, the
first worker is killed with SIGKILL; the second takes its jobs over when their leases end.

Checked at the end (the run fails otherwise): B says the deploy is done and every node ok;
the store has exactly one result per node and every job done; at least one job was taken over
(attempts 2); every node's ``live`` certificate is the version deployed. Printed: the wall time
from the deploy's start to B's "done", when the kill happened, the jobs each worker ended,
the takeovers, and the machine's load.

    .venv/bin/python bench/consoles_workers.py                   # 1,000 nodes, lease 5 s, batch 16
    .venv/bin/python bench/consoles_workers.py --nodes 200 --lease 3
    .venv/bin/python bench/consoles_workers.py --nodes 48 --batch 4 --lease 2 --reload "sleep 0.3"   # the test's run

The figures go in docs/benchmarks.md; ``tests/jobs/test_consoles_and_workers.py`` runs it small.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import httpx2  # noqa: E402
from deploy_scale import (  # noqa: E402  # noqa: E402
    URL_ENV,
    Cli,
    WorkerProc,
    check_deployment,
    check_live,
    fleet_file,
    load,
    make_version,
    start_postgres,
)

from support.console import PASSWORD, Served, csrf_of, serve  # noqa: E402

PASSPHRASE_ENV = "CERTFLEET_PASSPHRASE"  # noqa: S105 (the variable's name)


def browser(console: Served) -> httpx2.Client:
    """A client trusting the console's own bootstrap certificate."""
    tls = ssl.create_default_context(cadata=ssl.get_server_certificate(("127.0.0.1", console.port)))
    return httpx2.Client(base_url=console.url, verify=tls, follow_redirects=False, timeout=120)


def log_in(to_a: httpx2.Client, to_b: httpx2.Client, b: Served) -> str:
    """The administrator made through B's one-time link, logged in on A, the session sent to B too;
    the CSRF token."""
    link = b.setup_url()
    if link is None:
        raise SystemExit(f"console B printed no setup link:\n{b.out()}")
    page = to_b.get(link)
    form = {"csrf_token": csrf_of(page.text), "username": "admin", "password": PASSWORD, "password2": PASSWORD}
    if to_b.post(link, data=form).status_code != 303:
        raise SystemExit("the administrator could not be made")
    login = to_a.get("/login")
    made = to_a.post("/login", data={"csrf_token": csrf_of(login.text), "username": "admin", "password": PASSWORD})
    if made.status_code != 303:
        raise SystemExit(f"login on A failed: {made.status_code}")
    to_b.cookies = to_a.cookies
    return csrf_of(to_b.get("/tokens").text)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--lease", type=float, default=5.0, help="certfleet worker --lease")
    parser.add_argument("--batch", type=int, default=16, help="certfleet worker --batch")
    parser.add_argument("--kill-at", type=float, default=1 / 3, help="kill worker 1 when B shows this share done")
    parser.add_argument("--reload", default="true", help="each node's reload command (say `sleep 0.3`)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="certfleet-consoles-")))
        url = start_postgres(stack)
        env = {URL_ENV: url, PASSPHRASE_ENV: "one secret for every console and worker of this store"}
        cli = Cli(folder / "admin-home", folder)
        cli.env.update(env)
        cli.run("init")
        (folder / "nodes").mkdir()
        for i in range(args.nodes):
            (folder / "nodes" / f"n{i:05d}").mkdir()
        fleet = fleet_file(args.nodes, folder / "nodes", reload=args.reload, extra='zone = "dmz"')
        (folder / "fleet.toml").write_text(fleet)
        cli.run("apply", str(folder / "fleet.toml"))
        make_version(cli, folder)
        print(f"store ready: {args.nodes} nodes in zone dmz; load {load()}", flush=True)

        # the autopilot off: it would deploy the new version itself, before the administrator asks
        a = stack.enter_context(serve(folder / "home-a", "--no-autopilot", env=env))
        b = stack.enter_context(serve(folder / "home-b", "--no-autopilot", env=env))
        to_a, to_b = stack.enter_context(browser(a)), stack.enter_context(browser(b))
        csrf = log_in(to_a, to_b, b)
        worker_args = ("--zone", "dmz", "--lease", str(args.lease), "--batch", str(args.batch), "--poll", "0.2")
        workers = [WorkerProc(cli, *worker_args), WorkerProc(cli, *worker_args)]
        try:
            time.sleep(3)  # both started, imports done, polling
            start = time.perf_counter()
            started = to_a.post("/api/v1/lineages/web/deploy", json={}, headers={"x-csrf-token": csrf})
            if started.status_code != 202:
                raise SystemExit(f"the deploy was not started on A: {started.status_code} {started.text[:500]}")
            job_id = started.json()["id"]
            killed_at: float | None = None
            done_at_kill = 0
            while True:
                job: dict[str, Any] = to_b.get(f"/api/v1/deploy/jobs/{job_id}").json()
                done = sum(1 for n in job["nodes"] if n["outcome"] is not None)
                if killed_at is None and done >= args.nodes * args.kill_at:
                    workers[0].proc.send_signal(signal.SIGKILL)
                    killed_at, done_at_kill = time.perf_counter() - start, done
                    print(f"worker 1 killed with SIGKILL at {killed_at:.1f} s, {done} nodes done", flush=True)
                if job["state"] != "running":
                    break
                if time.perf_counter() - start > 3600:
                    raise SystemExit("the deploy did not finish within an hour")
                time.sleep(0.2)
            wall = time.perf_counter() - start
        finally:
            for w in workers:
                if w.proc.poll() is None:
                    w.stop()
                else:  # the one killed: reaped already
                    for r in w.readers:
                        r.join(10)
        outcomes: dict[str, int] = {}
        for n in job["nodes"]:
            key = (n["outcome"] or {}).get("outcome", "none")
            outcomes[key] = outcomes.get(key, 0) + 1
        if job["state"] != "done" or outcomes != {"ok": args.nodes}:
            raise SystemExit(f"B says {job['state']}: {outcomes}")
        counts = check_deployment(url, int(job["deployment"]), args.nodes)
        check_live(folder, args.nodes)
        if killed_at is None or counts["max attempts"] < 2:
            raise SystemExit(f"no job was taken over (killed at {killed_at}, {counts})")
        ended = [sum(w.ended.values()) for w in workers]
        print(
            json.dumps(
                {
                    "nodes": args.nodes,
                    "wall_s": round(wall, 1),
                    "killed_at_s": round(killed_at, 1),
                    "done_at_kill": done_at_kill,
                    "jobs_ended_by_worker": ended,
                    "max_attempts": counts["max attempts"],
                    "lease_s": args.lease,
                    "load": load(),
                }
            )
        )
        print(
            f"\n{args.nodes} nodes deployed through console A, followed on console B: done in {wall:.1f} s; "
            f"worker 1 killed at {killed_at:.1f} s ({done_at_kill} done), worker 2 took its jobs over after the "
            f"{args.lease:g} s lease; jobs ended: worker 1 {ended[0]}, worker 2 {ended[1]}; one result per node, "
            f"every job done, every node serves the version; load {load()}"
        )


if __name__ == "__main__":
    main()
