"""Benchmark: ``certfleet deploy`` to 100 nodes over SSH against an equivalent Ansible playbook.

One OpenSSH sshd on loopback (the tests' launcher: generated host and user keys, key
authentication only) stands for 100 servers: each node is a target folder of its own on it,
reached over SSH as if it were a host of its own. In the same run:

- certfleet: a store with lineage ``web`` and 100 SSH nodes (``ssh://USER@127.0.0.1:PORT``, the
  generated key as ``identity``, its host key in ``known_hosts``), each with a ``pem`` target and
  the reload command ``true``; a test CA's certificate imported; then ``certfleet deploy web``
  (upload into a version folder, switch ``live``, reload; every node) as a whole process;
- Ansible (``ansible-core`` from PyPI in a venv of its own, made on first use): an inventory of
  100 hosts, all 127.0.0.1 on the sshd's port, each with its folder, and a playbook that does
  the same: a version folder, ``copy`` of the key and the full chain into it, ``file
  state=link`` switch of ``live``, ``command`` reload (``true``). ``forks`` is certfleet's
  ``--concurrency``; pipelining and SSH connection sharing (ControlPersist, Ansible's default)
  are on, fact gathering off: Ansible at its fastest usual setting.

Both tools run in turn, ``--repeat`` times, each time to fresh folders and a fresh version, and
every run is checked: each node's ``live`` must hold the deployed certificate. It prints each
run's wall time, CPU time and peak memory (of the tool and its children, GNU time), the best of
each, and the ratio of the best wall times.

    .venv/bin/python bench/ssh_ansible.py                        # 100 nodes, concurrency/forks 8
    .venv/bin/python bench/ssh_ansible.py --nodes 20 --repeat 1
    .venv/bin/python bench/ssh_ansible.py --ansible-venv /tmp/ansible-venv
    .venv/bin/python bench/ssh_ansible.py --skip-ansible --repeat 1 --workers 2

``--skip-ansible`` runs certfleet only. ``--workers N`` (N >= 1) puts each run's store on a
throw-away PostgreSQL cluster and runs certfleet's deploy as jobs, ``certfleet deploy web
--queue`` with N ``certfleet worker --batch B`` processes, measured as ``deploy_scale.py`` measures
it (:func:`deploy_scale.run_queued`: wall to the last node's result, CPU and peak memory summed
over the processes) and checked the same way (one result per node, every job done).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.testing import TestCA

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from deploy_scale import TIME, URL_ENV, Cli, check_deployment, make_version, run_queued, start_postgres  # noqa: E402

import support  # noqa: E402 (the tests' own launchers)
from support.servers import SshServer  # noqa: E402

# the node's Python for Ansible's modules: the system's own, never a shim that starts slowly (pyenv)
PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if Path(p).exists()), "python3")

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: version folder
      ansible.builtin.file:
        path: "{{ root }}/versions/{{ version }}"
        state: directory
        mode: "0755"
    - name: key
      ansible.builtin.copy:
        src: "{{ files }}/privkey.pem"
        dest: "{{ root }}/versions/{{ version }}/privkey.pem"
        mode: "0600"
    - name: full chain
      ansible.builtin.copy:
        src: "{{ files }}/fullchain.pem"
        dest: "{{ root }}/versions/{{ version }}/fullchain.pem"
        mode: "0644"
    - name: switch live
      ansible.builtin.file:
        src: "versions/{{ version }}"
        dest: "{{ root }}/live"
        state: link
        force: true
    - name: reload
      ansible.builtin.command: "true"
      changed_when: true
"""


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def ansible_venv(path: Path) -> Path:
    """ansible-playbook of a venv at ``path``, made and filled from PyPI on first use."""
    playbook = path / "bin" / "ansible-playbook"
    if not playbook.exists():
        print(f"installing ansible-core into {path} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(path / "bin" / "pip"), "install", "-q", "ansible-core"], check=True)
    return playbook


def fleet_file(nodes: int, root: Path, sshd: SshServer) -> str:
    members = ", ".join(f'"n{i:03d}"' for i in range(nodes))
    options = f'{{ known_hosts = "{sshd.known_hosts}", identity = "{sshd.user_key}" }}'
    lines = ["version = 1", "", "[lineages.web]", f"nodes = [{members}]", ""]
    for i in range(nodes):
        lines += [
            f"[nodes.n{i:03d}]",
            'names = ["www.bench.test"]',
            'reload = "true"',
            f'transport = "{sshd.url}"',
            f"options = {options}",
            f'targets = [{{ kind = "pem", path = "{root / f"n{i:03d}"}" }}]',
            "",
        ]
    return "\n".join(lines)


def timed(
    argv: list[str], env: dict[str, str], folder: Path, cwd: Path | None = None
) -> tuple[float, float, float, str]:
    """Wall s, CPU s (children included), peak RSS MiB (the largest process), stdout."""
    out, usage = folder / "out.txt", folder / "usage.txt"
    start = time.perf_counter()
    with out.open("w") as fh:
        done = subprocess.run(
            [TIME, "-f", "%M %U %S", "-o", str(usage), *argv],
            stdout=fh,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            text=True,
            check=False,
        )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}):\n{out.read_text()[-3000:]}\n{done.stderr[-3000:]}")
    rss_kib, user, system = usage.read_text().split()[-3:]
    return wall, float(user) + float(system), int(rss_kib) / 1024, out.read_text()


