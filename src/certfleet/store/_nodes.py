"""Nodes and lineages: who presents a certificate, and which certificate they present."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from certfleet.clock import utc_now
from certfleet.errors import ConflictError, InputError
from certfleet.fleet.model import NodeSpec, TargetSpec
from certfleet.store._base import (
    MAX_COMMAND,
    MAX_NAMES,
    MAX_TARGETS,
    StoreBase,
    _check_text,
    check_name,
)
from certfleet.store._engine import retried
from certfleet.store._models import (
    LineageRow,
    NodeRow,
    TargetRow,
    lineage_nodes,
)
from certfleet.store._records import (
    AuditAction,
    LineageRecord,
)

__all__ = ["NodesMixin"]


class NodesMixin(StoreBase):
    @staticmethod
    def _check_node(spec: NodeSpec) -> None:
        check_name("node", spec.name)
        if not spec.names:
            raise InputError(f"node {spec.name} has no names", hint="give at least one --name")
        if len(spec.names) > MAX_NAMES:
            raise InputError(f"node {spec.name} has more than {MAX_NAMES} names")
        if not spec.targets:
            raise InputError(f"node {spec.name} has no targets", hint="give at least one --target KIND:PATH")
        if len(spec.targets) > MAX_TARGETS:
            raise InputError(f"node {spec.name} has more than {MAX_TARGETS} targets")
        for n in spec.names:
            _check_text("a name", n, 253)
        for t in spec.targets:
            _check_text("a target kind", t.kind, 32)
            _check_text("a target path", t.path, MAX_COMMAND)
        _check_text("the transport", spec.transport, 512)
        _check_text("the test command", spec.test_cmd, MAX_COMMAND)
        _check_text("the reload command", spec.reload_cmd, MAX_COMMAND)
        _check_text("the probe", spec.probe, 300)

    @staticmethod
    def _fill_node(row: NodeRow, spec: NodeSpec) -> None:
        row.names = list(spec.names)
        row.transport = spec.transport
        row.test_cmd = spec.test_cmd
        row.reload_cmd = spec.reload_cmd
        row.probe = spec.probe
        row.options = dict(spec.options)
        row.targets = [
            TargetRow(position=i, kind=t.kind, path=t.path, options=dict(t.options)) for i, t in enumerate(spec.targets)
        ]

    @retried
    def add_node(self, spec: NodeSpec, *, lineage: str | None = None) -> NodeSpec:
        """Add a new node (refused when the name is taken), optionally as a member of ``lineage``
        (created with the default key policy when new)."""
        self._check_node(spec)
        with self._db.session(write=True) as s:
            if s.scalar(select(NodeRow.id).where(NodeRow.name == spec.name)) is not None:
                raise InputError(
                    f"node {spec.name} exists",
                    hint="`certfleet node remove` it first, or change it with `certfleet apply`",
                )
            now = utc_now()
            row = NodeRow(name=spec.name, created_at=now, updated_at=now)
            self._fill_node(row, spec)
            s.add(row)
            self._audit(s, AuditAction.NODE_ADD, spec.to_dict())
            if lineage is not None:
                lin = self._lineage_row(s, lineage, create=True)
                lin.nodes.append(row)
                lin.updated_at = utc_now()
                self._audit(s, AuditAction.LINEAGE_ATTACH, {"lineage": lineage, "node": spec.name})
        return spec

    @retried
    def put_node(self, spec: NodeSpec) -> bool:
        """Create or replace a node; True when anything changed."""
        self._check_node(spec)
        with self._db.session(write=True) as s:
            row = s.scalar(select(NodeRow).where(NodeRow.name == spec.name).options(selectinload(NodeRow.targets)))
            now = utc_now()
            if row is None:
                row = NodeRow(name=spec.name, created_at=now, updated_at=now)
                self._fill_node(row, spec)
                s.add(row)
                self._audit(s, AuditAction.NODE_ADD, spec.to_dict())
                return True
            if self._spec(row) == spec:
                return False
            for t in list(row.targets):
                s.delete(t)
            s.flush()
            self._fill_node(row, spec)
            row.updated_at = now
            row.version += 1
            self._audit(s, AuditAction.NODE_UPDATE, spec.to_dict())
            return True

    @retried
    def node_version(self, name: str) -> int:
        """The node's version: one more at every change of the node or of its lineages."""
        with self._db.session(write=False) as s:
            return self._node_row(s, name).version

    @retried
    def save_node(
        self, spec: NodeSpec, *, lineages: Sequence[str], version: int | None = None, create: bool = False
    ) -> int:
        """Create the node (``create``: refused when the name exists) or change it, and make its
        lineages exactly ``lineages`` (a new one is created), in one transaction; with
        ``version``, refused (:class:`~certfleet.errors.ConflictError`) when the node changed
        since that version was read. The node's new version."""
        self._check_node(spec)
        for lineage in lineages:
            check_name("lineage", lineage)
        with self._db.session(write=True) as s:
            row = s.scalar(
                select(NodeRow)
                .where(NodeRow.name == spec.name)
                .options(selectinload(NodeRow.targets), selectinload(NodeRow.lineages))
                .with_for_update()
            )
            now = utc_now()
            if create and row is not None:
                raise InputError(f"node {spec.name} exists", hint="edit it from the nodes page")
            if row is None and not create:
                raise ConflictError(f"node {spec.name} was removed meanwhile", hint="add it again if it is needed")
            if row is not None and version is not None and row.version != version:
                raise ConflictError(
                    f"node {spec.name} was changed by someone else meanwhile (version {row.version}, not {version})",
                    hint="reload it, check what changed, and make your change again",
                )
            new = row is None
            changed = False
            if row is None:
                row = NodeRow(name=spec.name, created_at=now, updated_at=now, version=1)
                self._fill_node(row, spec)
                s.add(row)
                s.flush()
                self._audit(s, AuditAction.NODE_ADD, spec.to_dict())
            elif self._spec(row) != spec:
                for t in list(row.targets):
                    s.delete(t)
                s.flush()
                self._fill_node(row, spec)
                row.updated_at = now
                changed = True
                self._audit(s, AuditAction.NODE_UPDATE, spec.to_dict())
            wanted = list(dict.fromkeys(lineages))
            current = {lin.name: lin for lin in row.lineages}
            for name in wanted:
                if name not in current:
                    lin = self._lineage_row(s, name, create=True)
                    lin.nodes.append(row)
                    lin.updated_at = now
                    changed = True
                    self._audit(s, AuditAction.LINEAGE_ATTACH, {"lineage": name, "node": spec.name})
            for name, lin in current.items():
                if name not in wanted:
                    lin.nodes.remove(row)
                    lin.updated_at = now
                    changed = True
                    self._audit(s, AuditAction.LINEAGE_DETACH, {"lineage": name, "node": spec.name})
            if changed and not new:
                row.version += 1
            s.flush()
            return row.version

    @retried
    def node(self, name: str) -> NodeSpec:
        with self._db.session(write=False) as s:
            return self._spec(self._node_row(s, name))

    @retried
    def nodes(self, lineage: str | None = None) -> list[NodeSpec]:
        """Every node sorted by name, or the members of ``lineage``: the columns a spec holds, in
        two queries (the nodes, their targets), whatever their number."""
        with self._db.session(write=False) as s:
            q = select(
                NodeRow.id,
                NodeRow.name,
                NodeRow.names,
                NodeRow.transport,
                NodeRow.test_cmd,
                NodeRow.reload_cmd,
                NodeRow.probe,
                NodeRow.options,
            ).order_by(NodeRow.name)
            tq = select(TargetRow.node_id, TargetRow.kind, TargetRow.path, TargetRow.options).order_by(
                TargetRow.node_id, TargetRow.position
            )
            if lineage is not None:
                lineage_id = self._lineage_row(s, lineage).id
                q = q.join(lineage_nodes, lineage_nodes.c.node_id == NodeRow.id).where(
                    lineage_nodes.c.lineage_id == lineage_id
                )
                tq = tq.join(lineage_nodes, lineage_nodes.c.node_id == TargetRow.node_id).where(
                    lineage_nodes.c.lineage_id == lineage_id
                )
            rows = s.execute(q).all()
            targets: dict[int, list[TargetSpec]] = {}
            for node_id, kind, path, options in s.execute(tq):
                targets.setdefault(node_id, []).append(TargetSpec(kind, path, dict(options)))
        return [
            NodeSpec(
                name=name,
                names=tuple(names),
                targets=tuple(targets.get(node_id, ())),
                transport=transport,
                test_cmd=test_cmd,
                reload_cmd=reload_cmd,
                probe=probe,
                options=dict(options),
            )
            for node_id, name, names, transport, test_cmd, reload_cmd, probe, options in rows
        ]

    @retried
    def node_lineages(self, name: str) -> list[str]:
        with self._db.session(write=False) as s:
            return [lin.name for lin in self._node_row(s, name).lineages]

    @retried
    def remove_node(self, name: str) -> None:
        with self._db.session(write=True) as s:
            row = self._node_row(s, name)
            lineages = [lin.name for lin in row.lineages]
            s.delete(row)
            self._audit(s, AuditAction.NODE_REMOVE, {"node": name, "lineages": lineages})

    @retried
    def lineage(self, name: str) -> LineageRecord:
        with self._db.session(write=False) as s:
            row = self._lineage_row(s, name)
            return self._lineage_record(row, self._member_names(s, [row.id])[row.id])

    @retried
    def lineages(self) -> list[LineageRecord]:
        with self._db.session(write=False) as s:
            rows = list(s.scalars(select(LineageRow).order_by(LineageRow.name)))
            members = self._member_names(s, [r.id for r in rows]) if rows else {}
            return [self._lineage_record(r, members[r.id]) for r in rows]

    @retried
    def put_lineage(
        self,
        name: str,
        *,
        key_spec: str | None = None,
        subject: str | None = None,
        names: Sequence[str] | None = None,
        nodes: Sequence[str] | None = None,
        add_nodes: Sequence[str] = (),
    ) -> LineageRecord:
        """Create the lineage or change it. Fields left ``None`` stay as they are; ``nodes`` sets
        the members exactly, ``add_nodes`` adds members; ``subject=""`` clears the subject."""
        _check_text("the subject", subject, 1024)
        if names is not None:
            if len(names) > MAX_NAMES:
                raise InputError(f"lineage {name} has more than {MAX_NAMES} names")
            for n in names:
                _check_text("a name", n, 253)
        with self._db.session(write=True) as s:
            row = self._lineage_row(s, name, create=True)
            before = self._lineage_record(row).to_dict()
            if key_spec is not None:
                row.key_spec = key_spec[:16]
            if subject is not None:
                row.subject = subject or None
            if names is not None:
                row.names = list(dict.fromkeys(names))
            if nodes is not None:
                members = [self._node_row(s, n) for n in dict.fromkeys(nodes)]
                for node in set(members).symmetric_difference(row.nodes):
                    node.version += 1
                row.nodes = members
            attached = []
            for n in add_nodes:
                node = self._node_row(s, n)
                if node not in row.nodes:
                    row.nodes.append(node)
                    node.version += 1
                    attached.append(n)
            after = self._lineage_record(row)
            changed = {k: v for k, v in after.to_dict().items() if k != "updated_at" and before.get(k) != v}
            if changed:
                row.updated_at = utc_now()
                if nodes is None and set(changed) == {"nodes"}:  # members added, nothing else: an attach each
                    for n in attached:
                        self._audit(s, AuditAction.LINEAGE_ATTACH, {"lineage": name, "node": n})
                else:
                    self._audit(s, AuditAction.LINEAGE_UPDATE, {"lineage": name, **changed})
                after = self._lineage_record(row)
            return after

    @retried
    def detach(self, lineage: str, node: str) -> None:
        with self._db.session(write=True) as s:
            row = self._lineage_row(s, lineage)
            member = self._node_row(s, node)
            if member in row.nodes:
                row.nodes.remove(member)
                member.version += 1
                row.updated_at = utc_now()
                self._audit(s, AuditAction.LINEAGE_DETACH, {"lineage": lineage, "node": node})
