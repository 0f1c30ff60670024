"""A lineage ``web`` of local pem-target nodes, some in zones, and what a node serves afterwards:
the setup the jobs tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.certinfo import fingerprint
from certfleet.fleet.model import NodeSpec, TargetSpec
from certfleet.store import Store
from certfleet.testing import pem
from conftest import PKI


def ok(result: Any, code: int = 0) -> Any:
    assert result.code == code, f"exit {result.code}\n{result.out}\n{result.err}"
    return result


def node_folder(root: Path, node: str) -> Path:
    return root / "nodes" / node


def make_fleet(cli: Any, root: Path, pki: PKI, zones: dict[str, str | None]) -> None:
    """``certfleet init``, the test root trusted, and a node per entry of ``zones`` (its zone) in ``web``."""
    ok(cli("init"))
    ok(cli("trust", "add", pki.root_file(root)))
    with Store.open() as store:
        for name, zone in zones.items():
            spec = NodeSpec(name, ("www.example.test",), (TargetSpec("pem", str(node_folder(root, name))),))
            store.add_node(spec, lineage="web")
            if zone is not None:
                store.set_node_zone(name, zone)


def issue(cli: Any, root: Path, pki: PKI, tag: str) -> str:
    """A new version of ``web`` signed by the test CA, imported and active; its leaf fingerprint."""
    csr_file = root / f"{tag}.csr"
    ok(cli("request", "web", "--out", csr_file))
    leaf = pki.inter.sign_csr(x509.load_pem_x509_csr(csr_file.read_bytes()))
    (root / f"{tag}.crt").write_bytes(pem(leaf))
    (root / "inter.crt").write_bytes(pem(pki.inter.cert))
    ok(cli("import", "web", root / f"{tag}.crt", root / "inter.crt", "--no-fetch"))
    return fingerprint(leaf)


def served(root: Path, node: str, pki: PKI) -> str:
    """The leaf a node's live files hold, after checking that they are whole: the key is the
    certificate's, the chain is the test intermediate, the full chain is the two together."""
    live = node_folder(root, node) / "live"
    cert_pem = (live / "cert.pem").read_bytes()
    leaf = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key((live / "privkey.pem").read_bytes(), password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*spki) == leaf.public_key().public_bytes(*spki), f"{node}: key mismatch"
    chain = x509.load_pem_x509_certificates((live / "chain.pem").read_bytes())
    assert [fingerprint(c) for c in chain] == [fingerprint(pki.inter.cert)], f"{node}: chain"
    full = x509.load_pem_x509_certificates((live / "fullchain.pem").read_bytes())
    assert [fingerprint(c) for c in full] == [fingerprint(leaf), fingerprint(pki.inter.cert)], f"{node}: fullchain"
    return fingerprint(leaf)