def live_leaf(folder: Path, name: str) -> bytes:
    return (folder / "live" / name).read_bytes()


def run_certfleet(
    cli: Cli, work: Path, sshd: SshServer, nodes: int, concurrency: int, *, workers: int = 0, batch: int = 16
) -> tuple[float, float, float]:
    """``certfleet deploy web`` as one process or, with ``workers``, queued (``--queue``) and run
    by that many ``certfleet worker`` processes (``deploy_scale.run_queued``: wall from the deploy's
    start to the last node's result, CPU and peak memory summed over the processes)."""
    root = work / "certfleet-nodes"
    root.mkdir()
    for i in range(nodes):
        (root / f"n{i:03d}").mkdir()
    cli.run("init")
    (work / "fleet.toml").write_text(fleet_file(nodes, root, sshd))
    cli.run("apply", str(work / "fleet.toml"))
    make_version(cli, work)
    if workers:
        m = run_queued(cli, workers, ("--batch", str(batch), "--poll", "0.2"), nodes)
        counts = check_deployment(cli.env[URL_ENV], m.deployment, nodes)
        if counts.get("ok", 0) != nodes:
            raise SystemExit(f"certfleet: not every node deployed: {counts}")
        wall, cpu, rss = m.wall, m.cpu, m.rss
    else:
        wall, cpu, rss, out = cli.timed("deploy", "web", "--json", "--concurrency", str(concurrency))
        report = json.loads(out)
        bad = [n for n in report["nodes"] if n["outcome"] != "ok"]
        if bad:
            raise SystemExit(f"certfleet: {len(bad)} node(s) not deployed: {bad[0]}")
    leaf = (work / "leaf.pem").read_bytes()
    for i in range(nodes):
        assert live_leaf(root / f"n{i:03d}", "cert.pem") == leaf, f"certfleet: n{i:03d} has no new live files"
    return wall, cpu, rss


def run_ansible(playbook_bin: Path, work: Path, sshd: SshServer, nodes: int, forks: int) -> tuple[float, float, float]:
    root = work / "ansible-nodes"
    root.mkdir()
    files = work / "ansible-files"
    files.mkdir()
    leaf = TestCA.root("ansible root").intermediate("ansible intermediate").leaf("www.bench.test")
    (files / "privkey.pem").write_bytes(leaf.key_pem())
    (files / "fullchain.pem").write_bytes(leaf.chain_pem())
    version = os.urandom(8).hex()  # a fresh version folder name, as certfleet's is the leaf's
    inventory = ["[all]"]
    for i in range(nodes):
        inventory.append(f"n{i:03d} ansible_host=127.0.0.1 ansible_port={sshd.port} root={root / f'n{i:03d}'}")
    inventory += [
        "",
        "[all:vars]",
        f"ansible_user={sshd.user}",
        f"ansible_ssh_private_key_file={sshd.user_key}",
        f"ansible_ssh_common_args='-o UserKnownHostsFile={sshd.known_hosts} -o StrictHostKeyChecking=yes'",
        f"ansible_python_interpreter={PYTHON}",
        f"files={files}",
        f"version={version}",
    ]
    (work / "inventory.ini").write_text("\n".join(inventory) + "\n")
    (work / "playbook.yml").write_text(PLAYBOOK)
    (work / "ansible.cfg").write_text(
        f"[defaults]\nforks = {forks}\nhost_key_checking = True\nstdout_callback = default\n"
        f"local_tmp = {work / 'ansible-tmp'}\n\n[ssh_connection]\npipelining = True\n"
        f"control_path_dir = {work / 'cp'}\n"
    )
    env = {**os.environ, "ANSIBLE_CONFIG": str(work / "ansible.cfg"), "HOME": str(work)}
    env.pop("SSH_AUTH_SOCK", None)
    argv = [str(playbook_bin), "-i", str(work / "inventory.ini"), str(work / "playbook.yml")]
    try:
        wall, cpu, rss, _ = timed(argv, env, work, cwd=work)
    finally:
        for sock in (work / "cp").glob("*"):  # the connection masters ControlPersist keeps open
            subprocess.run(["ssh", "-S", str(sock), "-O", "exit", "bench"], capture_output=True, check=False)
    chain = (files / "fullchain.pem").read_bytes()
    for i in range(nodes):
        assert live_leaf(root / f"n{i:03d}", "fullchain.pem") == chain, f"ansible: n{i:03d} has no new live files"
    return wall, cpu, rss


