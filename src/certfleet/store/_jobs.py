"""The job queue in the store: work that a worker takes (``certfleet worker``), one job at a time
per row, with a lease.

A job is queued, then running under a lease (its owner, a token new at every claim, and the
time the lease ends), then done or failed. A claim takes queued jobs, and running ones whose
lease ended (their worker died or stalled), of one zone: ``SELECT ... FOR UPDATE SKIP LOCKED``
on PostgreSQL, inside a write transaction (writes are serialized, see ``_engine``; on SQLite
``BEGIN IMMEDIATE`` does the same). Every later write of the job names its token: one made with
an older token (a worker that lost its lease) is refused, so a job's outcome is written once.

Leases are given and compared with the database's clock on PostgreSQL (``now()``), so the
machines that share a store need not agree on the time; a lease is many heartbeats long.

The deploy job is one node of a deployment: :meth:`JobsMixin.enqueue_deployment` records the
deployment and its jobs in one transaction, :meth:`JobsMixin.finish_node` writes the node's
result and ends its job in one, and the deployment ends with its last job.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session, selectinload

from certfleet.clock import utc_now
from certfleet.errors import EnvError, InputError, NotFoundError
from certfleet.fleet.model import NodeSpec, Outcome
from certfleet.store._base import _bounded_output, _check_text, check_name
from certfleet.store._deployments import DeploymentsMixin
from certfleet.store._engine import retried
from certfleet.store._models import DeploymentRow, JobRow, NodeResultRow, NodeRow
from certfleet.store._records import DeploymentState, NodeResult

__all__ = [
    "DEPLOY",
    "MAX_JOB_RESULT_BYTES",
    "JobRecord",
    "JobState",
    "JobsMixin",
    "Lease",
    "ZoneJobs",
]

DEPLOY = "deploy"
MAX_JOB_RESULT_BYTES = 64 * 1024  # what a job of another kind says it did (a probe, a pass's summary)
MAX_JOB_PAYLOAD_BYTES = 16 * 1024  # what a job is asked to do


class JobState:
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    OPEN = (QUEUED, RUNNING)


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: int
    kind: str
    lineage: str
    node: str | None
    zone: str | None
    state: str
    attempts: int
    deployment: int | None
    created_at: dt.datetime
    payload: dict[str, Any]
    lease_owner: str | None = None
    lease_until: dt.datetime | None = None
    heartbeat_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    result: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        def iso(v: dt.datetime | None) -> str | None:
            return v.isoformat() if v is not None else None

        return {
            "id": self.id,
            "kind": self.kind,
            "lineage": self.lineage,
            "node": self.node,
            "zone": self.zone,
            "state": self.state,
            "attempts": self.attempts,
            "deployment": self.deployment,
            "lease_owner": self.lease_owner,
            "lease_until": iso(self.lease_until),
            "heartbeat_at": iso(self.heartbeat_at),
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "result": self.result,
        }


@dataclass(frozen=True, slots=True)
class ZoneJobs:
    """A zone's open jobs: how many are queued and running, and since when the oldest queued one waits."""

    zone: str | None
    queued: int
    running: int
    oldest_queued: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "queued": self.queued,
            "running": self.running,
            "oldest_queued": self.oldest_queued.isoformat() if self.oldest_queued else None,
        }


@dataclass(frozen=True, slots=True)
class Lease:
    """A job held by a worker: every write about it names ``token``."""

    job: JobRecord
    owner: str
    token: str


def _record(row: JobRow) -> JobRecord:
    return JobRecord(
        id=row.id,
        kind=row.kind,
        lineage=row.lineage,
        node=row.node,
        zone=row.zone,
        state=row.state,
        attempts=row.attempts,
        deployment=row.deployment_id,
        created_at=row.created_at,
        payload=dict(row.payload or {}),
        lease_owner=row.lease_owner,
        lease_until=row.lease_until,
        heartbeat_at=row.heartbeat_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        result=row.result,
    )


