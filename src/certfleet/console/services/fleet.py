"""The fleet as the console reads and changes it: lineages, nodes, CSRs, history and the audit trail.

Each call is the library's (the same functions as the CLI's); this module only turns what a form
or a JSON body holds into their arguments, and makes each change in the name of the console account.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from prometheus_client.core import Metric

from certfleet.console.roles import Forbidden, Role
from certfleet.console.services.audit import Actor, Audit, ConsoleAction
from certfleet.csr import CsrInfo, describe_csr
from certfleet.errors import InputError, NotFoundError
from certfleet.fleet.lineage import RequestResult, request
from certfleet.fleet.model import NodeSpec
from certfleet.fleet.nodes import lineage_names, make_node
from certfleet.names import NamePlan, plan
from certfleet.store import AuditEntry, DeploymentRecord, LineageRecord, Store, VersionRecord, VersionState

__all__ = ["SSH_FIELDS", "CsrValues", "Fleet", "NodeValues", "build_node", "commands_of", "split_names"]

_SPLIT = re.compile(r"[\s,]+")

# the node options the console edits; any other option a node has (from a fleet file) is kept
SSH_FIELDS = ("known_hosts", "identity")
# and the folder the node's web server publishes, where http-01 puts its tokens
EDITED_OPTIONS = (*SSH_FIELDS, "webroot")


def split_names(text: str) -> list[str]:
    """Names as people type them: one a line, or separated by spaces or commas."""
    return [n for n in _SPLIT.split(text) if n]


@dataclass(frozen=True, slots=True)
class NodeValues:
    """A node as the form (or the API) describes it; ``original`` names the node being changed."""

    name: str = ""
    names: str = ""
    targets: str = ""
    transport: str = "local"
    test_cmd: str = ""
    reload_cmd: str = ""
    probe: str = ""
    known_hosts: str = ""
    identity: str = ""
    webroot: str = ""
    lineages: tuple[str, ...] = ()
    new_lineage: str = ""
    original: str = ""
    version: int | None = None  # the node's version the form (or the caller) saw; None: any

    @classmethod
    def of(cls, spec: NodeSpec | None, lineages: tuple[str, ...] = (), version: int | None = None) -> NodeValues:
        if spec is None:
            return cls(lineages=lineages)
        return cls(
            name=spec.name,
            names="\n".join(spec.names),
            targets="\n".join(f"{t.kind}:{t.path}" for t in spec.targets),
            transport=spec.transport,
            test_cmd=spec.test_cmd or "",
            reload_cmd=spec.reload_cmd or "",
            probe=spec.probe or "",
            known_hosts=str(spec.options.get("known_hosts", "")),
            identity=str(spec.options.get("identity", "")),
            webroot=str(spec.options.get("webroot", "")),
            lineages=lineages,
            original=spec.name,
            version=version,
        )


def commands_of(spec: NodeSpec | None) -> dict[str, Any]:
    """What a node runs, and how it is reached: what only an admin sets or changes."""
    if spec is None:
        return {"test_cmd": None, "reload_cmd": None, "command_targets": [], "transport": "local", "ssh": {}}
    return {
        "test_cmd": spec.test_cmd,
        "reload_cmd": spec.reload_cmd,
        "command_targets": [t.path for t in spec.targets if t.kind == "command"],
        "transport": spec.transport,
        "ssh": {k: spec.options[k] for k in SSH_FIELDS if spec.options.get(k)},
    }


def build_node(
    values: NodeValues, kept: Mapping[str, Any] | None = None, *, store_home: Path | None = None
) -> NodeSpec:
    """The node the values describe, checked by the library (names, targets, transport, probe);
    ``kept`` are the node's options the console does not show."""
    options = {k: v for k, v in (kept or {}).items() if k not in EDITED_OPTIONS}
    options.update({k: v for k, v in ((k, getattr(values, k)) for k in EDITED_OPTIONS) if v})
    return make_node(
        values.name,
        split_names(values.names),
        [line.strip() for line in values.targets.splitlines() if line.strip() and not line.strip().startswith("#")],
        transport=values.transport or "local",
        test_cmd=values.test_cmd or None,
        reload_cmd=values.reload_cmd or None,
        probe=values.probe or None,
        options=options,
        store_home=store_home,
    )


