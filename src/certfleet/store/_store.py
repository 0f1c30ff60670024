"""The store: one object that opens the database and offers a small API of frozen values."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.orm import Session

from certfleet.errors import EnvError, StoreError
from certfleet.store._engine import DB_FILE, Database, busy_timeout, database_url, default_home
from certfleet.store._issuers import IssuersMixin
from certfleet.store._jobs import JobsMixin
from certfleet.store._locks import AdvisoryDeployLock, AdvisoryLock, DeployLock, FileDeployLock, Flock, pass_lock
from certfleet.store._nodes import NodesMixin
from certfleet.store._progress import ProgressMixin
from certfleet.store._records import AuditAction
from certfleet.store._versions import VersionsMixin
from certfleet.store._zones import ZonesMixin

__all__ = ["Store"]


class Store(NodesMixin, VersionsMixin, IssuersMixin, ProgressMixin, JobsMixin, ZonesMixin):
    """The certfleet store. Open it with :meth:`init` or :meth:`open`; every method is one
    short transaction and returns frozen values; every change is written to the audit trail.
    Its parts, one concept each: nodes, versions, issuers, progress, deployments (under the
    jobs: ``_deployments``), jobs, zones."""

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

    def pass_lock(self, busy: Callable[[str | None], EnvError]) -> Flock | AdvisoryLock:
        """The right to run an autopilot pass over this store, not taken yet: ``acquire()`` (or
        ``with``) takes it without waiting, or raises ``busy(holder)`` ("pid N", "pid N on HOST"
        when known). An ``flock`` under the home on SQLite, a PostgreSQL advisory lock held for
        the session otherwise, so that passes started on several machines sharing the store
        still run one at a time."""
        return pass_lock(self._db, self.home, busy)
