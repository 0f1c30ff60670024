"""The store: one object that opens the database and offers a small API of frozen values."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, selectinload

from certfleet.errors import StoreError
from certfleet.store._base import (
    _bounded_output,
    _check_text,
    _now,
)
from certfleet.store._engine import DB_FILE, Database, busy_timeout, database_url, default_home, retried
from certfleet.store._locks import AdvisoryDeployLock, DeployLock, FileDeployLock
from certfleet.store._models import (
    DeploymentRow,
    LastResultRow,
    LineageRow,
    NodeResultRow,
    VersionRow,
)
from certfleet.store._nodes import NodesMixin
from certfleet.store._records import (
    AuditAction,
    DeploymentRecord,
    NodeResult,
)
from certfleet.store._versions import VersionsMixin

__all__ = ["Store"]

_CHUNK = 500  # names per statement: far below SQLite's bound on parameters


class Store(NodesMixin, VersionsMixin):
    """The certfleet store. Open it with :meth:`init` or :meth:`open`; every method is one
    short transaction and returns frozen values; every change is written to the audit trail."""

    @classmethod
    def init(cls, home: Path | None = None, *, actor: str | None = None) -> Store:
        """Create the store (folder 0700, database, master key or passphrase salt) or, when it
        exists, bring its schema up to date and open it; ``created`` tells which."""
        home = (home or default_home()).expanduser()
        try:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            home.chmod(0o700)
        except OSError as exc:
            raise StoreError(f"cannot create the certfleet home {home}: {exc.strerror}") from exc
        url = database_url(home)
        if url == f"sqlite:///{home / DB_FILE}":
            # the database holds sealed keys and the passphrase salt: 0600 before SQLite opens it
            try:
                os.close(os.open(home / DB_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600))
            except OSError as exc:
                raise StoreError(f"cannot create the database in {home}: {exc.strerror}") from exc
        db = Database(url, timeout=busy_timeout())
        try:
            db.upgrade()
            store = cls(home, db, actor=actor)
            store.created = store._init_vault()
            if store.created:
                store.audit(AuditAction.INIT, {"home": str(home), "keys": store.key_protection})
            else:  # a store made earlier, maybe on another machine: this one must hold its secret
                store._check_secret(required=True)
        except BaseException:
            db.dispose()
            raise
        return store

    @classmethod
    def open(cls, home: Path | None = None, *, actor: str | None = None) -> Store:
        """Open an existing store; migrations newer than its schema are applied first."""
        home = (home or default_home()).expanduser()
        url = database_url(home)
        if url == f"sqlite:///{home / DB_FILE}" and not (home / DB_FILE).is_file():
            raise StoreError(f"no certfleet store in {home}", hint="run `certfleet init`")
        db = Database(url, timeout=busy_timeout())
        try:
            current = db.current()
            if not current:
                raise StoreError(f"no certfleet store in {home}", hint="run `certfleet init`")
            if current != db.heads():
                db.upgrade()
            store = cls(home, db, actor=actor)
            if store._setting("vault.mode") is None:
                raise StoreError(f"the certfleet store in {home} was never finished", hint="run `certfleet init`")
            store._check_secret(required=False)
        except BaseException:
            db.dispose()
            raise
        return store

    def with_actor(self, actor: str) -> Store:
        """The same store, recording changes in the name of ``actor`` (the console's account)."""
        other = Store(self.home, self._db, actor=actor)
        other._vault = self._vault
        return other

    def close(self) -> None:
        self._db.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def key_protection(self) -> str:
        """How private keys are sealed: ``keyfile`` (master.key) or ``passphrase``."""
        return self._setting("vault.mode") or "keyfile"

    @property
    def url(self) -> str:
        return self._db.url

    def schema_revision(self) -> set[str]:
        return self._db.current()

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction on the store's database, for a layer that keeps its own tables there
        (the console): committed when the block ends, rolled back when it raises.

        ``write=True`` takes the write lock at once, as the store's own changes do. A lock held
        past the busy timeout raises :class:`~certfleet.errors.StoreBusyError`, any other
        database failure :class:`~certfleet.errors.StoreError`. Rows must not leave the block.
        """
        with self._db.session(write=write) as s:
            yield s

    def deploy_lock(self, lineage: str) -> DeployLock:
        """The right to deploy ``lineage``, not taken yet: ``acquire()`` (or ``with``) takes it
        without waiting, or raises :class:`~certfleet.errors.EnvError` "a deploy of lineage web is
        already running (pid N)". An ``flock`` under the home on SQLite, a PostgreSQL advisory
        lock held for the session otherwise (one store, several machines)."""
        if self._db.is_sqlite:
            return FileDeployLock(self.home, lineage)
        return AdvisoryDeployLock(self._db, lineage, self._lineage_id(lineage))

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
    ) -> int:
        """Keep the outcome of deploying ``version`` of ``lineage``, one result per node; its id."""
        results = list(results)
        for r in results:
            _check_text("a node name", r.node, 64)
            _check_text("a failed step", r.failed_step, 32)
        with self._db.session(write=True) as s:
            lin = self._lineage_row(s, lineage)
            ver = self._version_row(s, lin, version)
            now = _now()
            row = DeploymentRow(
                lineage_id=lin.id,
                version_id=ver.id,
                actor=self.actor,
                started_at=started_at or min((r.started_at for r in results), default=now),
                finished_at=max((r.finished_at for r in results), default=now),
                results=[
                    NodeResultRow(
                        node_name=r.node,
                        outcome=r.outcome,
                        failed_step=r.failed_step,
                        output=_bounded_output(r.output),
                        served_fingerprint=r.served_fingerprint,
                        started_at=r.started_at,
                        finished_at=r.finished_at,
                    )
                    for r in results
                ],
            )
            s.add(row)
            s.flush()
            self._keep_last_results(s, lin.id, row.results)
            self._audit(
                s,
                AuditAction.DEPLOY,
                {
                    "lineage": lineage,
                    "version": version,
                    "deployment": row.id,
                    "nodes": {r.node: r.outcome.value for r in results},
                },
            )
            return row.id

    @staticmethod
    def _keep_last_results(s: Session, lineage_id: int, results: list[NodeResultRow]) -> None:
        # the newest result of each node, replaced row by row: writes are serialized (see _engine)
        newest = {r.node_name: r.id for r in sorted(results, key=lambda r: r.id)}
        names = sorted(newest)
        for i in range(0, len(names), _CHUNK):
            chunk = names[i : i + _CHUNK]
            s.execute(
                delete(LastResultRow).where(LastResultRow.lineage_id == lineage_id, LastResultRow.node_name.in_(chunk))
            )
            s.execute(
                insert(LastResultRow),
                [{"lineage_id": lineage_id, "node_name": n, "result_id": newest[n]} for n in chunk],
            )

    @retried
    def deployments(self, lineage: str | None = None, *, limit: int = 50) -> list[DeploymentRecord]:
        """The newest ``limit`` deployments (of ``lineage``, or of all), newest first."""
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
                    results=tuple(
                        NodeResult(
                            node=r.node_name,
                            outcome=r.outcome,
                            started_at=r.started_at,
                            finished_at=r.finished_at,
                            failed_step=r.failed_step,
                            output=r.output,
                            served_fingerprint=r.served_fingerprint,
                        )
                        for r in d.results
                    ),
                )
                for d in s.scalars(q)
            ]

    @retried
    def last_results(self, lineage: str) -> dict[str, tuple[DeploymentRecord, NodeResult]]:
        """For each node, its most recent result in a deployment of ``lineage``, with that
        deployment (whose ``results`` hold this node's result only: ``deployments()`` has them
        all). One query over a table of one row per node, whatever the length of the history."""
        with self._db.session(write=False) as s:
            lineage_id = self._lineage_row(s, lineage).id
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
                    VersionRow.number,
                    VersionRow.fingerprint,
                )
                .select_from(LastResultRow)
                .join(NodeResultRow, NodeResultRow.id == LastResultRow.result_id)
                .join(DeploymentRow, DeploymentRow.id == NodeResultRow.deployment_id)
                .join(VersionRow, VersionRow.id == DeploymentRow.version_id)
                .where(LastResultRow.lineage_id == lineage_id)
                .order_by(LastResultRow.node_name)
            ).all()
        out: dict[str, tuple[DeploymentRecord, NodeResult]] = {}
        for node, outcome, r_start, r_end, step, output, served, dep_id, actor, d_start, d_end, number, fp in rows:
            result = NodeResult(node, outcome, r_start, r_end, step, output, served)
            record = DeploymentRecord(dep_id, lineage, number, fp, actor, d_start, d_end, (result,))
            out[node] = (record, result)
        return out