@dataclass(frozen=True, slots=True)
class CsrValues:
    lineage: str
    nodes: tuple[str, ...]
    names: str
    key: str
    subject: tuple[tuple[str, str], ...]  # country, state, locality, organization: CAs refuse a unit now
    wildcards: bool
    common_name: str = ""  # one of the names; the first name when none is chosen

    def subject_text(self) -> str | None:
        from certfleet.csr import Subject

        given = {k: v for k, v in self.subject if v and k != "organizational_unit"}
        if self.common_name:
            given["common_name"] = self.common_name
        return str(Subject(**given)) if given else None


class Fleet:
    """Reads go to the store; changes are made in the name of the account that asks.

    An account (or token) kept to some lineages sees those lineages, the nodes that belong to
    one of them, their history and their audit entries; it changes a node only when every
    lineage of the node is one of its own. Anything else is, for it, something that does not
    exist.
    """

    def __init__(self, store: Store, audit: Audit) -> None:
        self._store = store
        self._audit = audit

    # -- what an actor may reach ----------------------------------------------------------------------

    @staticmethod
    def check_lineage(actor: Actor, lineage: str) -> str:
        if not actor.allows(lineage):
            raise NotFoundError(f"no lineage named {lineage[:80]!r}", hint="`certfleet status` lists the lineages")
        return lineage

    def visible_lineages(self, actor: Actor) -> list[LineageRecord]:
        return [r for r in self._store.lineages() if actor.allows(r.name)]

    def visible_nodes(self, actor: Actor, lineage: str | None = None) -> list[NodeSpec]:
        if lineage is not None:
            self.check_lineage(actor, lineage)
        specs = self._store.nodes(lineage)
        if actor.lineages is None or lineage is not None:
            return specs
        member = self.memberships(specs)
        return [n for n in specs if any(actor.allows(name) for name in member[n.name])]

    def visible_node(self, actor: Actor, name: str, *, change: bool = False) -> NodeSpec:
        """The node, when ``actor`` may see it (``change``: may change it)."""
        spec = self._store.node(name)
        if actor.lineages is not None:
            member = self._store.node_lineages(name)
            reach = all if change else any
            if not member or not reach(actor.allows(n) for n in member):
                raise NotFoundError(f"no node named {name[:80]!r}", hint="the nodes page lists the nodes")
        return spec

    def visible_deployments(self, actor: Actor, lineage: str | None = None, limit: int = 50) -> list[DeploymentRecord]:
        if lineage is not None:
            self.check_lineage(actor, lineage)
        found = self._store.deployments(lineage, limit=limit)
        return [d for d in found if actor.allows(d.lineage)]

    def deployment_counts(self, actor: Actor, limit: int = 10_000) -> tuple[Mapping[str, int], Mapping[str, int]]:
        """Of the newest ``limit`` deployments ``actor`` may see: how many are ok and failed, and
        their node results by outcome (counted by the store, for ``/metrics``)."""
        lineages = None if actor.lineages is None else sorted(actor.lineages)
        return self._store.deployment_counts(lineages, limit=limit)

    def visible_audit(self, actor: Actor, limit: int = 100) -> list[AuditEntry]:
        entries = self._store.audit_log(limit=limit)
        if actor.lineages is None:
            return entries
        return [e for e in entries if isinstance(e.detail.get("lineage"), str) and actor.allows(e.detail["lineage"])]

    # -- reading ------------------------------------------------------------------------------------

    def lineages(self) -> list[LineageRecord]:
        return self._store.lineages()

    def lineage(self, name: str) -> LineageRecord:
        return self._store.lineage(name)

    def versions(self, lineage: str) -> list[VersionRecord]:
        return self._store.versions(lineage)

    def every_version(self) -> dict[str, list[VersionRecord]]:
        """Each lineage's versions, oldest first."""
        return {r.name: self._store.versions(r.name) for r in self._store.lineages()}

    def nodes(self, lineage: str | None = None) -> list[NodeSpec]:
        return self._store.nodes(lineage)

    def node(self, name: str) -> NodeSpec:
        return self._store.node(name)

    def node_lineages(self, name: str) -> list[str]:
        return self._store.node_lineages(name)

    def memberships(self, nodes: Sequence[NodeSpec]) -> dict[str, list[str]]:
        """Each node's lineages, from one read of the lineages (never a query per node)."""
        member: dict[str, list[str]] = {n.name: [] for n in nodes}
        for record in self._store.lineages():
            for node in record.nodes:
                if node in member:
                    member[node].append(record.name)
        return member

    def required_names(self, lineage: str) -> tuple[str, ...]:
        record = self._store.lineage(lineage)
        return lineage_names(record, self._store.nodes(record.name))

    def plan(self, lineage: str, *, wildcards: bool) -> NamePlan:
        """How the lineage's names would go into a CSR."""
        return plan(self.required_names(lineage), wildcards=wildcards)

    def version(self, lineage: str, number: int) -> VersionRecord:
        return self._store.version(lineage, number)

    def csr_info(self, lineage: str, number: int) -> tuple[VersionRecord, CsrInfo]:
        """A version and what its CSR asks for (the "CSR ready" page)."""
        version = self._store.version(lineage, number)
        if version.csr is None:
            raise InputError(f"version {number} of {lineage} has no CSR")
        return version, describe_csr(version.csr)

    def issued(self, lineage: str) -> list[VersionRecord]:
        """The versions with a certificate, newest first: what can be exported or rolled back to."""
        return [v for v in reversed(self._store.versions(lineage)) if v.state is VersionState.ISSUED]

    def csr_pem(self, lineage: str, number: int) -> bytes:
        """The CSR of a version, as PEM (what the CA's form takes)."""
        version = self._store.version(lineage, number)
        if version.csr is None:
            raise InputError(f"version {number} of {lineage} has no CSR")
        return version.csr.public_bytes(serialization.Encoding.PEM)

    def deployments(self, lineage: str | None = None, limit: int = 50) -> list[DeploymentRecord]:
        """Newest first."""
        return self._store.deployments(lineage, limit=limit)

    def autopilot_metrics(self, actor: Actor | None = None) -> list[Metric]:
        """Each lineage's next renewal and last outcome, and the alerts sent (the autopilot's);
        for an ``actor`` kept to some lineages, only the samples of those lineages."""
        from certfleet.autopilot.schedule import families

        found = families(self._store)
        if actor is None or actor.lineages is None:
            return found
        for family in found:
            family.samples = [
                sample
                for sample in family.samples
                if "lineage" not in sample.labels or actor.allows(sample.labels["lineage"])
            ]
        return found

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        return self._store.audit_log(limit=limit)

    # -- changing -----------------------------------------------------------------------------------

    def node_version(self, name: str) -> int:
        return self._store.node_version(name)

    def save_node(
        self, actor: Actor, values: NodeValues, *, confirm: Callable[[], None] | None = None
    ) -> tuple[NodeSpec, int]:
        """Create the node (``values.original`` empty) or change it, and set its lineages, in one
        transaction; refused with a conflict when ``values.version`` is not the node's version
        any more. The node and its new version.

        Setting or changing what the node runs (its test and reload commands, a command target)
        or how it is reached (its transport, SSH files) needs the admin role, and ``confirm``
        (the console asks for the password again) is called before anything is saved; the
        change is audited with the commands.
        """
        store = self._audit.store_for(actor)
        original = values.original
        if original and original != values.name:
            raise InputError("a node keeps its name", hint="add a new node and remove the old one")
        before = self.visible_node(actor, original, change=True) if original else None
        wanted = sorted(set(values.lineages) | ({values.new_lineage} if values.new_lineage else set()))
        for lineage in wanted:
            self.check_lineage(actor, lineage)
        if actor.lineages is not None and not wanted:
            raise Forbidden("name one of your lineages for the node")
        spec = build_node(values, before.options if before is not None else None, store_home=self._store.home)
        commands = commands_of(spec)
        if commands != commands_of(before):
            if not actor.may(Role.ADMIN):
                raise Forbidden(
                    "setting or changing a node's commands or transport needs the admin role",
                    hint="leave the commands, command targets and transport as they are, or ask an administrator",
                )
            if confirm is not None:
                confirm()
        version = store.save_node(spec, lineages=wanted, version=values.version, create=not original)
        if commands != commands_of(before):
            self._audit.record(actor, ConsoleAction.NODE_COMMANDS, {"node": spec.name, **commands})
        return spec, version

    def remove_node(self, actor: Actor, name: str) -> None:
        self.visible_node(actor, name, change=True)
        self._audit.store_for(actor).remove_node(name)

    def request_csr(self, actor: Actor, values: CsrValues) -> RequestResult:
        """A key made and kept inside the store, and the CSR for every name the lineage needs."""
        if not values.lineage:
            raise InputError("name the lineage the certificate is for", hint="e.g. web")
        self.check_lineage(actor, values.lineage)
        for node in values.nodes:
            self.visible_node(actor, node)
        return request(
            self._audit.store_for(actor),
            values.lineage,
            nodes=values.nodes,
            names=split_names(values.names),
            key_spec=values.key,
            subject=values.subject_text(),
            wildcards=values.wildcards,
        )
