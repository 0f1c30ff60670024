"""Where the store lives and how it is opened: home folder, engine, transactions, migrations."""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from certfleet.errors import StoreBusyError, StoreError

__all__ = [
    "BUSY_ENV",
    "DB_FILE",
    "HOME_ENV",
    "URL_ENV",
    "Database",
    "busy_timeout",
    "database_url",
    "default_home",
]

HOME_ENV = "CERTFLEET_HOME"
URL_ENV = "CERTFLEET_DATABASE_URL"
BUSY_ENV = "CERTFLEET_BUSY_TIMEOUT"
DB_FILE = "certfleet.db"
DEFAULT_BUSY_TIMEOUT = 10.0
MAX_BUSY_TIMEOUT = 3600.0
MIGRATIONS = Path(__file__).parent / "migrations"

_BUSY = "store is busy: another certfleet is writing; try again"
_WRITE_OPTION = "certfleet_write"


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
        if not url.startswith(("sqlite://", "postgresql+psycopg://")):
            raise StoreError(
                f"{URL_ENV} must be a sqlite:// or postgresql+psycopg:// URL",
                hint="unset it to use the SQLite store in the certfleet home",
            )
        return url
    return f"sqlite:///{home / DB_FILE}"


def _is_busy(exc: DBAPIError) -> bool:
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig).lower()
        return "locked" in text or "busy" in text
    # PostgreSQL: lock_not_available / serialization_failure / deadlock_detected
    return getattr(orig, "sqlstate", None) in {"55P03", "40001", "40P01"}


def _alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


class Database:
    """An engine with two kinds of transaction: reads (deferred) and writes (taken at once).

    SQLite upgrades a read transaction to a write one lazily, and two such upgrades deadlock
    (one fails at once, whatever the busy timeout). Writes therefore start with ``BEGIN
    IMMEDIATE``: they wait up to the busy timeout for the write lock, then fail cleanly.
    """

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        connect_args: dict[str, Any] = (
            {"timeout": timeout} if self.is_sqlite else {"options": f"-c lock_timeout={int(timeout * 1000)}"}
        )
        self.engine: Engine = create_engine(url, connect_args=connect_args)
        if self.is_sqlite:
            self._sqlite_events(timeout)
        self._read = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write = sessionmaker(bind=self.engine.execution_options(**{_WRITE_OPTION: True}), expire_on_commit=False)

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
        """A session in one transaction, committed on success; store failures become StoreError."""
        try:
            with (self._write if write else self._read)() as session, session.begin():
                yield session
        except DBAPIError as exc:
            raise _mapped(exc) from exc

    # -- schema -------------------------------------------------------------------------------

    def heads(self) -> set[str]:
        return set(ScriptDirectory.from_config(_alembic_config()).get_heads())

    def current(self) -> set[str]:
        try:
            with self.engine.connect() as conn:
                return set(MigrationContext.configure(conn).get_current_heads())
        except DBAPIError as exc:
            raise _mapped(exc) from exc

    def upgrade(self, revision: str = "head") -> None:
        """Run the migrations up to ``revision`` in one write transaction."""
        try:
            with self.engine.execution_options(**{_WRITE_OPTION: True}).begin() as conn:
                command.upgrade(_alembic_config(conn), revision)
        except DBAPIError as exc:
            raise _mapped(exc) from exc
        except CommandError as exc:  # a revision this certfleet does not know
            raise StoreError(
                f"the store's schema is newer than this certfleet knows ({exc})",
                hint="use the certfleet version that last wrote the store, or a newer one",
            ) from exc

    def downgrade(self, revision: str) -> None:
        try:
            with self.engine.execution_options(**{_WRITE_OPTION: True}).begin() as conn:
                command.downgrade(_alembic_config(conn), revision)
        except DBAPIError as exc:
            raise _mapped(exc) from exc


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


def _mapped(exc: DBAPIError) -> StoreError:
    if _is_busy(exc):
        return StoreBusyError(_BUSY, hint=f"wait for the other certfleet to finish, or raise {BUSY_ENV} (seconds)")
    if isinstance(exc, IntegrityError):
        return StoreError(f"the store refused a change: {exc.orig}", hint="run again with --debug and report it")
    said = str(exc.orig).strip()
    lowered = said.lower()
    for needles, what, hint in _FAULTS:
        if any(n in lowered for n in needles):
            return StoreError(f"{what} ({said.splitlines()[0] if said else type(exc.orig).__name__})", hint=hint)
    return StoreError(f"the store cannot be used: {said}", hint="check the certfleet home and its database")
