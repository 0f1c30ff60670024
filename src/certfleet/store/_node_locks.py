"""Each node deployed by one worker at a time: a lock per node, held around its deploy."""

from __future__ import annotations

import contextlib
from collections.abc import Collection

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from certfleet.errors import InputError
from certfleet.store._engine import DEPLOY_LOCK_CLASS, Database

__all__ = ["NODE_LOCK_CLASS", "NodeLocks"]

NODE_LOCK_CLASS = DEPLOY_LOCK_CLASS + 1  # per node (its id), held while a worker deploys it

_NODE_ID = text("SELECT id FROM nodes WHERE name = :name")
_TRY = text("SELECT pg_try_advisory_lock(:cls, :obj)")
_UNLOCK = text("SELECT pg_advisory_unlock(:cls, :obj)")
_TRY_MANY = text("SELECT name, id, pg_try_advisory_lock(:cls, id) FROM nodes WHERE name IN :names").bindparams(
    bindparam("names", expanding=True)
)
_UNLOCK_MANY = text("SELECT pg_advisory_unlock(:cls, obj) FROM unnest(CAST(:objs AS bigint[])) AS obj")


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

    def acquire_many(self, nodes: Collection[str]) -> dict[str, bool]:
        """:meth:`acquire` for many nodes in one statement: for each node that exists, whether it
        is held here now (a node that does not exist is left out)."""
        wanted = sorted(set(nodes) - set(self._held))
        out = {n: True for n in nodes if n in self._held}
        if self._db.is_sqlite:
            self._held.update((n, 0) for n in wanted)
            return {**out, **dict.fromkeys(wanted, True)}
        conn = self._connection()
        try:
            for i in range(0, len(wanted), 500):
                rows = conn.execute(_TRY_MANY, {"cls": NODE_LOCK_CLASS, "names": wanted[i : i + 500]}).all()
                conn.commit()  # a session lock outlives the transaction; no snapshot kept open
                for name, node_id, got in rows:
                    out[str(name)] = bool(got)
                    if got:
                        self._held[str(name)] = int(node_id)
        except DBAPIError as exc:
            self._drop()
            raise self._db.mapped(exc) from exc
        return out

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
        """Let every lock go (in one statement) and the connection with them."""
        held, self._held = list(self._held.values()), {}
        if held and self._conn is not None and not self._db.is_sqlite:
            try:
                self._conn.execute(_UNLOCK_MANY, {"cls": NODE_LOCK_CLASS, "objs": held})
                self._conn.commit()
            except DBAPIError:
                self._drop()  # the connection is gone or failing: its locks go with it
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
