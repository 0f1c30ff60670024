"""Faults during a deploy: each failing node is switched back and still serves its old pair, the
others succeed; a deploying process killed at any moment leaves old or new pairs, never a mix."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.certinfo import fingerprint
from certfleet.fleet.deploy import DeployOptions, Outcome, Step, deploy
from certfleet.fleet.model import Material, NodeSpec, TargetSpec
from support.deploy import NAMES, folder_of, live_pair, old_new, served, site, stack
from support.servers import SshServer, free_port, sshd

pytestmark = pytest.mark.peer  # every test here starts a real server

__all__ = ["old_new", "sshd", "stack"]


async def test_each_fault_rolls_its_node_back_and_spares_the_others(
    tmp_path: Path, stack: ExitStack, sshd: SshServer, old_new: tuple[Material, Material]
) -> None:
    old, new = old_new
    healthy = await site(stack, tmp_path, "nginx", old, "healthy")
    # nginx's own test, against a configuration someone broke after the server started
    broken = await site(stack, tmp_path, "nginx", old, "broken-config")
    conf = tmp_path / "broken-config" / "server" / "nginx.conf"
    conf.write_text(conf.read_text() + "\nthis is not a directive;\n")
    # a reload that fails: httpd is pointed at a configuration file that is not there
    no_reload = await site(stack, tmp_path, "apache", old, "reload-fails")
    no_reload = NodeSpec(
        no_reload.name,
        NAMES,
        no_reload.targets,
        test_cmd=no_reload.test_cmd,
        reload_cmd=f"apache2 -f {tmp_path}/nonexistent.conf -k graceful",
        probe=no_reload.probe,
    )
    # a reload command that does nothing: the probe keeps seeing the old certificate
    stale = await site(stack, tmp_path, "nginx", old, "stale", reload_cmd="true")
    # the node's SSH port is closed
    unreachable = await site(
        stack, tmp_path, "nginx", old, "unreachable", transport=f"ssh://root@127.0.0.1:{free_port()}"
    )
    nodes = [healthy, broken, no_reload, stale, unreachable]

    report = await deploy(new, nodes, options=DeployOptions(probe_wait=3.0))
    outcome = {n.node: n for n in report.nodes}

    assert outcome["healthy"].outcome is Outcome.OK
    assert served(healthy) == [new.leaf, *new.chain]
    expected = {
        "broken-config": (Outcome.ROLLED_BACK, Step.TEST, "unknown directive"),
        "reload-fails": (Outcome.ROLLED_BACK, Step.RELOAD, "nonexistent.conf"),
        "stale": (Outcome.ROLLED_BACK, Step.PROBE, "still serves another certificate"),
        "unreachable": (Outcome.FAILED, Step.CONNECT, "cannot connect"),
    }
    for node in nodes[1:]:
        result = outcome[node.name]
        want_outcome, want_step, said = expected[node.name]
        assert (result.outcome, result.step) == (want_outcome, want_step), result
        assert said in result.output + result.message, result
        assert served(node) == [old.leaf, *old.chain], node.name
        leaf, certs = live_pair(folder_of(node))
        assert leaf == old.leaf
        assert set(certs) == {old.leaf, *old.chain}
    assert not report.ok
    assert outcome["stale"].served == fingerprint(old.leaf)


async def test_a_failed_first_deploy_leaves_no_live_folder(tmp_path: Path, old_new: tuple[Material, Material]) -> None:
    _, new = old_new
    folder = tmp_path / "fresh"
    node = NodeSpec("fresh", NAMES, (TargetSpec("nginx", str(folder)),), test_cmd="echo refused >&2; exit 1")
    (result,) = (await deploy(new, [node])).nodes
    assert result.outcome is Outcome.ROLLED_BACK
    assert result.step is Step.TEST
    assert "refused" in result.output
    assert not (folder / "live").is_symlink()


DRIVER = """
import asyncio, json, sys
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from certfleet.fleet.deploy import deploy
from certfleet.fleet.model import Material, NodeSpec, TargetSpec

plan = json.load(open(sys.argv[1]))
certs = x509.load_pem_x509_certificates(open(plan["certs"], "rb").read())
key = serialization.load_pem_private_key(open(plan["key"], "rb").read(), password=None)
material = Material(key, certs[0], tuple(certs[1:]), plan["version_id"])
nodes = [
    NodeSpec(n["name"], tuple(n["names"]), tuple(TargetSpec(**t) for t in n["targets"]), n["transport"],
             n["test"], n["reload"], n["probe"], n["options"])
    for n in plan["nodes"]
]

def progress(event):
    print(json.dumps({"node": event.node, "step": event.step}), flush=True)

