"""A running deployment's progress, node by node, in the store: whichever process runs a deploy (a
console, ``certfleet deploy``, a worker), any process sharing the store can follow it live.

Each node's steps are written as they begin (``deployment_progress``, one row per node and
deployment, rewritten in place), and the node is marked done once its result is in
``deployment_results``. The writer batches: the steps of many nodes go in one transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from certfleet.clock import utc_now
from certfleet.errors import NotFoundError
from certfleet.store._base import StoreBase, _check_text, _node_result, _state_of
from certfleet.store._engine import retried
from certfleet.store._models import DeploymentProgressRow, DeploymentRow
from certfleet.store._records import DeploymentRecord, DeploymentState, NodeResult

__all__ = ["DeploymentProgress", "NodeProgress", "ProgressMixin"]

_MAX_STEPS = 255  # characters of the steps column: the newest steps are kept


@dataclass(frozen=True, slots=True)
class NodeProgress:
    """How far one node is: the steps it began, and its result once it is done."""

    node: str
    steps: tuple[str, ...]
    result: NodeResult | None  # None while the node is not done

    @property
    def done(self) -> bool:
        return self.result is not None

    @property
    def current(self) -> str | None:
        return None if self.done or not self.steps else self.steps[-1]

    def to_dict(self) -> dict[str, Any]:
        outcome: dict[str, Any] | None = None
        if self.result is not None:
            message, _, output = self.result.output.partition("\n")
            outcome = {
                "outcome": self.result.outcome.value,
                "step": self.result.failed_step,
                "message": message,
                "output": output,
                "served": self.result.served_fingerprint,
                "started_at": self.result.started_at.isoformat(),
                "finished_at": self.result.finished_at.isoformat(),
            }
        return {
            "node": self.node,
            "steps": list(self.steps),
            "current": self.current,
            "done": self.done,
            "outcome": outcome,
        }


@dataclass(frozen=True, slots=True)
class DeploymentProgress:
    """A deployment as it runs (or ran): the record, and each of its nodes' progress."""

    deployment: DeploymentRecord
    nodes: tuple[NodeProgress, ...]

    @property
    def running(self) -> bool:
        return self.deployment.state is DeploymentState.RUNNING

    @property
    def ok(self) -> bool:
        return self.deployment.ok


class ProgressMixin(StoreBase):
    @retried
    def record_progress(
        self, deployment: int, steps: Mapping[str, Sequence[str]], *, done: Collection[str] = ()
    ) -> None:
        """The steps each node in ``steps`` has begun in ``deployment`` so far (all of them, in
        order), in one transaction; the nodes in ``done`` have their results recorded. One small
        row per node, written over."""
        if not steps:
            return
        now = utc_now()
        rows = []
        for node, taken in steps.items():
            _check_text("a node name", node, 64)
            joined = ",".join(taken)
            if len(joined) > _MAX_STEPS:
                joined = joined[-_MAX_STEPS:].partition(",")[2]
            rows.append(
                {
                    "deployment_id": deployment,
                    "node_name": node,
                    "steps": joined,
                    "done": node in done,
                    "updated_at": now,
                }
            )
        # each dialect's own upsert, imported when used: PostgreSQL's pulls in all its drivers
        if self._db.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
        stmt = insert(DeploymentProgressRow)
        stmt = stmt.on_conflict_do_update(
            index_elements=["deployment_id", "node_name"],
            set_={"steps": stmt.excluded.steps, "done": stmt.excluded.done, "updated_at": stmt.excluded.updated_at},
        )
        with self._db.session(write=True) as s:
            s.execute(stmt, rows)

    @retried
    def deployment_progress(self, deployment: int) -> DeploymentProgress:
        """Deployment ``deployment`` and each node's progress: the steps it began and, once it is
        done (or the deployment is over), its result. Two queries, whatever the number of nodes."""
        with self._db.session(write=False) as s:
            row = s.scalar(
                select(DeploymentRow)
                .where(DeploymentRow.id == deployment)
                .options(
                    selectinload(DeploymentRow.results),
                    selectinload(DeploymentRow.lineage),
                    selectinload(DeploymentRow.version),
                )
            )
            if row is None:
                raise NotFoundError(f"no deployment {deployment}", hint="the history lists every deployment")
            progress = {
                p.node_name: p
                for p in s.scalars(
                    select(DeploymentProgressRow).where(DeploymentProgressRow.deployment_id == deployment)
                )
            }
            results = tuple(_node_result(r) for r in row.results)
            record = DeploymentRecord(
                id=row.id,
                lineage=row.lineage.name,
                version=row.version.number,
                fingerprint=row.version.fingerprint,
                actor=row.actor,
                started_at=row.started_at,
                finished_at=row.finished_at,
                results=results,
                state=_state_of(row.state, row.host, row.pid),
                rollback=bool(row.rollback),
                host=row.host,
                pid=row.pid,
            )
        over = record.state is not DeploymentState.RUNNING
        nodes = []
        for result in results:
            p = progress.get(result.node)
            done = over or (p is not None and p.done)
            nodes.append(
                NodeProgress(
                    node=result.node,
                    steps=tuple(p.steps.split(",")) if p is not None and p.steps else (),
                    result=result if done else None,
                )
            )
        return DeploymentProgress(record, tuple(nodes))
