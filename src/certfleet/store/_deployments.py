"""Deployments in the store: each recorded before it runs, its nodes' results as they end, the
last result of each node kept apart (one row per node, read in one query), and what was proven
where."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence

from sqlalchemy import delete, func, insert, join, select
from sqlalchemy.orm import Session, selectinload

from certfleet.clock import utc_now
from certfleet.errors import InputError
from certfleet.fleet.model import Outcome
from certfleet.store._base import (
    _HOST,
    StoreBase,
    _bounded_output,
    _check_text,
    _node_result,
    _state_of,
)
from certfleet.store._engine import retried
from certfleet.store._models import (
    DeploymentRow,
    LastResultRow,
    LineageRow,
    NodeResultRow,
    NodeRow,
    VersionRow,
)
from certfleet.store._records import (
    AuditAction,
    DeploymentRecord,
    DeploymentState,
    NodeResult,
)

__all__ = ["DeploymentsMixin"]

_CHUNK = 500  # names per statement: far below SQLite's bound on parameters


def _check_results(results: Iterable[NodeResult]) -> None:
    for r in results:
        _check_text("a node name", r.node, 64)
        _check_text("a failed step", r.failed_step, 32)


def _state(row: DeploymentRow) -> DeploymentState:
    return _state_of(row.state, row.host, row.pid)


class DeploymentsMixin(StoreBase):
    @retried
    def _lineage_id(self, lineage: str) -> int:
        with self._db.session(write=False) as s:
            return self._lineage_row(s, lineage).id

    @retried
    def active_fingerprints(self) -> dict[str, str]:
        """Each lineage that has an active version: its leaf fingerprint, by lineage name (sorted).
        A cheap query, for callers that only need to notice a newly activated version."""
        with self._db.session(write=False) as s:
            rows = s.execute(
                select(LineageRow.name, VersionRow.fingerprint)
                .join(VersionRow, LineageRow.active_version_id == VersionRow.id)
                .order_by(LineageRow.name)
            ).all()
        return {str(name): str(fp) for name, fp in rows if fp}

    @retried
    def record_deployment(
        self,
        lineage: str,
        version: int,
        results: Iterable[NodeResult],
        *,
        started_at: dt.datetime | None = None,
        rollback: bool = False,
    ) -> int:
        """Keep the outcome of deploying ``version`` of ``lineage``, one result per node; its id.
        What :meth:`start_deployment` and :meth:`finish_deployment` do, in one transaction."""
        results = list(results)
        _check_results(results)
        with self._db.session(write=True) as s:
            row = self._start(
                s,
                lineage,
                version,
                [r.node for r in results],
                started_at=started_at or min((r.started_at for r in results), default=None),
                rollback=rollback,
            )
            self._finish(s, row, results, state=DeploymentState.FINISHED, finished_at=None)
            return row.id

    @retried
    def start_deployment(
        self,
        lineage: str,
        version: int,
        nodes: Sequence[str],
        *,
        started_at: dt.datetime | None = None,
        rollback: bool = False,
    ) -> int:
        """Record a deployment as running, before it touches a node: every node's result is
        ``interrupted`` until :meth:`record_node` or :meth:`finish_deployment` says otherwise,
        so a process killed half way leaves a true account. Its id."""
        for node in nodes:
            _check_text("a node name", node, 64)
        with self._db.session(write=True) as s:
            return self._start(s, lineage, version, nodes, started_at=started_at, rollback=rollback).id

    def _start(
        self,
        s: Session,
        lineage: str,
        version: int,
        nodes: Sequence[str],
        *,
        started_at: dt.datetime | None,
        rollback: bool,
    ) -> DeploymentRow:
        lin = self._lineage_row(s, lineage)
        ver = self._version_row(s, lin, version)
        now = started_at or utc_now()
        row = DeploymentRow(
            lineage=lin,
            version=ver,
            actor=self.actor,
            started_at=now,
            finished_at=now,
            state=DeploymentState.RUNNING,
            rollback=rollback,
            host=_HOST[:255],
            pid=os.getpid(),
            results=[
                NodeResultRow(node_name=n, outcome=Outcome.INTERRUPTED, output="", started_at=now, finished_at=now)
                for n in dict.fromkeys(nodes)
            ],
        )
        s.add(row)
        s.flush()
        self._keep_last_results(s, row)
        self._audit(
            s,
            AuditAction.DEPLOY_START,
            {"lineage": lineage, "version": version, "deployment": row.id, "nodes": list(dict.fromkeys(nodes))},
        )
        return row

    def record_node(self, deployment: int, result: NodeResult) -> None:
        """One node of a running deployment has its result."""
        self.record_nodes(deployment, [result])

    @retried
    def record_nodes(self, deployment: int, results: Sequence[NodeResult]) -> None:
        """Some nodes of a running deployment have their results: one write for all of them."""
        results = list(results)
        _check_results(results)
        if not results:
            return
        with self._db.session(write=True) as s:
            # these nodes' rows only: loading every result of the deployment for each node that
            # finishes would make a deploy of N nodes read N * N rows
            row = s.get(DeploymentRow, deployment)
            if row is None:
                raise InputError(f"no deployment {deployment}")
            names = sorted({r.node for r in results})
            found: dict[str, NodeResultRow] = {}
            for i in range(0, len(names), _CHUNK):
                chunk = names[i : i + _CHUNK]
                rows = s.scalars(
                    select(NodeResultRow).where(
                        NodeResultRow.deployment_id == deployment, NodeResultRow.node_name.in_(chunk)
                    )
                )
                found.update((r.node_name, r) for r in rows)
            for result in results:
                if result.node not in found:
                    found[result.node] = NodeResultRow(deployment_id=deployment, node_name=result.node)
                    s.add(found[result.node])
                self._fill_result(found[result.node], result)
            row.finished_at = max(row.finished_at, *(r.finished_at for r in results))
            s.flush()
            self._keep_last(s, row.lineage_id, row.id, {name: found[name].id for name in names})

    @retried
    def finish_deployment(
        self,
        deployment: int,
        results: Iterable[NodeResult],
        *,
        state: DeploymentState = DeploymentState.FINISHED,
        finished_at: dt.datetime | None = None,
    ) -> None:
        """Every node's result, and the deployment's end: ``finished``, or ``interrupted`` when
        it was stopped before every node was done (what each node got is in its result)."""
        results = list(results)
        _check_results(results)
        with self._db.session(write=True) as s:
            self._finish(s, self._deployment_row(s, deployment), results, state=state, finished_at=finished_at)

    def _finish(
        self,
        s: Session,
        row: DeploymentRow,
        results: list[NodeResult],
        *,
        state: DeploymentState,
        finished_at: dt.datetime | None,
    ) -> None:
        by_node = {r.node_name: r for r in row.results}
        for r in results:
            found = by_node.get(r.node)
            if found is None:
                found = by_node[r.node] = NodeResultRow(node_name=r.node)
                row.results.append(found)
            self._fill_result(found, r)
        row.state = state
        row.finished_at = finished_at or max((r.finished_at for r in results), default=utc_now())
        s.flush()
        self._keep_last_results(s, row)
        self._audit(
            s,
            AuditAction.DEPLOY,
            {
                "lineage": row.lineage.name,
                "version": row.version.number,
                "deployment": row.id,
                "state": state.value,
                "nodes": {r.node_name: r.outcome.value for r in row.results},
            },
        )

    @retried
    def mark_interrupted(self, lineage: str) -> list[int]:
        """Deployments of ``lineage`` recorded as running by a process of this machine that is
        gone: recorded as interrupted. Called by the next deploy, which holds the lineage's lock."""
        with self._db.session(write=True) as s:
            lin = self._lineage_row(s, lineage)
            rows = s.scalars(
                select(DeploymentRow)
                .where(DeploymentRow.lineage_id == lin.id, DeploymentRow.state == DeploymentState.RUNNING)
                .order_by(DeploymentRow.id)
                .options(selectinload(DeploymentRow.results))
            )
            stale = [r for r in rows if _state(r) is DeploymentState.INTERRUPTED]
            for r in stale:
                r.state = DeploymentState.INTERRUPTED
                # its nodes' results stay the `interrupted` placeholders of start_deployment
                self._keep_last_results(s, r)
            return [r.id for r in stale]

    def _deployment_row(self, s: Session, deployment: int) -> DeploymentRow:
        row = s.scalar(
            select(DeploymentRow).where(DeploymentRow.id == deployment).options(selectinload(DeploymentRow.results))
        )
        if row is None:
            raise InputError(f"no deployment {deployment}")
        return row

    @staticmethod
    def _fill_result(found: NodeResultRow, result: NodeResult) -> None:
        found.outcome = result.outcome
        found.failed_step = result.failed_step
        found.output = _bounded_output(result.output)
        found.served_fingerprint = result.served_fingerprint
        found.started_at = result.started_at
        found.finished_at = result.finished_at

    @staticmethod
    def _keep_last_results(s: Session, row: DeploymentRow) -> None:
        """Point each node of deployment ``row`` (flushed) at its result there in
        ``deployment_last_results``, unless a newer deployment of the lineage already has the node
        (a deploy's results recovered late). Called in the transaction that writes the results;
        writes are serialized (see _engine), so nothing moves between the read and the write."""
        newest = {r.node_name: r.id for r in sorted(row.results, key=lambda r: r.id)}
        DeploymentsMixin._keep_last(s, row.lineage_id, row.id, newest)

    @staticmethod
    def _keep_last(s: Session, lineage_id: int, deployment_id: int, newest: dict[str, int]) -> None:
        """:meth:`_keep_last_results` for the results ``newest`` (node name: result id) of one
        deployment."""
        names = sorted(newest)
        for i in range(0, len(names), _CHUNK):
            chunk = names[i : i + _CHUNK]
            now = {
                node: (result_id, deployment_id)
                for node, result_id, deployment_id in s.execute(
                    select(LastResultRow.node_name, LastResultRow.result_id, NodeResultRow.deployment_id)
                    .join(NodeResultRow, NodeResultRow.id == LastResultRow.result_id)
                    .where(LastResultRow.lineage_id == lineage_id, LastResultRow.node_name.in_(chunk))
                )
            }
            moved = [n for n in chunk if n not in now or (now[n][0] != newest[n] and now[n][1] <= deployment_id)]
            if not moved:
                continue
            s.execute(
                delete(LastResultRow).where(LastResultRow.lineage_id == lineage_id, LastResultRow.node_name.in_(moved))
            )
            s.execute(
                insert(LastResultRow),
                [{"lineage_id": lineage_id, "node_name": n, "result_id": newest[n]} for n in moved],
            )

    @retried
    def deployments(self, lineage: str | None = None, *, limit: int = 50) -> list[DeploymentRecord]:
        """The newest ``limit`` deployments (of ``lineage``, or of all), newest first. One recorded
        as running whose process (on this machine) is gone is ``interrupted``."""
        with self._db.session(write=False) as s:
            q = (
                select(DeploymentRow)
                .order_by(DeploymentRow.id.desc())
                .limit(max(1, min(limit, 10_000)))
                .options(
                    selectinload(DeploymentRow.results),
                    selectinload(DeploymentRow.lineage),
                    selectinload(DeploymentRow.version),
                )
            )
            if lineage is not None:
                q = q.where(DeploymentRow.lineage_id == self._lineage_row(s, lineage).id)
            return [
                DeploymentRecord(
                    id=d.id,
                    lineage=d.lineage.name,
                    version=d.version.number,
                    fingerprint=d.version.fingerprint,
                    actor=d.actor,
                    started_at=d.started_at,
                    finished_at=d.finished_at,
                    state=_state(d),
                    rollback=bool(d.rollback),
                    host=d.host,
                    pid=d.pid,
                    results=tuple(_node_result(r) for r in d.results),
                )
                for d in s.scalars(q)
            ]

    @retried
    def proven_versions(self, lineage: str, nodes: Collection[str] | None = None) -> dict[str, set[int]]:
        """By node (of ``nodes``, or every one): the versions of ``lineage`` a deploy proved there
        (deployed or verified, to the end), over the whole history, in one query per 500 nodes."""
        ok = (Outcome.OK, Outcome.UNCHANGED)
        with self._db.session(write=False) as s:
            lin = self._lineage_row(s, lineage)
            q = (
                select(NodeResultRow.node_name, VersionRow.number)
                .distinct()
                .join(DeploymentRow, DeploymentRow.id == NodeResultRow.deployment_id)
                .join(VersionRow, VersionRow.id == DeploymentRow.version_id)
                .where(DeploymentRow.lineage_id == lin.id, NodeResultRow.outcome.in_(ok))
            )
            names = sorted(set(nodes)) if nodes is not None else None
            chunks = (
                [q]
                if names is None
                else [q.where(NodeResultRow.node_name.in_(names[i : i + _CHUNK])) for i in range(0, len(names), _CHUNK)]
            )
            out: dict[str, set[int]] = {}
            for chunk in chunks:
                for node, number in s.execute(chunk):
                    out.setdefault(node, set()).add(number)
            return out

    @retried
    def proven(self, lineage: str, wanted: Mapping[str, Collection[int]]) -> dict[str, set[int]]:
        """Of the versions of ``lineage`` ``wanted`` on each node, those a deploy proved there (as
        :meth:`proven_versions` counts them). Each (node, version) is asked whether one proof
        exists, which the database answers at the first it finds, not reading the node's whole
        history; one query per 500 nodes."""
        ok = (Outcome.OK, Outcome.UNCHANGED)
        names = sorted(n for n, numbers in wanted.items() if numbers)
        if not names:
            return {}
        numbers = sorted({v for n in names for v in wanted[n]})
        out: dict[str, set[int]] = {}
        with self._db.session(write=False) as s:
            lin = self._lineage_row(s, lineage)
            proof = (
                select(NodeResultRow.id)
                .join(DeploymentRow, DeploymentRow.id == NodeResultRow.deployment_id)
                .where(
                    NodeResultRow.node_name == NodeRow.name,
                    DeploymentRow.version_id == VersionRow.id,
                    DeploymentRow.lineage_id == lin.id,
                    NodeResultRow.outcome.in_(ok),
                )
                .exists()
            )
            # every node asked about with every version asked about (one join), where a proof exists
            q = (
                select(NodeRow.name, VersionRow.number)
                .select_from(join(NodeRow, VersionRow, VersionRow.lineage_id == lin.id))
                .where(VersionRow.number.in_(numbers), proof)
            )
            for i in range(0, len(names), _CHUNK):
                for node, number in s.execute(q.where(NodeRow.name.in_(names[i : i + _CHUNK]))):
                    if number in wanted[node]:
                        out.setdefault(node, set()).add(number)
        return out

    @retried
    def deployment_counts(
        self, lineages: Collection[str] | None = None, *, limit: int = 10_000
    ) -> tuple[Counter[str], Counter[str]]:
        """Of the newest ``limit`` deployments (of ``lineages``, or of all): how many are ``ok``
        and ``failed`` (as :attr:`DeploymentRecord.ok` says), and their node results by outcome.
        Counted by the database, without reading a result."""
        good = [o for o in Outcome if o.ok]
        with self._db.session(write=False) as s:
            newest = select(DeploymentRow.id, DeploymentRow.state).order_by(DeploymentRow.id.desc())
            if lineages is not None:
                newest = newest.join(LineageRow, LineageRow.id == DeploymentRow.lineage_id).where(
                    LineageRow.name.in_(sorted(lineages))
                )
            picked = newest.limit(max(1, min(limit, 10_000))).subquery()
            bad = (
                select(func.count())
                .where(NodeResultRow.deployment_id == picked.c.id, NodeResultRow.outcome.not_in(good))
                .scalar_subquery()
            )
            whole: Counter[str] = Counter()
            for state, failures in s.execute(select(picked.c.state, bad)):
                whole["ok" if state is DeploymentState.FINISHED and not failures else "failed"] += 1
            per_node: Counter[str] = Counter()
            rows = s.execute(
                select(NodeResultRow.outcome, func.count())
                .join(picked, picked.c.id == NodeResultRow.deployment_id)
                .group_by(NodeResultRow.outcome)
            )
            for outcome, count in rows:
                per_node[Outcome(outcome).value] += count
            return whole, per_node

    @retried
    def last_results(self, lineage: str) -> dict[str, tuple[DeploymentRecord, NodeResult]]:
        """For each node, its most recent result in a deployment of ``lineage`` (an ``interrupted``
        placeholder while that deployment runs), with that deployment (whose ``results`` hold this
        node's result only: ``deployments()`` has them all). One query over
        ``deployment_last_results``, one row per node, whatever the length of the history."""
        with self._db.session(write=False) as s:
            rows = s.execute(
                select(
                    NodeResultRow.node_name,
                    NodeResultRow.outcome,
                    NodeResultRow.started_at,
                    NodeResultRow.finished_at,
                    NodeResultRow.failed_step,
                    NodeResultRow.output,
                    NodeResultRow.served_fingerprint,
                    DeploymentRow.id,
                    DeploymentRow.actor,
                    DeploymentRow.started_at,
                    DeploymentRow.finished_at,
                    DeploymentRow.state,
                    DeploymentRow.rollback,
                    DeploymentRow.host,
                    DeploymentRow.pid,
                    VersionRow.number,
                    VersionRow.fingerprint,
                )
                # from the lineage, so that one with no results yet still gives a row
                .select_from(LineageRow)
                .outerjoin(LastResultRow, LastResultRow.lineage_id == LineageRow.id)
                .outerjoin(NodeResultRow, NodeResultRow.id == LastResultRow.result_id)
                .outerjoin(DeploymentRow, DeploymentRow.id == NodeResultRow.deployment_id)
                .outerjoin(VersionRow, VersionRow.id == DeploymentRow.version_id)
                .where(LineageRow.name == lineage)
                .order_by(LastResultRow.node_name)
            ).all()
            if not rows:
                self._lineage_row(s, lineage)  # raises: no such lineage
        out: dict[str, tuple[DeploymentRecord, NodeResult]] = {}
        for row in rows:
            (node, outcome, r_start, r_end, step, output, served) = row[:7]
            (dep_id, actor, d_start, d_end, state, rollback, host, pid, number, fp) = row[7:]
            if node is None:  # the lineage's row, without results
                continue
            result = NodeResult(node, outcome, r_start, r_end, step, output, served)
            record = DeploymentRecord(
                id=dep_id,
                lineage=lineage,
                version=number,
                fingerprint=fp,
                actor=actor,
                started_at=d_start,
                finished_at=d_end,
                results=(result,),
                state=_state_of(state, host, pid),
                rollback=bool(rollback),
                host=host,
                pid=pid,
            )
            out[node] = (record, result)
        return out
