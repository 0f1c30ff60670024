"""What a form made that is shown once: a new API token, a new deployment link.

A form that creates something answers with a redirect (post/redirect/get), so that reloading the
page it lands on makes nothing twice; and a secret never goes into a URL. So the secret waits
here, in memory, for the account that made it, until the page after the redirect takes it: shown
once, then gone. What is not taken within a few minutes is dropped.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

from certfleet.clock import Clock

__all__ = ["Reveals"]

T = TypeVar("T")
MAX_WAITING = 100


@dataclass(frozen=True, slots=True)
class _Waiting(Generic[T]):
    account_id: int
    kind: str
    value: T
    created: dt.datetime


class Reveals:
    def __init__(self, *, clock: Clock, ttl: dt.timedelta = dt.timedelta(minutes=5)) -> None:
        self._clock = clock
        self._ttl = ttl
        self._waiting: dict[str, _Waiting[object]] = {}
        self._lock = threading.Lock()

    def put(self, account_id: int, kind: str, value: object) -> str:
        """Keep ``value`` for the account's next page; returns the id that page asks with."""
        now = self._clock()
        key = secrets.token_urlsafe(12)
        with self._lock:
            for stale in [k for k, w in self._waiting.items() if now - w.created > self._ttl]:
                del self._waiting[stale]
            while len(self._waiting) >= MAX_WAITING:
                del self._waiting[min(self._waiting, key=lambda k: self._waiting[k].created)]
            self._waiting[key] = _Waiting(account_id, kind, value, now)
        return key

    def take(self, account_id: int, kind: str, key: str, cls: type[T]) -> T | None:
        """The value kept under ``key`` for this account, once; None when taken, stale or another's."""
        with self._lock:
            found = self._waiting.get(key)
            if found is None or found.account_id != account_id or found.kind != kind:
                return None
            del self._waiting[key]
        if self._clock() - found.created > self._ttl or not isinstance(found.value, cls):
            return None
        return found.value
