"""Deploy to real nginx, Apache httpd and HAProxy, locally and through sshd, and prove what they serve."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from certfleet.certinfo import fingerprint
from certfleet.fleet.deploy import DeployOptions, Outcome, ProgressEvent, Step, deploy
from certfleet.fleet.model import Material, NodeSpec
from conftest import PKI
from support.deploy import NAMES, folder_of, live_pair, material, old_new, served, site, stack
from support.servers import SshServer, sshd

pytestmark = pytest.mark.peer  # every test here starts a real server

__all__ = ["old_new", "sshd", "stack"]

KINDS = ("nginx", "apache", "haproxy")


def assert_serves(node: NodeSpec, m: Material) -> None:
    assert served(node) == [m.leaf, *m.chain]


def assert_live(folder: Path, m: Material) -> None:
    leaf, certs = live_pair(folder)
    assert leaf == m.leaf
    assert set(certs) == {m.leaf, *m.chain}


@pytest.mark.parametrize("kind", KINDS)
async def test_a_server_serves_what_was_deployed(
    kind: str, tmp_path: Path, stack: ExitStack, old_new: tuple[Material, Material]
) -> None:
    old, new = old_new
    node = await site(stack, tmp_path, kind, old, kind)
    folder = folder_of(node)
    assert_serves(node, old)

    report = await deploy(new, [node])
    (result,) = report.nodes
    assert result.outcome is Outcome.OK, result
    assert result.served == fingerprint(new.leaf)
    assert_serves(node, new)
    assert_live(folder, new)

    again = await deploy(new, [node])
    assert again.nodes[0].outcome is Outcome.UNCHANGED
    assert again.nodes[0].served == fingerprint(new.leaf)

    back = await deploy(old, [node])  # rollback: the old folder is still there and is reused
    assert back.nodes[0].outcome is Outcome.OK, back.nodes[0]
    assert_serves(node, old)
    assert_live(folder, old)
    assert len([p for p in (folder / "versions").iterdir() if p.is_dir()]) == 2


async def test_a_node_over_ssh(
    tmp_path: Path, stack: ExitStack, sshd: SshServer, old_new: tuple[Material, Material]
) -> None:
    old, new = old_new
    node = await site(stack, tmp_path, "nginx", old, "gateway", transport=sshd.url, options=sshd.options)
    folder = folder_of(node)
    report = await deploy(new, [node])
    assert report.nodes[0].outcome is Outcome.OK, report.nodes[0]
    assert_serves(node, new)
    assert_live(folder, new)
    assert (folder / "live").readlink().parts[0] == "versions"


async def test_an_unknown_host_key_is_refused_and_the_node_left_alone(
    tmp_path: Path, stack: ExitStack, sshd: SshServer, old_new: tuple[Material, Material]
) -> None:
    old, new = old_new
    options = {**sshd.options, "known_hosts": str(sshd.unknown_hosts)}
    node = await site(stack, tmp_path, "nginx", old, "gateway", transport=sshd.url, options=options)
    folder = folder_of(node)
    (result,) = (await deploy(new, [node])).nodes
    assert result.outcome is Outcome.FAILED
    assert result.step is Step.CONNECT
    assert "host key" in result.message
    assert_serves(node, old)
    assert_live(folder, old)


async def test_every_kind_in_parallel_with_progress(
    tmp_path: Path, stack: ExitStack, sshd: SshServer, old_new: tuple[Material, Material]
) -> None:
    old, new = old_new
    nodes = [await site(stack, tmp_path, kind, old, kind) for kind in KINDS]
    nodes.append(await site(stack, tmp_path, "nginx", old, "ssh", transport=sshd.url, options=sshd.options))
    events: list[ProgressEvent] = []
    report = await deploy(new, nodes, progress=events.append)
    assert report.ok, report.to_dict()
    assert [n.node for n in report.nodes] == [n.name for n in nodes]
    expected = [Step.RENDER, Step.CONNECT, Step.UPLOAD, Step.SWITCH, Step.TEST, Step.RELOAD, Step.PROBE, None]
    for node in nodes:
        assert [e.step for e in events if e.node == node.name] == expected
        assert_serves(node, new)
    done = [e.outcome for e in events if e.step is None]
    assert all(o is not None and o.outcome is Outcome.OK for o in done)
    as_dict = report.to_dict()
    assert as_dict["ok"] is True
    assert {n["outcome"] for n in as_dict["nodes"]} == {"ok"}


async def test_a_dry_run_changes_nothing(tmp_path: Path, stack: ExitStack, old_new: tuple[Material, Material]) -> None:
    old, new = old_new
    node = await site(stack, tmp_path, "nginx", old, "web")
    folder = folder_of(node)
    before = (folder / "live").readlink()
    report = await deploy(new, [node], options=DeployOptions(dry_run=True))
    (result,) = report.nodes
    assert result.outcome is Outcome.PLANNED
    assert "would deploy" in result.message
    assert report.dry_run
    assert (folder / "live").readlink() == before
    assert len([p for p in (folder / "versions").iterdir() if p.is_dir()]) == 1
    assert_serves(node, old)


async def test_only_the_last_versions_are_kept(tmp_path: Path, stack: ExitStack, pki: PKI) -> None:
    versions = [material(pki.inter.leaf(*NAMES)) for _ in range(5)]
    node = await site(stack, tmp_path, "haproxy", versions[0], "lb")
    folder = folder_of(node)
    for m in versions[1:]:
        assert (await deploy(m, [node])).ok
    assert_serves(node, versions[-1])
    kept = sorted(p.name[:16] for p in (folder / "versions").iterdir() if p.is_dir())
    assert kept == sorted(fingerprint(m.leaf)[:16] for m in versions[-3:])
