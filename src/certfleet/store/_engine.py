"""Where the store lives and how it is opened: home folder, engine, transactions, migrations.

Two backends behave alike here. On SQLite a write transaction starts with ``BEGIN IMMEDIATE``.
On PostgreSQL it starts by taking a transaction-level advisory lock that every writer takes
(:data:`WRITE_LOCK`), in READ COMMITTED: the store's writes read, then write (is the name free?
which number comes next?), and one lock for them all gives exactly the result a serial run
gives, with no per-method reasoning about row locks, no retry loop that could re-run a change
with a side effect, and the same behaviour as SQLite, where writers take turns anyway. The store
writes little and briefly, so writers queue for milliseconds; readers never take the lock and
never wait (MVCC). The lock is the first statement of the transaction and READ COMMITTED takes a
new snapshot for each statement, so every statement after it sees all that earlier holders
committed.

A pooled PostgreSQL connection is pinged before use. A transaction cut by a lost connection (a
server restart) is run again by :func:`retried` once the server is back: before its COMMIT was
sent nothing of it exists; when the connection dies during the COMMIT, the server is asked how
that transaction ended (``pg_xact_status`` of the id the transaction took at its start), so a
change is never lost and never made twice.
"""

from __future__ import annotations

import ast
import functools
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from certfleet.errors import StoreBusyError, StoreError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "BUSY_ENV",
    "DB_FILE",
    "DEPLOY_LOCK_CLASS",
    "HOME_ENV",
    "PASS_LOCK",
    "RECONNECT_WINDOW",
    "URL_ENV",
    "WRITE_LOCK",
    "ConnectionLost",
    "Database",
    "busy_timeout",
    "database_url",
    "default_home",
    "retried",
]

HOME_ENV = "CERTFLEET_HOME"
URL_ENV = "CERTFLEET_DATABASE_URL"
BUSY_ENV = "CERTFLEET_BUSY_TIMEOUT"
DB_FILE = "certfleet.db"
DEFAULT_BUSY_TIMEOUT = 10.0
MAX_BUSY_TIMEOUT = 3600.0
MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"  # Alembic's: the schema revision the database is at
_READ_VERSION = text(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608 (a constant)
# how long a transaction cut by a lost connection is tried again (a restart takes seconds)
RECONNECT_WINDOW = 60.0

# PostgreSQL advisory locks, two int4 keys each (a class, then an object), in a class range of
# certfleet's own so that other users of the database cannot collide with them by accident
_LOCK_SPACE = 0x63660000  # "cf"
WRITE_LOCK = (_LOCK_SPACE + 1, 0)  # every write transaction, migrations included
DEPLOY_LOCK_CLASS = _LOCK_SPACE + 2  # per lineage (its id), held by a session for a whole deploy
PASS_LOCK = (_LOCK_SPACE + 3, 0)  # the autopilot's one pass at a time, held by a session for a pass

_BUSY = "store is busy: another certfleet is writing; try again"
_WRITE_OPTION = "certfleet_write"
# a write transaction's first statement on PostgreSQL: its turn, and its id (for a cut COMMIT)
_PG_WRITE_BEGIN = text(f"SELECT pg_advisory_xact_lock({WRITE_LOCK[0]}, {WRITE_LOCK[1]}), pg_current_xact_id()::text")
_PG_XACT_STATUS = text("SELECT pg_xact_status(CAST(:xid AS xid8))")
# SQLSTATE classes of a connection that is gone or refused: connection exception (08),
# admin/crash shutdown and "the database system is starting up / shutting down" (57P01-57P03)
_LOST_STATES = ("08", "57P01", "57P02", "57P03")


class ConnectionLost(StoreError):
    """The connection to the database went away before the transaction committed: nothing of it
    was saved, and running it again is safe (what :func:`retried` does)."""


def default_home() -> Path:
    """``$CERTFLEET_HOME``, else ``$XDG_DATA_HOME/certfleet``, else ``~/.local/share/certfleet``."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore a relative value
        return Path(xdg) / "certfleet"
    return Path.home() / ".local" / "share" / "certfleet"


def busy_timeout() -> float:
    raw = os.environ.get(BUSY_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_BUSY_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0 <= value <= MAX_BUSY_TIMEOUT):  # also refuses nan and inf
        raise StoreError(
            f"{BUSY_ENV} must be a number of seconds between 0 and {MAX_BUSY_TIMEOUT:.0f}, not {raw[:40]!r}"
        )
    return value


def database_url(home: Path) -> str:
    url = os.environ.get(URL_ENV)
    if url:
        check_url(url)
        return url
    return f"sqlite:///{home / DB_FILE}"


def check_url(url: str, *, what: str = URL_ENV) -> None:
    if not url.startswith(("sqlite://", "postgresql+psycopg://")):
        raise StoreError(
            f"{what} must be a sqlite:// or postgresql+psycopg:// URL",
            hint="unset it to use the SQLite store in the certfleet home" if what == URL_ENV else None,
        )


def shown_url(url: str) -> str:
    """The URL without its password, for messages and the audit trail."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is refused elsewhere; never echo it whole
        return url.rsplit("@", maxsplit=1)[-1]


def _alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def migration_heads() -> frozenset[str]:
    """The head revisions of the shipped migrations: every ``revision`` that is no other's
    ``down_revision``, read from the files' assignments without running them (which is what makes
    Alembic's own answer cost a tenth of a second at every start). A file that does not say both
    plainly is left to Alembic."""
    revisions: dict[str, tuple[str, ...]] = {}
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        found = _revision_of(path)
        if found is None:
            return _alembic_heads()
        revisions[found[0]] = found[1]
    below = {down for downs in revisions.values() for down in downs}
    return frozenset(revisions.keys() - below)


def _revision_of(path: Path) -> tuple[str, tuple[str, ...]] | None:
    """A migration file's ``revision`` and ``down_revision`` (none, one or a merge's several)."""
    try:
        module = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    said: dict[str, object] = {}
    for node in module.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision") and value is not None:
            try:
                said[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError):
                return None
    revision, down = said.get("revision"), said.get("down_revision", ...)
    if not isinstance(revision, str) or down is ...:
        return None
    if down is None:
        return revision, ()
    if isinstance(down, str):
        return revision, (down,)
    if isinstance(down, tuple | list) and all(isinstance(d, str) for d in down):
        return revision, tuple(down)
    return None


def _alembic_heads() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(_alembic_config()).get_heads())


