"""One autopilot pass at a time, whoever starts it: a systemd timer, cron, ``certfleet serve``,
the console's "renew now".

The lock is the store's (``Store.pass_lock``): on SQLite an ``flock`` on
``<home>/locks/autopilot.lock``, which the kernel drops when its holder exits, however it exits
(SIGKILL too), so it is never left stale; on PostgreSQL, where passes may run on several machines
sharing the store, a session-level advisory lock, which the server drops when its holder's session
ends. Both are taken without waiting: the second pass gets :class:`PassBusy` and stops.
"""

from __future__ import annotations

from certfleet.errors import EnvError
from certfleet.store import AdvisoryLock, Flock, Store

__all__ = ["PassBusy", "PassLock", "pass_lock"]

PassLock = Flock | AdvisoryLock


class PassBusy(EnvError):
    """Another pass holds the lock; ``holder`` says who, when it is known."""

    def __init__(self, message: str, *, holder: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.holder = holder


def _busy(holder: str | None) -> PassBusy:
    return PassBusy(
        "another certfleet renew is running" + (f" ({holder})" if holder else "") + ": this one stops",
        holder=holder,
        hint="nothing to do: that pass covers every due lineage",
    )


def pass_lock(store: Store) -> PassLock:
    """The lock for ``store``'s passes, not taken yet: ``acquire()`` raises :class:`PassBusy`
    while another pass holds it."""
    return store.pass_lock(_busy)
