"""Each node deployed by one worker at a time: a lock per node, held around its deploy."""

from __future__ import annotations

import contextlib

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from certfleet.errors import InputError
from certfleet.store._engine import DEPLOY_LOCK_CLASS, Database

__all__ = ["NODE_LOCK_CLASS", "NodeLocks"]

NODE_LOCK_CLASS = DEPLOY_LOCK_CLASS + 1  # per node (its id), held while a worker deploys it

_NODE_ID = text("SELECT id FROM nodes WHERE name = :name")
_TRY = text("SELECT pg_try_advisory_lock(:cls, :obj)")
_UNLOCK = text("SELECT pg_advisory_unlock(:cls, :obj)")


class NodeLocks:
    """Each node deployed by one worker at a time, whatever their leases say: on PostgreSQL a
    session-level advisory lock per node (class ``NODE_LOCK_CLASS``, the node's id), all held on
    one connection of their own, which the server drops when it ends (a worker killed with
    SIGKILL too): a killed worker's locks go with it. On SQLite the store is one machine's, where
    deploys run in the process that asked under the lineage's lock: nothing more to take.

    :meth:`acquire` does not wait: False when another session holds the node. Not for use from
    two threads at once; :meth:`close` lets every lock go."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: Connection | None = None
        self._held: dict[str, int] = {}

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._db.engine.connect()
        return self._conn

    def acquire(self, node: str) -> bool:
        if self._db.is_sqlite:
            self._held[node] = 0
            return True
        if node in self._held:
            return True
        conn = self._connection()
        try:
            node_id = conn.execute(_NODE_ID, {"name": node}).scalar()
            if node_id is None:
                conn.commit()
                raise InputError(f"no node {node}")
            got = bool(conn.execute(_TRY, {"cls": NODE_LOCK_CLASS, "obj": node_id}).scalar())
            conn.commit()  # a session lock outlives the transaction; no snapshot kept open
        except DBAPIError as exc:
            self._drop()
            raise self._db.mapped(exc) from exc
        if got:
            self._held[node] = int(node_id)
        return got

    def release(self, node: str) -> None:
        node_id = self._held.pop(node, None)
        if node_id is None or self._conn is None or self._db.is_sqlite:
            return
        try:
            self._conn.execute(_UNLOCK, {"cls": NODE_LOCK_CLASS, "obj": node_id})
            self._conn.commit()
        except DBAPIError:
            self._drop()  # the connection is gone or failing: its locks go with it

    def close(self) -> None:
        for node in list(self._held):
            self.release(node)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(DBAPIError):
                conn.close()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._held.clear()
        if conn is not None:
            with contextlib.suppress(DBAPIError):
                conn.invalidate()
            with contextlib.suppress(DBAPIError):
                conn.close()
