"""The right to deploy one lineage, one holder at a time: ``Store.deploy_lock(lineage)``.

On SQLite it is an ``flock`` on ``<home>/locks/deploy-<lineage>.lock``: the kernel drops it when its
holder exits, however it exits (SIGKILL too), so it is never left stale, and it excludes deploys
on this machine, which is where a SQLite store and its keys are. On PostgreSQL, where several
machines share the store, it is a session-level advisory lock keyed on the lineage's id, held by a
connection of its own for the whole deploy: the server drops it when that session ends, however
the holder ends. Both are taken without waiting; another holder is :class:`EnvError` "a deploy of
lineage web is already running (pid N)".

The autopilot's pass lock (``Store.pass_lock``: one pass at a time over a store, whoever starts
it) is made the same way: the ``flock`` ``<home>/locks/autopilot.lock`` on SQLite, the advisory
lock ``PASS_LOCK`` on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from certfleet.errors import EnvError
from certfleet.store._engine import DEPLOY_LOCK_CLASS, PASS_LOCK, Database

__all__ = [
    "LOCK_FOLDER",
    "PASS_LOCK_NAME",
    "AdvisoryDeployLock",
    "AdvisoryLock",
    "DeployLock",
    "FileDeployLock",
    "Flock",
    "pass_lock",
]

LOCK_FOLDER = "locks"


class _Held:
    """``with`` takes the lock (``acquire``) and lets it go (``release``)."""

    def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class DeployLock(_Held):
    """Taken with :meth:`acquire` (or ``with``), let go with :meth:`release`; ``held`` says which."""

    def __init__(self, lineage: str) -> None:
        self.lineage = lineage

    @property
    def held(self) -> bool:
        raise NotImplementedError

    def acquire(self) -> None:
        """Take the lock, or raise :class:`EnvError` naming the process that holds it."""
        raise NotImplementedError

    def release(self) -> None:
        """Let go of the lock; a no-op when not held."""
        raise NotImplementedError

    def _running(self, holder: str | None) -> EnvError:
        return EnvError(
            f"a deploy of lineage {self.lineage} is already running" + (f" ({holder})" if holder else ""),
            hint="wait for it to finish, then run this again",
        )


class Flock(_Held):
    """An exclusive ``flock`` on ``path``, taken without waiting; the file holds its holder's pid.
    ``busy(holder)`` is the error another holder gets (``holder``: "pid N", when known). The kernel
    drops it when its holder exits, however it exits (SIGKILL too), so it is never left stale."""

    def __init__(self, path: Path, busy: Callable[[str | None], EnvError]) -> None:
        self.path = path
        self._busy = busy
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise ValueError("the lock is held already")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # CLOEXEC: a command run on this machine while it is held must not inherit (and keep) it
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise EnvError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _pid_in(fd)
            os.close(fd)
            raise self._busy(f"pid {holder}" if holder else None) from None
        except OSError as exc:
            os.close(fd)
            raise EnvError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file is what releases the lock


class FileDeployLock(Flock, DeployLock):
    """A :class:`Flock` on ``<home>/locks/deploy-<lineage>.lock``."""

    def __init__(self, home: Path, lineage: str) -> None:
        DeployLock.__init__(self, lineage)
        Flock.__init__(self, home / LOCK_FOLDER / f"deploy-{lineage}.lock", self._running)


def _pid_in(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode("ascii").strip()) or None
    return None


_TRY = text("SELECT pg_try_advisory_lock(:cls, :obj)")
_UNLOCK = text("SELECT pg_advisory_unlock(:cls, :obj)")
# who holds it: every certfleet connection is named certfleet/PID/HOST (see _engine.application_name)
_HOLDER = text(
    """
    SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :cls AND l.objid = :obj AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    """
)


class AdvisoryLock(_Held):
    """``pg_try_advisory_lock(cls, obj)`` (``key``), taken without waiting on a connection of its own
    and held until :meth:`release`: the server drops it when that session ends, however its holder
    ends. ``busy(holder)`` is the error another holder gets (``holder``: "pid N [on HOST]").

    If that connection is cut (a server restart), the server has already let go of the lock: the
    holder's work goes on, and for the rest of it another holder is not kept out.
    """

    def __init__(self, db: Database, key: tuple[int, int], busy: Callable[[str | None], EnvError]) -> None:
        self._db = db
        self._key = {"cls": key[0], "obj": key[1]}
        self._busy = busy
        self._conn: Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    def acquire(self) -> None:
        if self._conn is not None:
            raise ValueError("the lock is held already")
        conn = self._db.engine.connect()
        try:
            got = bool(conn.execute(_TRY, self._key).scalar())
            holder = None if got else conn.execute(_HOLDER, self._key).scalar()
            # a session lock outlives the transaction; ending it keeps no snapshot open meanwhile
            conn.commit()
        except DBAPIError as exc:
            conn.close()
            raise self._db.mapped(exc) from exc
        if not got:
            conn.close()
            raise self._busy(_holder_text(holder))
        self._conn = conn

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(_UNLOCK, self._key)
            conn.commit()
        except DBAPIError:
            # cut meanwhile (the lock went with the session), or the unlock failed: either way
            # this connection must not go back to the pool, where it could keep holding the lock
            with contextlib.suppress(DBAPIError):
                conn.invalidate()
        finally:
            with contextlib.suppress(DBAPIError):
                conn.close()


class AdvisoryDeployLock(AdvisoryLock, DeployLock):
    """``pg_try_advisory_lock(DEPLOY_LOCK_CLASS, lineage id)`` on a connection kept for the deploy."""

    def __init__(self, db: Database, lineage: str, lineage_id: int) -> None:
        DeployLock.__init__(self, lineage)
        AdvisoryLock.__init__(self, db, (DEPLOY_LOCK_CLASS, lineage_id), self._running)


# -- the autopilot's pass lock: one pass at a time over a store ------------------------------------

PASS_LOCK_NAME = "autopilot"  # noqa: S105 (a lock file's name)


def pass_lock(db: Database, home: Path, busy: Callable[[str | None], EnvError]) -> Flock | AdvisoryLock:
    """The right to run an autopilot pass over the store, not taken yet: a :class:`Flock` on
    ``<home>/locks/autopilot.lock`` on SQLite (one machine holds the store and its keys), an
    :class:`AdvisoryLock` on ``PASS_LOCK`` on PostgreSQL (several machines may share the store)."""
    if db.is_sqlite:
        return Flock(home / LOCK_FOLDER / f"{PASS_LOCK_NAME}.lock", busy)
    return AdvisoryLock(db, PASS_LOCK, busy)


def _holder_text(application_name: str | None) -> str | None:
    parts = (application_name or "").split("/", 2)
    if len(parts) != 3 or parts[0] != "certfleet" or not parts[1].isdigit():
        return None
    pid, host = parts[1], parts[2]
    return f"pid {pid}" if host == socket.gethostname()[: len(host)] else f"pid {pid} on {host}"
