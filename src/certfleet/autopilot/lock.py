"""One autopilot pass at a time, whoever starts it: a systemd timer, cron, ``certfleet serve``.

:class:`PassLock` is what a pass needs: take the lock without waiting, or learn who holds it. The
SQLite store's is :class:`FileLock`, an ``flock`` on ``<home>/locks/autopilot.lock``: the kernel
drops it when its holder exits, however it exits (SIGKILL too), so it is never left stale. A
shared PostgreSQL store, where passes may run on several machines, wants the database's own
advisory lock (``pg_try_advisory_lock``) behind the same two methods: :func:`pass_lock` is the
one place that chooses.
"""

from __future__ import annotations

import abc
from pathlib import Path
from types import TracebackType
from typing import Self

from certfleet.errors import EnvError
from certfleet.store import LOCK_FOLDER, Flock, Store

__all__ = ["FileLock", "PassBusy", "PassLock", "pass_lock"]

LOCK_NAME = "autopilot"


class PassBusy(EnvError):
    """Another pass holds the lock; ``holder`` says who, when it is known."""

    def __init__(self, message: str, *, holder: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.holder = holder


class PassLock(abc.ABC):
    """The right to run a pass. :meth:`acquire` never waits."""

    @abc.abstractmethod
    def acquire(self) -> None:
        """Take the lock, or raise :class:`PassBusy` (another pass runs) or :class:`EnvError`."""

    @abc.abstractmethod
    def release(self) -> None:
        """Let go of the lock; a no-op when not held."""

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class FileLock(Flock, PassLock):
    """The store's :class:`~certfleet.store.Flock` on ``<home>/locks/<name>.lock``."""

    def __init__(self, home: Path, name: str = LOCK_NAME) -> None:
        super().__init__(home / LOCK_FOLDER / f"{name}.lock", _busy)


def _busy(holder: str | None) -> PassBusy:
    return PassBusy(
        "another certfleet renew is running" + (f" ({holder})" if holder else "") + ": this one stops",
        holder=holder,
        hint="nothing to do: that pass covers every due lineage",
    )


def pass_lock(store: Store) -> PassLock:
    """The lock for ``store``'s passes. Every backend uses the file lock for now, which excludes
    passes on this machine (where the store's keys are); a shared PostgreSQL store run from
    several machines needs an advisory lock here."""
    return FileLock(store.home)
