"""Deploy to real nginx, Apache httpd and HAProxy, locally and through sshd, and prove what they serve."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet import testing
from certfleet.certinfo import fingerprint
from certfleet.fleet.deploy import DeployOptions, Outcome, ProgressEvent, Step, deploy
from certfleet.fleet.spec import Material, NodeSpec, TargetSpec
from certfleet.keys import key_matches
from conftest import PKI
from servers import SshServer, served_chain, sshd, tls_server

__all__ = ["sshd"]

NAMES = ("www.example.test", "example.test")
KINDS = ("nginx", "apache", "haproxy")


def material(leaf: testing.TestLeaf) -> Material:
    return Material(leaf.key, leaf.cert, tuple(leaf.chain), fingerprint(leaf.cert))


@pytest.fixture(scope="module")
def old_new(pki: PKI) -> tuple[Material, Material]:
    """Two versions with different keys and different intermediates, so a mix would show."""
    renewed_by = pki.root.intermediate("certfleet Test Intermediate B")
    return material(pki.inter.leaf(*NAMES)), material(renewed_by.leaf(*NAMES))


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as servers:
        yield servers


async def site(
    stack: ExitStack, tmp_path: Path, kind: str, first: Material, name: str, **node: object
) -> tuple[NodeSpec, Path]:
    """A server of ``kind`` already serving ``first`` from certfleet's live folder, and its node."""
    folder = tmp_path / name / "certs"
    target = TargetSpec(kind, str(folder))
    seeded = await deploy(first, [NodeSpec("seed", NAMES, (target,))])
    assert seeded.ok, seeded.to_dict()
    server = stack.enter_context(tls_server(kind, tmp_path / name / "server", folder / "live"))
    spec = {"test_cmd": server.test_cmd, "reload_cmd": server.reload_cmd, "probe": server.probe, **node}
    return NodeSpec(name, NAMES, (target,), **spec), folder  # type: ignore[arg-type]


def assert_serves(node: NodeSpec, m: Material) -> None:
    assert node.probe is not None
    assert served_chain(node.probe, NAMES[0]) == [m.leaf, *m.chain]


def live_files(folder: Path) -> tuple[list[x509.Certificate], object]:
    """Every certificate and the one key under ``folder/live``."""
    certs: list[x509.Certificate] = []
    keys = []
    for path in sorted((folder / "live").iterdir()):
        data = path.read_bytes()
        if b"CERTIFICATE" in data:
            certs.extend(x509.load_pem_x509_certificates(data))
        if b"PRIVATE KEY" in data:
            keys.append(serialization.load_pem_private_key(data, password=None))
    assert len(keys) == 1
    return certs, keys[0]


def assert_live(folder: Path, m: Material) -> None:
    certs, key = live_files(folder)
    assert key_matches(key, m.leaf)  # type: ignore[arg-type]
    assert set(certs) == {m.leaf, *m.chain}


@pytest.mark.parametrize("kind", KINDS)
async def test_a_server_serves_what_was_deployed(
    kind: str, tmp_path: Path, stack: ExitStack, old_new: tuple[Material, Material]
) -> None:
    old, new = old_new
    node, folder = await site(stack, tmp_path, kind, old, kind)
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
    assert len(list((folder / "versions").iterdir())) == 2


async def test_a_node_over_ssh(
    tmp_path: Path, stack: ExitStack, sshd: SshServer, old_new: tuple[Material, Material]
) -> None:
    old, new = old_new
    node, folder = await site(stack, tmp_path, "nginx", old, "gateway", transport=sshd.url, options=sshd.options)
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
    node, folder = await site(stack, tmp_path, "nginx", old, "gateway", transport=sshd.url, options=options)
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
    nodes = [(await site(stack, tmp_path, kind, old, kind))[0] for kind in KINDS]
    nodes.append((await site(stack, tmp_path, "nginx", old, "ssh", transport=sshd.url, options=sshd.options))[0])
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
    node, folder = await site(stack, tmp_path, "nginx", old, "web")
    before = (folder / "live").readlink()
    report = await deploy(new, [node], options=DeployOptions(dry_run=True))
    (result,) = report.nodes
    assert result.outcome is Outcome.PLANNED
    assert "would deploy" in result.message
    assert report.dry_run
    assert (folder / "live").readlink() == before
    assert len(list((folder / "versions").iterdir())) == 1
    assert_serves(node, old)


async def test_only_the_last_versions_are_kept(tmp_path: Path, stack: ExitStack, pki: PKI) -> None:
    versions = [material(pki.inter.leaf(*NAMES)) for _ in range(5)]
    node, folder = await site(stack, tmp_path, "haproxy", versions[0], "lb")
    for m in versions[1:]:
        assert (await deploy(m, [node])).ok
    assert_serves(node, versions[-1])
    kept = sorted(p.name[:16] for p in (folder / "versions").iterdir())
    assert kept == sorted(fingerprint(m.leaf)[:16] for m in versions[-3:])
