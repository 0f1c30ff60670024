"""What the deploy tests share: two versions of one certificate, real servers seeded with the
first, and checks of what a node serves and what its live folder holds."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet import testing
from certfleet.certinfo import fingerprint
from certfleet.fleet.deploy import deploy
from certfleet.fleet.model import Material, NodeSpec, TargetSpec
from certfleet.keys import key_matches
from conftest import PKI
from support.servers import served_chain, tls_server

__all__ = ["NAMES", "folder_of", "live_pair", "material", "old_new", "served", "site", "small_disk", "stack"]

NAMES = ("www.example.test", "example.test")


def material(leaf: testing.TestLeaf) -> Material:
    return Material(leaf.key, leaf.cert, tuple(leaf.chain), fingerprint(leaf.cert))


@pytest.fixture(scope="module")
def old_new(pki: PKI) -> tuple[Material, Material]:
    """Two versions with different keys and different intermediates, so a mix would show."""
    renewed_by = pki.root.intermediate("certfleet Test Intermediate B")
    return material(pki.inter.leaf(*NAMES)), material(renewed_by.leaf(*NAMES))


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """The test's servers, all stopped when it ends."""
    with ExitStack() as servers:
        yield servers


async def site(stack: ExitStack, tmp_path: Path, kind: str, first: Material, name: str, **node: Any) -> NodeSpec:
    """A server of ``kind`` already serving ``first`` from certfleet's live folder, and its node
    (test and reload commands, probe; ``node`` overrides or adds fields)."""
    folder = tmp_path / name / "certs"
    target = TargetSpec(kind, str(folder))
    seeded = await deploy(first, [NodeSpec("seed", NAMES, (target,))])
    assert seeded.ok, seeded.to_dict()
    server = stack.enter_context(tls_server(kind, tmp_path / name / "server", folder / "live"))
    spec = {"test_cmd": server.test_cmd, "reload_cmd": server.reload_cmd, "probe": server.probe, **node}
    return NodeSpec(name, NAMES, (target,), **spec)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs that a test may fill: a disk that runs full (needs root, as CI runs)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def folder_of(node: NodeSpec) -> Path:
    """The folder of the node's one target (``versions/`` and ``live`` are under it)."""
    (target,) = node.targets
    return Path(target.path)


def served(node: NodeSpec) -> list[x509.Certificate]:
    """What the node's server sends, seen by a plain TLS client (not certfleet's probe)."""
    assert node.probe is not None
    return served_chain(node.probe, NAMES[0])


def live_pair(folder: Path) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The leaf under ``folder/live`` and every certificate there; the one key must match the leaf."""
    live = folder / "live"
    certs: list[x509.Certificate] = []
    keys = []
    for path in sorted(live.iterdir()):
        data = path.read_bytes()
        if b"CERTIFICATE" in data:
            certs.extend(x509.load_pem_x509_certificates(data))
        if b"PRIVATE KEY" in data:
            keys.append(serialization.load_pem_private_key(data, password=None))
    assert len(keys) == 1, f"{live}: {len(keys)} keys"
    leaf = next(c for c in certs if not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    assert key_matches(keys[0], leaf), f"{live}: the key does not match the certificate"
    return leaf, certs
