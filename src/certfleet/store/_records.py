"""What the store hands out: frozen values, never ORM objects bound to a session."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography import x509

from certfleet.certinfo import describe
from certfleet.fleet.model import Outcome

__all__ = [
    "AuditAction",
    "AuditEntry",
    "DeploymentRecord",
    "DeploymentState",
    "LineageRecord",
    "NodeResult",
    "TrustAnchor",
    "VersionRecord",
    "VersionState",
]


class VersionState(StrEnum):
    PENDING = "pending"  # key + CSR, waiting for the CA
    ISSUED = "issued"  # key + leaf + chain


class DeploymentState(StrEnum):
    """Where a deployment stands: recorded as ``running`` before it touches a node, ``finished``
    once every node's result is in; ``interrupted`` when its process ended first (killed, or
    stopped by Ctrl-C or SIGTERM), so some nodes may have been changed and never proven."""

    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


class AuditAction(StrEnum):
    """The changes the store records itself; other parts may record their own action strings."""

    INIT = "init"
    NODE_ADD = "node.add"
    NODE_UPDATE = "node.update"
    NODE_REMOVE = "node.remove"
    LINEAGE_CREATE = "lineage.create"
    LINEAGE_UPDATE = "lineage.update"
    LINEAGE_ATTACH = "lineage.attach"
    LINEAGE_DETACH = "lineage.detach"
    VERSION_REQUEST = "version.request"
    VERSION_ISSUE = "version.issue"
    VERSION_ACTIVATE = "version.activate"
    VERSION_WITHDRAW = "version.withdraw"
    TRUST_ADD = "trust.add"
    TRUST_REMOVE = "trust.remove"
    DEPLOY_START = "deploy.start"
    DEPLOY = "deploy"
    ROLLBACK = "rollback"
    EXPORT = "export"
    STORE_COPY = "store.copy"


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """One version of a lineage. The private key is not here: see ``Store.material``."""

    lineage: str
    number: int
    state: VersionState
    key_spec: str
    public_key_id: str
    names: tuple[str, ...]  # the names requested in the CSR (or those of the imported certificate)
    created_at: dt.datetime
    csr: x509.CertificateSigningRequest | None = None
    leaf: x509.Certificate | None = None
    chain: tuple[x509.Certificate, ...] = ()
    fingerprint: str | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    issued_at: dt.datetime | None = None
    active: bool = False
    # when a rollback of the whole lineage moved away from it; only an explicit activation brings it back
    withdrawn_at: dt.datetime | None = None

    def days_left(self, now: dt.datetime) -> int | None:
        return (self.not_after - now).days if self.not_after is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "number": self.number,
            "state": self.state.value,
            "active": self.active,
            "key": self.key_spec,
            "public_key_id": self.public_key_id,
            "names": list(self.names),
            "created_at": _iso(self.created_at),
            "issued_at": _iso(self.issued_at),
            "withdrawn_at": _iso(self.withdrawn_at),
            "fingerprint": self.fingerprint,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "certificate": describe(self.leaf).to_dict() if self.leaf is not None else None,
            "chain": [describe(c).to_dict() for c in self.chain],
        }


@dataclass(frozen=True, slots=True)
class LineageRecord:
    name: str
    key_spec: str
    subject: str | None  # as given: "C=..,O=..,CN=.."
    names: tuple[str, ...]  # required beyond the names of the nodes
    nodes: tuple[str, ...]  # member node names, sorted
    active: VersionRecord | None
    created_at: dt.datetime
    updated_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key_spec,
            "subject": self.subject,
            "names": list(self.names),
            "nodes": list(self.nodes),
            "active": self.active.to_dict() if self.active is not None else None,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class NodeResult:
    """What one deployment did on one node."""

    node: str
    outcome: Outcome
    started_at: dt.datetime
    finished_at: dt.datetime
    failed_step: str | None = None  # the deploy step that failed (render, upload, test, switch, reload, probe)
    output: str = ""  # the failing step's output, bounded by the store
    served_fingerprint: str | None = None  # what the probe saw afterwards

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "outcome": self.outcome.value,
            "failed_step": self.failed_step,
            "output": self.output,
            "served_fingerprint": self.served_fingerprint,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    id: int
    lineage: str
    version: int
    fingerprint: str | None
    actor: str
    started_at: dt.datetime
    finished_at: dt.datetime  # when it last changed, while it runs
    results: tuple[NodeResult, ...] = field(default=())
    state: DeploymentState = DeploymentState.FINISHED
    rollback: bool = False
    host: str | None = None  # the machine and process that ran it
    pid: int | None = None

    @property
    def ok(self) -> bool:
        return self.state is DeploymentState.FINISHED and all(r.outcome.ok for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "lineage": self.lineage,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "actor": self.actor,
            "state": self.state.value,
            "rollback": self.rollback,
            "ok": self.ok,
            "host": self.host,
            "pid": self.pid,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "results": [r.to_dict() for r in self.results],
        }


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    fingerprint: str
    subject: str
    cert: x509.Certificate
    added_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        info = describe(self.cert)
        return {
            "fingerprint": self.fingerprint,
            "subject": self.subject,
            "not_after": info.not_after.isoformat(),
            "added_at": _iso(self.added_at),
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    action: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": _iso(self.at), "actor": self.actor, "action": self.action, "detail": self.detail}