report = asyncio.run(deploy(material, nodes, progress=progress))
print(json.dumps({"report": report.to_dict()}), flush=True)
"""


def write_plan(folder: Path, name: str, m: Material, nodes: list[NodeSpec]) -> Path:
    key = folder / f"{name}.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    clear = serialization.NoEncryption()
    with os.fdopen(fd, "wb") as fh:
        fh.write(m.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, clear))
    certs = folder / f"{name}.pem"
    certs.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (m.leaf, *m.chain)))
    plan = folder / f"{name}.json"
    nodes_out = [n.to_dict() for n in nodes]
    plan.write_text(json.dumps({"key": str(key), "certs": str(certs), "version_id": m.version_id, "nodes": nodes_out}))
    return plan


def run_driver(
    driver: Path, plan: Path, *, kill_after: int | None = None, jitter: float = 0.0
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Run a deploy in its own process and return its report and progress events; with
    ``kill_after``, SIGKILL it after that many events (plus ``jitter`` seconds): no report."""
    proc = subprocess.Popen(
        [sys.executable, str(driver), str(plan)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    events: list[dict[str, Any]] = []
    try:
        for line in proc.stdout:
            if line.startswith('{"report"'):
                proc.wait(timeout=60)
                return dict(json.loads(line)["report"]), events
            events.append(json.loads(line))
            if kill_after is not None and len(events) >= kill_after:
                time.sleep(jitter)
                proc.kill()
                proc.wait(timeout=30)
                return None, events
        proc.wait(timeout=60)
        raise AssertionError(f"the deploy process ended without a report: {proc.stderr.read() if proc.stderr else ''}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def assert_old_or_new(node: NodeSpec, old: Material, new: Material) -> None:
    """The node serves one whole pair, and its live folder holds one whole pair."""
    chain = served(node)
    assert chain in ([old.leaf, *old.chain], [new.leaf, *new.chain]), f"{node.name} serves a mix"
    leaf, certs = live_pair(folder_of(node))
    whole = {old.leaf: {old.leaf, *old.chain}, new.leaf: {new.leaf, *new.chain}}
    assert leaf in whole, f"{node.name}: live holds an unknown leaf"
    assert set(certs) == whole[leaf], f"{node.name}: live holds a mix"


@pytest.mark.parametrize("seed", [11, 23, 37, 41, 59, 73])
async def test_a_deploy_killed_at_any_moment_leaves_whole_pairs_and_the_next_one_finishes(
    seed: int, tmp_path: Path, stack: ExitStack, sshd: SshServer, old_new: tuple[Material, Material]
) -> None:
    old, new = old_new
    rng = random.Random(seed)
    nodes = [
        await site(stack, tmp_path, "nginx", old, "web"),
        await site(stack, tmp_path, "apache", old, "app"),
        await site(stack, tmp_path, "haproxy", old, "lb"),
        await site(stack, tmp_path, "nginx", old, "gateway", transport=sshd.url, options=sshd.options),
    ]
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    new_plan = write_plan(tmp_path, "new", new, nodes)
    # about 8 progress events per node; kill anywhere from the first to the last of them
    kill_after = rng.randint(1, 8 * len(nodes))
    killed, _ = run_driver(driver, new_plan, kill_after=kill_after, jitter=rng.uniform(0, 0.15))
    assert killed is None
    for node in nodes:
        assert_old_or_new(node, old, new)

    report, _ = run_driver(driver, new_plan)
    assert report is not None
    assert report["ok"], report
    for node in nodes:
        assert served(node) == [new.leaf, *new.chain]
        assert live_pair(folder_of(node))[0] == new.leaf
        versions = folder_of(node) / "versions"
        assert not [p for p in versions.iterdir() if p.name.startswith(".tmp-")]  # no half-written folder left


def scripted_prober(old: Material, new: Material, script: str) -> Any:
    """A prober that answers with the chains of ``script`` ('o' old, 'n' new), then the last one
    forever: a server in the middle of a reload, seen through the engine's prober seam."""
    from certfleet.probe import ProbeResult

    def der(m: Material) -> tuple[bytes, ...]:
        return tuple(c.public_bytes(serialization.Encoding.DER) for c in (m.leaf, *m.chain))

    answers = [der(new) if c == "n" else der(old) for c in script]
    seen: list[int] = []

    async def prober(host: str, port: int, *, server_name: str | None, timeout: float) -> ProbeResult:
        ders = answers[min(len(seen), len(answers) - 1)]
        seen.append(1)
        chain = tuple(x509.load_der_x509_certificate(d) for d in ders)
        return ProbeResult(f"{host}:{port}", host, port, server_name, True, chain, chain_der=ders)

    prober.seen = seen  # type: ignore[attr-defined]
    return prober


@pytest.mark.parametrize(
    ("script", "outcome", "probes"),
    [
        ("nnn", Outcome.OK, 3),  # settled at once
        ("onnonnn", Outcome.OK, 7),  # the old chain came back once during the reload
        ("nnonnonnonnonnonnonnonnonnonnonnonnonnonnonnonnonnonnonnonnonnonnonnon", Outcome.ROLLED_BACK, None),
    ],
)
async def test_a_node_is_served_only_after_a_streak_of_matching_handshakes(
    tmp_path: Path, old_new: tuple[Material, Material], script: str, outcome: Outcome, probes: int | None
) -> None:
    old, new = old_new
    target = TargetSpec("nginx", str(tmp_path / "web"))
    assert (await deploy(old, [NodeSpec("web", NAMES, (target,))])).ok
    node = NodeSpec("web", NAMES, (target,), reload_cmd="true", probe="127.0.0.1:9")
    prober = scripted_prober(old, new, script)
    options = DeployOptions(probe_wait=2.0, probe_confirm=3)
    (result,) = (await deploy(new, [node], options=options, prober=prober)).nodes
    assert result.outcome is outcome, result
    if probes is not None:
        assert len(prober.seen) == probes
    else:
        assert result.step is Step.PROBE
        assert "in a row" in result.message or "another certificate" in result.message
