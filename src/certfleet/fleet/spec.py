"""Plain descriptions of nodes and targets, shared by the store, the fleet file and deploy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

__all__ = ["Material", "NodeSpec", "TargetSpec"]


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """How files land on a node: ``kind`` is a registered target (pem, nginx, apache, haproxy,
    pkcs12, k8s-secret, command); ``path`` its folder (or the command for ``command``)."""

    kind: str
    path: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "options": dict(self.options)}


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A server that presents the certificate."""

    name: str
    names: tuple[str, ...]  # DNS names / IPs this node must be covered for
    targets: tuple[TargetSpec, ...]
    transport: str = "local"  # "local" or "ssh://user@host[:port]"
    test_cmd: str | None = None  # e.g. "nginx -t"; run on the node after upload, before the switch
    reload_cmd: str | None = None  # e.g. "nginx -s reload"; run after the switch
    probe: str | None = None  # "host:port" the node serves TLS on; SNI is the node's first name
    options: Mapping[str, Any] = field(default_factory=dict)  # transport options (ssh key, known_hosts...)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "names": list(self.names),
            "targets": [t.to_dict() for t in self.targets],
            "transport": self.transport,
            "test": self.test_cmd,
            "reload": self.reload_cmd,
            "probe": self.probe,
            "options": dict(self.options),
        }


@dataclass(frozen=True, slots=True)
class Material:
    """What is deployed: one key and its certificate chain (leaf first, root left out)."""

    key: CertificateIssuerPrivateKeyTypes
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # intermediates only, leaf's issuer first
    version_id: str = ""  # a stable id for the versioned folder: the leaf fingerprint by default

    def __repr__(self) -> str:  # never print key material, even in a debugger or a log
        return f"Material(leaf={self.leaf.subject.rfc4514_string()!r}, version_id={self.version_id!r})"
