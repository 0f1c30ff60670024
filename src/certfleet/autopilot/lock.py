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
import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

from certfleet.errors import EnvError
from certfleet.store import Store

__all__ = ["FileLock", "PassBusy", "PassLock", "pass_lock"]

LOCK_FOLDER = "locks"  # where fleet.rollout keeps the deploy locks too
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


class FileLock(PassLock):
    """An exclusive ``flock`` on ``<home>/locks/<name>.lock``; the file holds the holder's pid."""

    def __init__(self, home: Path, name: str = LOCK_NAME) -> None:
        self.path = home / LOCK_FOLDER / f"{name}.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise ValueError("the lock is held already")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # CLOEXEC: a reload command a deploy runs must not inherit (and keep) the lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise EnvError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _pid_in(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else None
            raise PassBusy(
                "another certfleet renew is running" + (f" ({who})" if who else "") + ": this one stops",
                holder=who,
                hint="nothing to do: that pass covers every due lineage",
            ) from None
        except OSError as exc:
            os.close(fd)
            raise EnvError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _pid_in(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode("ascii").strip()) or None
    return None


def pass_lock(store: Store) -> PassLock:
    """The lock for ``store``'s passes. Every backend uses the file lock for now, which excludes
    passes on this machine (where the store's keys are); a shared PostgreSQL store run from
    several machines needs an advisory lock here."""
    return FileLock(store.home)
