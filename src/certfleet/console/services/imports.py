"""Imports from the console: the CA's files read and shown first, saved only when confirmed.

What waits for its confirmation may hold a key (a PFX): it is kept in memory only, for the account
that sent it, a bounded number of them, and dropped when confirmed or stale.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from certfleet.clock import Clock
from certfleet.console.services.audit import Actor, Audit
from certfleet.console.settings import ConsoleSettings
from certfleet.errors import InputError
from certfleet.fleet.lineage import ImportResult, import_package
from certfleet.trust import TrustStore

__all__ = ["ImportPreview", "Imports"]

MAX_PREVIEWS = 20


@dataclass(frozen=True, slots=True)
class ImportPreview:
    """An upload waiting for its confirmation."""

    id: str
    account_id: int
    lineage: str
    inputs: tuple[tuple[str, bytes], ...]
    passwords: tuple[bytes, ...]
    created: dt.datetime
    result: ImportResult
    force: bool = False  # the sender accepts a version weaker than the active one

    def __repr__(self) -> str:
        return f"ImportPreview(id={self.id!r}, lineage={self.lineage!r}, files={len(self.inputs)})"


class Imports:
    def __init__(
        self, audit: Audit, *, settings: ConsoleSettings, clock: Clock, trust: Callable[[], TrustStore]
    ) -> None:
        self._audit, self._settings, self._clock, self._trust = audit, settings, clock, trust
        self._previews: dict[str, ImportPreview] = {}
        self._lock = threading.Lock()

    def read(
        self,
        actor: Actor,
        lineage: str,
        inputs: Sequence[tuple[str, bytes]],
        passwords: Sequence[bytes],
        *,
        save: bool,
        force: bool = False,
    ) -> ImportResult:
        """What the files hold for ``lineage`` (``import_package``), saved and made active only
        with ``save`` and when a strict client accepts it."""
        from certfleet.aia import HttpFetcher

        return import_package(
            self._audit.store_for(actor),
            lineage,
            inputs,
            now=self._clock(),
            passwords=passwords,
            fetcher=HttpFetcher(timeout=10.0) if self._settings.fetch_aia else None,
            trust=self._trust(),
            save=save,
            force=force,
        )

    def preview(
        self,
        actor: Actor,
        lineage: str,
        inputs: Sequence[tuple[str, bytes]],
        passwords: Sequence[bytes],
        *,
        force: bool = False,
    ) -> tuple[ImportResult, ImportPreview | None]:
        """Read the files without saving; an import that would be accepted waits for its
        confirmation. ``force`` accepts a version that expires sooner, covers fewer names or has a
        weaker key than the active one."""
        result = self.read(actor, lineage, inputs, passwords, save=False, force=force)
        if not result.accepted:
            return result, None
        now = self._clock()
        preview = ImportPreview(
            secrets.token_urlsafe(12), actor.account_id, lineage, tuple(inputs), tuple(passwords), now, result, force
        )
        with self._lock:
            for stale in [k for k, p in self._previews.items() if now - p.created > self._settings.import_ttl]:
                del self._previews[stale]
            # each may hold up to the upload limit: keep a bounded number, dropping the oldest
            while len(self._previews) >= MAX_PREVIEWS:
                del self._previews[min(self._previews, key=lambda k: self._previews[k].created)]
            self._previews[preview.id] = preview
        return result, preview

    def get(self, actor: Actor, preview_id: str) -> ImportPreview:
        """An import waiting for its sender's confirmation (its findings page)."""
        with self._lock:
            return self._waiting(actor, preview_id)

    def _waiting(self, actor: Actor, preview_id: str) -> ImportPreview:
        # called with the lock held
        preview = self._previews.get(preview_id)
        if (
            preview is None
            or preview.account_id != actor.account_id
            or self._clock() - preview.created > self._settings.import_ttl
        ):
            raise InputError("this import is no longer waiting: upload the files again", hint="imports wait 15 minutes")
        return preview

    def confirm(self, actor: Actor, preview_id: str) -> ImportPreview:
        """Save what ``preview_id`` showed, now that its sender confirmed it."""
        with self._lock:
            preview = self._waiting(actor, preview_id)
            del self._previews[preview_id]
        result = self.read(actor, preview.lineage, preview.inputs, preview.passwords, save=True, force=preview.force)
        if not result.accepted:  # the store changed since the preview
            raise InputError("the import was refused: " + "; ".join(p.message for p in result.problems))
        return preview