def application_name() -> str:
    """What a certfleet process calls itself on PostgreSQL: ``certfleet/PID/HOST`` (pg_stat_activity)."""
    return f"certfleet/{os.getpid()}/{socket.gethostname()}"[:63]


class Database:
    """An engine with two kinds of transaction: reads (deferred) and writes (serialized).

    SQLite upgrades a read transaction to a write one lazily, and two such upgrades deadlock
    (one fails at once, whatever the busy timeout). Writes therefore start with ``BEGIN
    IMMEDIATE``: they wait up to the busy timeout for the write lock, then fail cleanly. On
    PostgreSQL writes take :data:`WRITE_LOCK`, waiting up to the busy timeout (``lock_timeout``).
    """

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # whether this process ever reached the server: a server that was never there is
        # reported at once; one that went away is waited for (see retried)
        self.reached = self.is_sqlite
        if self.is_sqlite:
            self.engine: Engine = create_engine(url, connect_args={"timeout": timeout})
            self._sqlite_events(timeout)
        else:
            self.engine = create_engine(
                url,
                connect_args={
                    # 0 would mean "wait forever" to PostgreSQL, "do not wait" to SQLite
                    "options": f"-c lock_timeout={max(1, int(timeout * 1000))}",
                    "connect_timeout": 10,
                    "application_name": application_name(),
                },
                pool_pre_ping=True,
                # the write lock relies on a fresh snapshot per statement (see the module's docstring)
                isolation_level="READ COMMITTED",
            )
            event.listen(self.engine, "connect", self._reached)
        self._read = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write = sessionmaker(bind=self.engine.execution_options(**{_WRITE_OPTION: True}), expire_on_commit=False)

    def _reached(self, _dbapi_connection: object, _record: object) -> None:
        self.reached = True

    def _sqlite_events(self, timeout: float) -> None:
        @event.listens_for(self.engine, "connect")
        def _connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
            # we issue BEGIN ourselves (below); pysqlite's implicit transactions would defer it
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed key survives a power cut too (a lost pending key makes its
            # certificate useless); the store writes little, so the cost does not show
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.close()

        @event.listens_for(self.engine, "begin")
        def _begin(conn: Connection) -> None:
            write = conn.get_execution_options().get(_WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self, *, write: bool) -> Iterator[Session]:
        """A session in one transaction, committed on success; store failures become StoreError
        (:class:`ConnectionLost` when running the transaction again is safe)."""
        session = (self._write if write else self._read)()
        xid: str | None = None
        try:
            try:
                session.begin()
                if write and not self.is_sqlite:
                    xid = session.execute(_PG_WRITE_BEGIN).one()[1]
                yield session
                session.flush()
            except DBAPIError as exc:
                raise self.mapped(exc) from exc
            try:
                session.commit()
            except DBAPIError as exc:
                if xid is None or not self.lost(exc):
                    # a read has nothing to lose: ConnectionLost, and it is asked again
                    raise self.mapped(exc) from exc
                self._settle(xid, exc)
        finally:
            with suppress(DBAPIError):
                session.close()

    def _settle(self, xid: str, cut: DBAPIError) -> None:
        """The connection died while COMMIT was on its way: ask the server how transaction
        ``xid`` ended. Committed: done. Aborted: ConnectionLost (run it again). Unknown: say so."""
        deadline = time.monotonic() + RECONNECT_WINDOW
        delay = 0.1
        while True:
            try:
                with self.engine.connect() as conn:
                    status = conn.execute(_PG_XACT_STATUS, {"xid": xid}).scalar()
            except DBAPIError as exc:
                if not self.lost(exc):
                    break
                status = "unreachable"
            if status == "committed":
                return
            if status == "aborted":
                raise ConnectionLost(
                    f"lost the connection to the store's database: {_first_line(cut)}",
                    hint="nothing of this change was saved; run it again",
                ) from cut
            # "in progress": the server has not seen the connection go yet
            if status not in ("unreachable", "in progress") or time.monotonic() > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise StoreError(
            f"lost the connection to the store's database while saving a change: {_first_line(cut)}; "
            "whether it was saved is unknown",
            hint="look at the store (`certfleet history`, `certfleet status`) before running it again",
        ) from cut

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A bare connection (autocommit off), for what is not a store transaction."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except DBAPIError as exc:
            raise self.mapped(exc) from exc

    # -- schema -------------------------------------------------------------------------------

    def heads(self) -> set[str]:
        """The newest revisions of the migrations this certfleet ships."""
        return set(migration_heads())

    def current(self) -> set[str]:
        """The revisions the database's schema is at (none: no store there yet).

        One query of Alembic's version table, as Alembic itself reads it: opening a store whose
        schema is current loads no part of Alembic."""
        try:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table(VERSION_TABLE):
                    return set()
                return {row[0] for row in conn.execute(_READ_VERSION)}
        except DBAPIError as exc:
            raise self.mapped(exc) from exc

    @contextmanager
    def migrating(self) -> Iterator[Connection]:
        """A connection in one write transaction, for migrations and bulk copies."""
        # one write transaction; on PostgreSQL (transactional DDL) under the write lock, so two
        # processes upgrading one database at once take turns and the second finds nothing to do
        try:
            with self.engine.execution_options(**{_WRITE_OPTION: True}).begin() as conn:
                if not self.is_sqlite:
                    conn.execute(_PG_WRITE_BEGIN)
                yield conn
        except DBAPIError as exc:
            raise self.mapped(exc) from exc

    def upgrade(self, revision: str = "head") -> None:
        """Run the migrations up to ``revision`` in one write transaction."""
        from alembic import command
        from alembic.util import CommandError

        try:
            with self.migrating() as conn:
                command.upgrade(_alembic_config(conn), revision)
        except CommandError as exc:  # a revision this certfleet does not know
            raise StoreError(
                f"the store's schema is newer than this certfleet knows ({exc})",
                hint="use the certfleet version that last wrote the store, or a newer one",
            ) from exc

    def downgrade(self, revision: str) -> None:
        from alembic import command

        with self.migrating() as conn:
            command.downgrade(_alembic_config(conn), revision)

    # -- errors -------------------------------------------------------------------------------

    def lost(self, exc: DBAPIError) -> bool:
        """Whether ``exc`` says the connection is gone (or the server refuses new ones for now)."""
        if self.is_sqlite or not isinstance(exc, OperationalError | InterfaceError):
            return False
        if exc.connection_invalidated:
            return True
        state = getattr(exc.orig, "sqlstate", None)
        # no SQLSTATE: the client's own failure to reach the server (refused, reset, timed out)
        return state is None or state.startswith(_LOST_STATES)

    def mapped(self, exc: DBAPIError) -> StoreError:
        if _is_busy(exc):
            return StoreBusyError(_BUSY, hint=f"wait for the other certfleet to finish, or raise {BUSY_ENV} (seconds)")
        if self.lost(exc) and not self.reached:
            return StoreError(
                f"cannot reach the store's database server at {shown_url(self.url)}: {_first_line(exc)}",
                hint=f"check that PostgreSQL runs and accepts connections at the address in {URL_ENV}",
            )
        if self.lost(exc):
            return ConnectionLost(
                f"lost the connection to the store's database: {_first_line(exc)}",
                hint="nothing of this change was saved; check that the database server runs, then try again",
            )
        if isinstance(exc, IntegrityError):
            return StoreError(f"the store refused a change: {exc.orig}", hint="run again with --debug and report it")
        said = str(exc.orig).strip()
        lowered = said.lower()
        for needles, what, hint in _FAULTS:
            if any(n in lowered for n in needles):
                return StoreError(f"{what} ({said.splitlines()[0] if said else type(exc.orig).__name__})", hint=hint)
        return StoreError(f"the store cannot be used: {said}", hint="check the certfleet home and its database")


# what the database said, and what the fault is: a hint that names it (a full disk is not a
# damaged store, and a server that refuses connections needs no backup)
_FAULTS = (
    (
        ("disk is full", "no space left", "could not extend file", "disk full"),
        "the store cannot be written: the disk is full",
        "free space on the filesystem that holds the store (ENOSPC), then run the command again",
    ),
    (
        ("readonly database", "read-only file system", "read-only transaction"),
        "the store cannot be written: it is read-only",
        "make the certfleet home and its database writable by this user",
    ),
    (
        ("connection refused", "could not connect", "connection to server", "name or service not known"),
        "cannot reach the store's database server",
        f"check that PostgreSQL runs and accepts connections at the address in {URL_ENV}",
    ),
    (
        ("password authentication failed", "no pg_hba.conf entry", "permission denied"),
        "the store's database refused this user",
        f"check the user and password in {URL_ENV} and what the database grants them",
    ),
    (
        ("unable to open database file",),
        "the store's database cannot be opened",
        "check that the certfleet home exists and that this user may read and write it",
    ),
    (
        ("disk i/o error",),
        "the store's disk failed a read or write",
        "check the disk that holds the certfleet home (dmesg); the store itself may be fine",
    ),
    (
        ("file is not a database", "malformed"),
        "the store cannot be used",
        "the database file is damaged: restore the certfleet home from a backup",
    ),
)


def _is_busy(exc: DBAPIError) -> bool:
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        text_ = str(orig).lower()
        return "locked" in text_ or "busy" in text_
    # PostgreSQL: lock_not_available / serialization_failure / deadlock_detected
    return getattr(orig, "sqlstate", None) in {"55P03", "40001", "40P01"}


def _first_line(exc: DBAPIError) -> str:
    return (str(exc.orig).strip().splitlines() or ["connection closed"])[0]


# -- running a transaction again -------------------------------------------------------------------


class _HasDatabase(Protocol):
    _db: Database


_S = TypeVar("_S", bound=_HasDatabase)
_P = ParamSpec("_P")
_R = TypeVar("_R")
_scope = threading.local()


def retried(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """Run a store method (one transaction, or a few reads before one) again when its connection
    was lost before it committed, for up to :data:`RECONNECT_WINDOW` seconds, backing off.

    Only the outermost call retries (a method calling another is re-run whole). A server that
    this process never reached is reported at once: it is down, not restarting.
    """

    @functools.wraps(method)
    def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if getattr(_scope, "active", False):
            return method(self, *args, **kwargs)
        _scope.active = True
        try:
            deadline: float | None = None
            delay = 0.05
            while True:
                try:
                    return method(self, *args, **kwargs)
                except ConnectionLost:
                    now = time.monotonic()
                    deadline = deadline if deadline is not None else now + RECONNECT_WINDOW
                    if now >= deadline or not self._db.reached:
                        raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        finally:
            _scope.active = False

    return wrapper
