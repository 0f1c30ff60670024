"""A throw-away PostgreSQL cluster for tests: Debian's server binaries, a temporary folder, a
loopback port, trust authentication for loopback TCP only, stopped when the session ends.

PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
``postgres`` system user (``runuser``), in a folder handed to that user; otherwise it runs as the
current user. One cluster serves the whole session (:func:`postgres`); each test that wants a
store of its own asks for a fresh database in it (:func:`pg_url`: ``CREATE DATABASE`` takes a few
tens of milliseconds)::

    def test_x(pg_url: str, monkeypatch):            # marked @pytest.mark.peer
        monkeypatch.setenv("CERTFLEET_DATABASE_URL", pg_url)

Tests that need the server to go away use :meth:`PostgresCluster.restart` (``pg_ctl restart -m
fast``: every session is cut, as an administrator's restart cuts them).
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
from sqlalchemy import MetaData, create_engine, select, text

from support import require_peer
from support.servers import free_port

__all__ = ["BACKENDS", "Backend", "PostgresCluster", "backend", "pg_url", "postgres", "postgres_bin"]

PG_ROOT = Path("/usr/lib/postgresql")

SUPERUSER = "postgres"
_counter = itertools.count(1)


def postgres_bin() -> Path:
    """The folder of the newest installed server's ``initdb`` and ``pg_ctl``."""
    found = sorted(
        (p.parent for p in PG_ROOT.glob("*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (the tests need the real server)")
    return found[-1]


class PostgresCluster:
    """One PostgreSQL server: ``initdb`` into ``folder/data``, listening on 127.0.0.1:``port``."""

    def __init__(self, folder: Path | None = None, *, port: int | None = None) -> None:
        self.bin = postgres_bin()
        self.folder = folder or Path(tempfile.mkdtemp(prefix="certfleet-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = port or free_port()
        self.host = "127.0.0.1"
        # the server may not run as root: hand it to the postgres system user then
        self._user = pwd.getpwnam(SUPERUSER) if os.geteuid() == 0 else None
        self.running = False

    # -- running the server's programs ------------------------------------------------------------

    def _run(self, *argv: str | Path, timeout: float = 120) -> str:
        cmd = [str(a) for a in argv]
        if self._user is not None:
            cmd = ["runuser", "-u", self._user.pw_name, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.folder)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n{self.errors()}"
            )
        return proc.stdout

    def _pg_ctl(self, *args: str, timeout: float = 120) -> None:
        self._run(self.bin / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", str(int(timeout)), *args)

    def start(self) -> Self:
        require_peer("postgres")
        if not self.data.exists():
            self._initdb()
        self._pg_ctl("start")
        self.running = True
        return self

    def _initdb(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
        self.folder.chmod(0o700)
        self._run(
            self.bin / "initdb",
            "-D",
            self.data,
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        conf = f"""
listen_addresses = '{self.host}'
port = {self.port}
unix_socket_directories = '{self.folder}'
max_connections = 200
# a throw-away cluster: durability buys nothing here (a clean restart still loses nothing)
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
log_min_error_statement = panic
"""
        with (self.data / "postgresql.conf").open("a") as fh:
            fh.write(conf)
        # trust, and only over loopback TCP: no unix-socket login, nothing from another address
        (self.data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n")

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._pg_ctl("stop", "-m", "immediate")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every open session is terminated, then the server comes back."""
        self._pg_ctl("restart", "-m", "fast")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def errors(self) -> str:
        try:
            return f"--- server.log\n{self.log.read_text(errors='replace')[-4000:]}"
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    # -- databases --------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database``, as certfleet takes it in ``CERTFLEET_DATABASE_URL``."""
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def execute(self, sql: str, *, database: str = "postgres") -> list[tuple[object, ...]]:
        """Run one statement outside any transaction (``CREATE DATABASE`` needs that); its rows."""
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user=SUPERUSER, dbname=database, autocommit=True, connect_timeout=10
        ) as conn:
            cur = conn.execute(sql.encode())
            return list(cur.fetchall()) if cur.description else []

    def create_database(self, hint: str = "t") -> str:
        """A new, empty database; its URL."""
        name = f"{re.sub(r'[^a-z0-9]+', '_', hint.lower())[:40]}_{os.getpid()}_{next(_counter)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# pytest makes one fixture of each module that imports ``postgres``: they share this cluster
_shared: dict[str, Any] = {"cluster": None, "users": 0}


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """The session's PostgreSQL cluster, started on first use and stopped when the session ends.
    Import this fixture into the modules that use it: however many do, there is one cluster."""
    if _shared["cluster"] is None:
        cluster = PostgresCluster()
        try:
            _shared["cluster"] = cluster.start()
        except BaseException:
            cluster.cleanup()
            raise
    _shared["users"] += 1
    try:
        yield _shared["cluster"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            cluster, _shared["cluster"] = _shared["cluster"], None
            cluster.cleanup()


@pytest.fixture
def pg_url(postgres: PostgresCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database in the session's cluster, dropped after the test."""
    url = postgres.create_database(request.node.name)
    try:
        yield url
    finally:
        if postgres.running:
            postgres.drop_database(url)


# -- a store on either backend ----------------------------------------------------------------------

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.peer)]


@dataclass
class Backend:
    name: str  # sqlite | postgresql
    home: Path
    url: str
    cluster: PostgresCluster | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.name == "sqlite"

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> Sequence[Any]:
        """One statement on the store's database, behind certfleet's back, committed."""
        engine = create_engine(self.url)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(sql), params or {})
                return list(result) if result.returns_rows else []
        finally:
            engine.dispose()

    def stored_values(self) -> bytes:
        """Every value of every table, bytes as they are and the rest as text: what the
        database holds, whichever way it lays it out on disk."""
        engine = create_engine(self.url)
        parts: list[bytes] = []
        try:
            meta = MetaData()
            with engine.connect() as conn:
                meta.reflect(bind=conn)
                for table in meta.tables.values():
                    for row in conn.execute(select(table)):
                        parts += [v if isinstance(v, bytes) else str(v).encode() for v in row]
        finally:
            engine.dispose()
        return b"\n".join(parts)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, certfleet_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """Where the store of this test lives: SQLite in the certfleet home, or PostgreSQL."""
    if request.param == "sqlite":
        monkeypatch.delenv("CERTFLEET_DATABASE_URL", raising=False)
        yield Backend("sqlite", certfleet_home, f"sqlite:///{certfleet_home / 'certfleet.db'}")
        return
    url = request.getfixturevalue("pg_url")
    monkeypatch.setenv("CERTFLEET_DATABASE_URL", url)
    yield Backend("postgresql", certfleet_home, url, request.getfixturevalue("postgres"))