def fresh_database(url: str, run: int) -> str:
    """A new database ``bench_run<run>`` beside the one ``url`` names: its URL."""
    import psycopg

    base, _ = url.rsplit("/", 1)
    name = f"bench_run{run}"
    host, port = url.split("@", 1)[1].split("/", 1)[0].split(":")
    with psycopg.connect(host=host, port=int(port), user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    return f"{base}/{name}"


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the with blocks stop sshd
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8, help="certfleet --concurrency and Ansible forks")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["certfleet", "ansible"], help="run one tool only")
    parser.add_argument("--skip-ansible", action="store_true", help="certfleet only (same as --only certfleet)")
    parser.add_argument("--workers", type=int, default=0, help="N >= 1: certfleet's deploy queued, run by N workers")
    parser.add_argument("--batch", type=int, default=16, help="certfleet worker --batch")
    parser.add_argument("--ansible-venv", type=Path, default=Path(tempfile.gettempdir()) / "certfleet-bench-ansible")
    args = parser.parse_args()
    if args.skip_ansible:
        args.only = "certfleet"
    if args.workers < 0:
        parser.error("--workers N needs N >= 1")
    playbook_bin = Path("ansible-playbook")
    if args.only != "certfleet":
        playbook_bin = ansible_venv(args.ansible_venv)
        version = subprocess.run([str(playbook_bin), "--version"], capture_output=True, text=True, check=True)
        print(version.stdout.splitlines()[0], flush=True)
    support.mark_running(True)
    runs: dict[str, list[tuple[float, float, float]]] = {"certfleet": [], "ansible": []}
    with tempfile.TemporaryDirectory(prefix="certfleet-ssh-") as tmp, contextlib.ExitStack() as stack:
        pg_cluster_url = start_postgres(stack) if args.workers else ""
        sshd_dir = Path(tmp) / "sshd"
        server = SshServer(sshd_dir)
        # 100 nodes on one server: room for every connection and session both tools open at once
        with server.conf.open("a") as conf:
            conf.write("MaxStartups 200\nMaxSessions 200\n")
        with server:  # started here, always stopped
            print(f"sshd on 127.0.0.1:{server.port} as {getpass.getuser()}; {args.nodes} nodes", flush=True)
            for r in range(args.repeat):
                work = Path(tmp) / f"run{r}"
                (work / "cf").mkdir(parents=True)
                cli = Cli(work / "cf" / "home", work / "cf")
                cli.env["HOME"] = str(work)  # no ~/.ssh: only the node's own options can work
                cli.env.pop("SSH_AUTH_SOCK", None)
                if args.workers:  # a fresh database of the cluster for each run's store
                    cli.env[URL_ENV] = fresh_database(pg_cluster_url, r)
                cf = an = (0.0, 0.0, 0.0)
                if args.only != "ansible":
                    cf = run_certfleet(
                        cli, work / "cf", server, args.nodes, args.concurrency, workers=args.workers, batch=args.batch
                    )
                    runs["certfleet"].append(cf)
                if args.only != "certfleet":
                    (work / "an").mkdir()
                    an = run_ansible(playbook_bin, work / "an", server, args.nodes, args.concurrency)
                    runs["ansible"].append(an)
                each = [
                    f"{t} {w:.2f} s (cpu {c:.2f} s, {m:.0f} MiB)"
                    for t, (w, c, m) in (("certfleet", cf), ("ansible", an))
                    if w
                ]
                print(
                    f"run {r + 1}: {'; '.join(each)}; load {'/'.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True
                )
    best = {tool: min(r) for tool, r in runs.items() if r}
    print()
    how = f"{args.workers} worker(s), batch {args.batch}" if args.workers else f"concurrency {args.concurrency}"
    print(f"| tool, {args.nodes} SSH nodes, {how} | best wall | CPU | peak memory | runs |")
    print("|---|---|---|---|---|")
    for tool, (wall, cpu, rss) in best.items():
        shown = ", ".join(f"{w:.2f}" for w, _, _ in runs[tool])
        print(f"| {tool} | {wall:.2f} s | {cpu:.2f} s | {rss:.0f} MiB | {shown} |")
    if len(best) == 2:
        print(f"\ncertfleet is {best['ansible'][0] / best['certfleet'][0]:.1f}x faster (best wall times)")


if __name__ == "__main__":
    main()
