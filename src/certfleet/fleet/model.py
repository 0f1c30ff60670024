"""The fleet's plain values, below the store: nodes and their targets, what is deployed, and what
happened to a node. Shared by the store, the fleet file, deploy, status and the console; imports
nothing else of the fleet."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from certfleet.endpoint import Endpoint, parse_endpoint, server_name
from certfleet.probe import StartTLS

__all__ = ["Material", "NodeSpec", "Outcome", "TargetSpec"]


class Outcome(StrEnum):
    """What one deploy did to one node: the engine reports it, the history keeps it, the console
    shows it as it happens."""

    OK = "ok"  # deployed, and (with a probe) proven served
    FAILED = "failed"  # a step failed: before the switch the node is untouched, after it it could not be put back
    ROLLED_BACK = "rolled-back"  # failed after the switch; the node is back on what it had before
    UNCHANGED = "unchanged"  # the node already had and served this version
    PLANNED = "planned"  # dry run: this node would be deployed
    SKIPPED = "skipped"  # nothing done: the node was left out
    # the deploy ended before this node's result was known (its process was killed): the node
    # may be half way; only what it has live and serves now tells
    INTERRUPTED = "interrupted"

    @property
    def ok(self) -> bool:
        return self in (Outcome.OK, Outcome.UNCHANGED, Outcome.PLANNED, Outcome.SKIPPED)


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

    def endpoint(self, starttls: StartTLS | None = None) -> Endpoint | None:
        """Where the node is probed, asked for its first DNS name; None when it names no probe."""
        if not self.probe:
            return None
        return parse_endpoint(self.probe, name=server_name(self.names), starttls=starttls, label=self.name)

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