def _job_filter(deployment: int | None, states: Sequence[str], lineages: Collection[str] | None) -> list[Any]:
    conds: list[Any] = []
    if deployment is not None:
        conds.append(JobRow.deployment_id == deployment)
    if states:
        conds.append(JobRow.state.in_(list(states)))
    if lineages is not None:  # a lineage name is never empty: the jobs of no lineage are left out
        conds.append(JobRow.lineage.in_(sorted(lineages)))
    return conds


def _zone_is(column: Any, zone: str | None) -> Any:
    return column.is_(None) if zone is None else column == zone


class JobsMixin(DeploymentsMixin):
    """The queue; a deploy job writes its node's result with the deployments' own code, in the
    same transaction."""

    # -- deployments as jobs --------------------------------------------------------------------

    @retried
    def enqueue_deployment(
        self,
        lineage: str,
        version: int,
        nodes: Sequence[str],
        *,
        rollback: bool = False,
        settled: Collection[str] = (),
    ) -> int:
        """Record a deployment of ``version`` to ``nodes`` as running, with one deploy job per node
        in the node's zone, in one transaction; its id. Refused while another deployment of the
        lineage still has jobs to do. It belongs to no process: it ends with its last job.
        ``rollback``: it is recorded as a rollback (to an earlier version). ``settled``: the nodes
        whose latest result, before this deployment, was this version proven; their jobs say so,
        since once the deployment is recorded its placeholders are every node's latest result."""
        for node in nodes:
            _check_text("a node name", node, 64)
        with self._db.session(write=True) as s:
            self._no_open_jobs(s, lineage)
            now = utc_now()
            row = self._start(s, lineage, version, nodes, started_at=now, rollback=rollback)
            row.host, row.pid = None, None
            zones = {
                str(n): z for n, z in s.execute(select(NodeRow.name, NodeRow.zone).where(NodeRow.name.in_(list(nodes))))
            }
            for node in dict.fromkeys(nodes):
                s.add(
                    JobRow(
                        kind=DEPLOY,
                        deployment_id=row.id,
                        lineage=lineage,
                        node=node,
                        zone=zones.get(node),
                        payload={"version": version, "settled": node in settled},
                        state=JobState.QUEUED,
                        attempts=0,
                        created_at=now,
                    )
                )
            return row.id

    @retried
    def check_no_open_jobs(self, lineage: str) -> None:
        """Raise :class:`EnvError` while a deployment of ``lineage`` has jobs queued or running:
        a deploy run by its own process (``fleet.rollout``) must not meet the workers on a node."""
        with self._db.session(write=False) as s:
            self._no_open_jobs(s, lineage)

    @staticmethod
    def _no_open_jobs(s: Session, lineage: str) -> None:
        open_ = s.scalar(
            select(JobRow.deployment_id)
            .where(JobRow.lineage == lineage, JobRow.kind == DEPLOY, JobRow.state.in_(JobState.OPEN))
            .limit(1)
        )
        if open_ is not None:
            raise EnvError(
                f"a deploy of lineage {lineage} is already queued or running (deployment {open_})",
                hint="`certfleet jobs` shows its jobs; wait for them to finish",
            )

    # -- jobs of the other kinds ----------------------------------------------------------------

    @retried
    def enqueue_job(
        self,
        kind: str,
        *,
        lineage: str = "",
        node: str | None = None,
        zone: str | None = None,
        payload: Mapping[str, Any] | None = None,
        unique: bool = False,
    ) -> JobRecord:
        """Queue a job of ``kind`` (not a deploy: those are :meth:`enqueue_deployment`'s) for the
        workers of ``zone``; its record. ``unique``: when a job of that kind, lineage, node and
        zone is queued or running already, that one is returned and none is added (writes are
        serialized, so two callers at once get the same job)."""
        return self.enqueue_jobs(kind, [(lineage, node, zone, dict(payload or {}))], unique=unique)[0]

    @retried
    def enqueue_jobs(
        self,
        kind: str,
        jobs: Sequence[tuple[str, str | None, str | None, Mapping[str, Any]]],
        *,
        unique: bool = False,
    ) -> list[JobRecord]:
        """:meth:`enqueue_job` for many (lineage, node, zone, payload) in one transaction; their
        records, in order."""
        if kind == DEPLOY:
            raise InputError("a deploy is queued with its deployment (enqueue_deployment)")
        check_name("job kind", kind)
        for lineage, node, zone, payload in jobs:
            _check_text("a lineage name", lineage, 64)
            if node is not None:
                _check_text("a node name", node, 64)
            if zone is not None:
                check_name("zone", zone)
            if len(json.dumps(payload)) > MAX_JOB_PAYLOAD_BYTES:
                raise InputError(f"a {kind} job's payload is larger than 16 KiB")
        with self._db.session(write=True) as s:
            now = utc_now()
            found: dict[tuple[str, str | None, str | None], JobRow] = {}
            if unique and jobs:
                open_rows = s.scalars(select(JobRow).where(JobRow.kind == kind, JobRow.state.in_(JobState.OPEN)))
                for r in open_rows:
                    found.setdefault((r.lineage, r.node, r.zone), r)
            rows: list[JobRow] = []
            for lineage, node, zone, payload in jobs:
                key = (lineage, node, zone)
                row = found.get(key) if unique else None
                if row is None:
                    row = JobRow(
                        kind=kind, lineage=lineage, node=node, zone=zone, payload=dict(payload),
                        state=JobState.QUEUED, attempts=0, created_at=now,
                    )  # fmt: skip
                    s.add(row)
                    found[key] = row
                rows.append(row)
            s.flush()
            return [_record(r) for r in rows]

    @retried
    def finish_job(self, held: Lease, *, ok: bool, result: Mapping[str, Any]) -> bool:
        """A job of another kind than deploy has ended: ``result`` (a JSON object of at most
        64 KiB) written and the job done (``ok``) or failed, fenced by its token. False, and
        nothing written, when the lease was lost or the job ended already."""
        if held.job.kind == DEPLOY:
            raise InputError("a deploy job ends with its node's result (finish_nodes)")
        body = dict(result)
        if len(json.dumps(body)) > MAX_JOB_RESULT_BYTES:
            raise InputError(f"a {held.job.kind} job's result is larger than 64 KiB")
        with self._db.session(write=True) as s:
            row = self._held(s, held)
            if row is None:
                return False
            row.state = JobState.DONE if ok else JobState.FAILED
            row.finished_at = utc_now()
            row.result = body
            row.lease_until = None
            return True

    @retried
    def job(self, job_id: int) -> JobRecord:
        """One job as it stands."""
        with self._db.session(write=False) as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise NotFoundError(f"no job {job_id}")
            return _record(row)

    @retried
    def jobs_by_id(self, ids: Collection[int]) -> list[JobRecord]:
        """These jobs as they stand, by id (those that exist)."""
        wanted = sorted(set(ids))
        out: list[JobRecord] = []
        with self._db.session(write=False) as s:
            for i in range(0, len(wanted), 500):
                out.extend(_record(r) for r in s.scalars(select(JobRow).where(JobRow.id.in_(wanted[i : i + 500]))))
        return sorted(out, key=lambda j: j.id)

    @retried
    def prune_jobs(self, kinds: Collection[str], *, before: dt.datetime) -> int:
        """Forget the ended jobs of ``kinds`` (never deploys: theirs is the deployment's history)
        that ended before ``before``; how many."""
        wanted = sorted(set(kinds) - {DEPLOY})
        if not wanted:
            return 0
        with self._db.session(write=True) as s:
            ended = (JobState.DONE, JobState.FAILED)
            cond = and_(JobRow.kind.in_(wanted), JobRow.state.in_(ended), JobRow.finished_at < before)
            count = s.scalar(select(func.count(JobRow.id)).where(cond)) or 0
            if count:
                s.execute(delete(JobRow).where(cond))
            return int(count)

    # -- claiming and holding -------------------------------------------------------------------

    @retried
    def claim_jobs(
        self,
        owner: str,
        *,
        zone: str | None,
        lease: float,
        limit: int = 1,
        deployment: int | None = None,
        kinds: Collection[str] = (),
        job: int | None = None,
    ) -> list[Lease]:
        """Take up to ``limit`` jobs of ``zone`` (None: of nodes in no zone) for ``lease`` seconds:
        queued ones, and running ones whose lease has ended; oldest first. Each gets a new token.
        ``deployment``, ``kinds``, ``job``: only the jobs of that deployment, of those kinds, that one."""
        with self._db.session(write=True) as s:
            now = self._lease_clock(s)
            q = (
                select(JobRow)
                .where(
                    or_(
                        # a queued job's lease_until, when set, is when it may be taken again
                        and_(
                            JobRow.state == JobState.QUEUED,
                            or_(JobRow.lease_until.is_(None), JobRow.lease_until < now),
                        ),
                        and_(JobRow.state == JobState.RUNNING, JobRow.lease_until < now),
                    ),
                    _zone_is(JobRow.zone, zone),
                )
                .order_by(JobRow.id)
                .limit(max(1, limit))
                .with_for_update(skip_locked=True)
            )
            if deployment is not None:
                q = q.where(JobRow.deployment_id == deployment)
            if kinds:
                q = q.where(JobRow.kind.in_(sorted(kinds)))
            if job is not None:
                q = q.where(JobRow.id == job)
            taken = []
            for row in s.scalars(q):
                row.state = JobState.RUNNING
                row.attempts += 1
                row.lease_owner = owner[:128]
                row.lease_token = secrets.token_hex(16)
                row.lease_until = now + dt.timedelta(seconds=lease)
                row.heartbeat_at = now
                row.started_at = row.started_at or now
                taken.append(row)
            s.flush()
            return [Lease(job=_record(r), owner=owner, token=str(r.lease_token)) for r in taken]

    @retried
    def heartbeat(self, leases: Sequence[Lease], *, lease: float) -> set[int]:
        """Push the leases on by ``lease`` seconds; the ids of the jobs still held (a job whose
        token changed was taken over, or ended)."""
        if not leases:
            return set()
        tokens = {le.job.id: le.token for le in leases}
        with self._db.session(write=True) as s:
            now = self._lease_clock(s)
            held = set()
            rows = s.scalars(select(JobRow).where(JobRow.id.in_(list(tokens)), JobRow.state == JobState.RUNNING))
            for row in rows:
                if row.lease_token == tokens[row.id]:
                    row.lease_until = now + dt.timedelta(seconds=lease)
                    row.heartbeat_at = now
                    held.add(row.id)
            return held

    @retried
    def release_job(self, held: Lease, *, delay: float = 0) -> bool:
        """Give a job back to the queue, untouched (a worker stopping before it began); with
        ``delay``, no worker takes it again for that many seconds."""
        with self._db.session(write=True) as s:
            row = self._held(s, held)
            if row is None:
                return False
            row.state = JobState.QUEUED
            row.lease_owner = row.lease_token = None
            row.lease_until = self._lease_clock(s) + dt.timedelta(seconds=delay) if delay > 0 else None
            return True

    def finish_node(self, held: Lease, result: NodeResult) -> bool:
        """The node of a deploy job has its result: written, and the job done, in one transaction;
        the deployment is finished with its last job. False, and nothing written, when the lease
        was lost (another worker holds the job now) or the node's result was written already."""
        return held.job.id in self.finish_nodes([(held, result)])

    @retried
    def finish_nodes(self, pairs: Sequence[tuple[Lease, NodeResult]]) -> set[int]:
        """:meth:`finish_node` for many jobs in one transaction (a few statements, not a few per
        node): the ids of the jobs whose result was written. Each is fenced by its own token (a
        job whose lease was lost writes nothing and stays as it is), each result is written only
        over its node's ``interrupted`` placeholder (a job whose node has its result already ends
        without writing it), each job ends with its result, and a deployment whose last open job
        is among them is finished."""
        for _, result in pairs:
            _check_text("a failed step", result.failed_step, 32)
        leases = {held.job.id: (held, result) for held, result in reversed(pairs)}  # the first of a job
        if not leases:
            return set()
        with self._db.session(write=True) as s:
            rows = s.scalars(select(JobRow).where(JobRow.id.in_(sorted(leases))).order_by(JobRow.id).with_for_update())
            held_rows = [r for r in rows if r.state == JobState.RUNNING and r.lease_token == leases[r.id][0].token]
            now = utc_now()
            written: set[int] = set()
            by_dep: dict[int, list[JobRow]] = {}
            for row in held_rows:
                result = leases[row.id][1]
                if row.deployment_id is None:  # a job of no deployment (a kind this certfleet does not run)
                    row.state = JobState.DONE if result.outcome.ok else JobState.FAILED
                    row.finished_at = now
                    row.result = {"outcome": result.outcome.value, "error": _bounded_output(result.output)}
                    row.lease_until = None
                    written.add(row.id)
                else:
                    by_dep.setdefault(row.deployment_id, []).append(row)
            if not by_dep:
                return written
            deps = {d.id: d for d in s.scalars(select(DeploymentRow).where(DeploymentRow.id.in_(sorted(by_dep))))}
            for dep_id in by_dep:
                if dep_id not in deps:
                    raise InputError(f"no deployment {dep_id}")
            # these nodes' rows only: a deployment of N nodes never reads N results per batch
            current: dict[tuple[int, str], NodeResultRow] = {}
            for dep_id, jobs in by_dep.items():
                names = sorted({leases[r.id][1].node for r in jobs})
                for i in range(0, len(names), 500):
                    hits = s.scalars(
                        select(NodeResultRow).where(
                            NodeResultRow.deployment_id == dep_id, NodeResultRow.node_name.in_(names[i : i + 500])
                        )
                    )
                    for nr in hits:
                        current.setdefault((dep_id, nr.node_name), nr)
            newest: dict[int, dict[str, NodeResultRow]] = {}
            for dep_id, jobs in by_dep.items():
                dep = deps[dep_id]
                for row in jobs:
                    result = leases[row.id][1]
                    found = current.get((dep_id, result.node))
                    duplicate = found is not None and found.outcome is not Outcome.INTERRUPTED
                    if not duplicate:
                        if found is None:
                            found = current[(dep_id, result.node)] = NodeResultRow(
                                deployment_id=dep_id, node_name=result.node
                            )
                            s.add(found)
                        self._fill_result(found, result)
                        dep.finished_at = max(dep.finished_at, result.finished_at)
                        newest.setdefault(dep_id, {})[result.node] = found
                        # the same node twice in a batch (never from one deployment's jobs): once
                        current[(dep_id, result.node)] = found
                        written.add(row.id)
                    row.state = JobState.DONE if result.outcome.ok else JobState.FAILED
                    row.finished_at = now
                    row.result = {"outcome": result.outcome.value, "step": result.failed_step, "duplicate": duplicate}
                    row.lease_until = None
            s.flush()
            for dep_id, results in newest.items():
                self._keep_last(s, deps[dep_id].lineage_id, dep_id, {n: r.id for n, r in results.items()})
            left = dict(
                s.execute(
                    select(JobRow.deployment_id, func.count(JobRow.id))
                    .where(JobRow.deployment_id.in_(sorted(by_dep)), JobRow.state.in_(JobState.OPEN))
                    .group_by(JobRow.deployment_id)
                ).all()
            )
            for dep_id in sorted(by_dep):
                if not left.get(dep_id) and deps[dep_id].state is DeploymentState.RUNNING:
                    dep = self._deployment_row(s, dep_id)  # its results, once, to finish it
                    self._finish(s, dep, [], state=DeploymentState.FINISHED, finished_at=None)
            return written

    def _lease_clock(self, s: Session) -> dt.datetime:
        """The time leases are given and compared with: on PostgreSQL the server's own (the
        start of this transaction), so that workers on machines whose clocks drift apart still
        agree on when a lease ends; on SQLite, one machine's store, this machine's."""
        if self._db.is_sqlite:
            return utc_now()
        at = s.scalar(select(func.now()))
        return at.astimezone(dt.UTC) if isinstance(at, dt.datetime) else utc_now()

    @staticmethod
    def _held(s: Session, held: Lease) -> JobRow | None:
        row = s.get(JobRow, held.job.id, with_for_update=True)
        if row is None or row.state != JobState.RUNNING or row.lease_token != held.token:
            return None
        return row

    # -- reading --------------------------------------------------------------------------------

    @retried
    def node_specs(self, names: Collection[str]) -> dict[str, NodeSpec]:
        """The nodes named ``names`` that exist, by name, read together (a worker's batch of jobs)."""
        wanted = sorted(set(names))
        specs: dict[str, NodeSpec] = {}
        with self._db.session(write=False) as s:
            for i in range(0, len(wanted), 500):
                q = select(NodeRow).where(NodeRow.name.in_(wanted[i : i + 500])).options(selectinload(NodeRow.targets))
                specs.update((r.name, self._spec(r)) for r in s.scalars(q))
        return specs

    @retried
    def jobs(
        self,
        *,
        deployment: int | None = None,
        states: Sequence[str] = (),
        limit: int = 200,
        offset: int = 0,
        lineages: Collection[str] | None = None,
    ) -> list[JobRecord]:
        """Jobs, newest first (of one deployment, in some states; past the ``offset`` newest;
        ``lineages``: only of those, so never one of no lineage)."""
        with self._db.session(write=False) as s:
            q = select(JobRow).order_by(JobRow.id.desc()).limit(max(1, min(limit, 100_000)))
            q = q.offset(max(0, offset)).where(*_job_filter(deployment, states, lineages))
            return [_record(r) for r in s.scalars(q)]

    @retried
    def count_jobs(
        self, *, deployment: int | None = None, states: Sequence[str] = (), lineages: Collection[str] | None = None
    ) -> int:
        """How many jobs :meth:`jobs` would list with no limit."""
        with self._db.session(write=False) as s:
            q = select(func.count(JobRow.id)).where(*_job_filter(deployment, states, lineages))
            return int(s.scalar(q) or 0)

    @retried
    def job_counts(self, *, lineages: Collection[str] | None = None) -> list[ZoneJobs]:
        """The open jobs of each zone that has some (None: of no zone), in one grouped query:
        how many are queued and running, and when the oldest queued one was queued."""
        with self._db.session(write=False) as s:
            q = (
                select(JobRow.zone, JobRow.state, func.count(JobRow.id), func.min(JobRow.created_at))
                .where(*_job_filter(None, JobState.OPEN, lineages))
                .group_by(JobRow.zone, JobRow.state)
            )
            found: dict[str | None, dict[str, tuple[int, dt.datetime | None]]] = {}
            oldest: dt.datetime | None
            for zone, state, count, oldest in s.execute(q):
                found.setdefault(zone, {})[str(state)] = (int(count), oldest)
        out = []
        for zone in sorted(found, key=lambda z: (z is not None, z or "")):
            queued, oldest = found[zone].get(JobState.QUEUED, (0, None))
            running = found[zone].get(JobState.RUNNING, (0, None))[0]
            out.append(ZoneJobs(zone, queued, running, oldest))  # min() keeps the column's type: aware UTC
        return out
