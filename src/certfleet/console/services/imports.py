"""Imports from the console: the CA's files read and shown first, saved only when confirmed.

What waits for its confirmation may hold a key (a PFX, a PEM with the key): it waits in the store
(``console_pending_imports``), so that any console process sharing the store can show and save
it, sealed with the store's vault like every key, for the account that sent it only, a bounded
number per account, and deleted when confirmed or stale.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from certfleet.clock import Clock
from certfleet.console.models import PendingImportRow
from certfleet.console.security import token_hash
from certfleet.console.services.audit import Actor, Audit
from certfleet.console.settings import ConsoleSettings
from certfleet.errors import InputError, StoreError
from certfleet.fleet.lineage import ImportResult, import_package
from certfleet.trust import TrustStore

__all__ = ["ImportPreview", "Imports"]

MAX_PREVIEWS = 20  # per account: each may hold up to the upload limit
_GONE = "this import is no longer waiting: upload the files again"


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


def _aad(digest: str, account_id: int, lineage: str) -> bytes:
    # binds the sealed files to their row: a ciphertext copied to another row does not open
    return f"certfleet/pending-import/v1/{digest}/account={account_id}/lineage={lineage}".encode()


def _pack(inputs: Sequence[tuple[str, bytes]], passwords: Sequence[bytes], force: bool) -> bytes:
    b64 = base64.b64encode
    return json.dumps(
        {
            "inputs": [[name, b64(data).decode("ascii")] for name, data in inputs],
            "passwords": [b64(p).decode("ascii") for p in passwords],
            "force": force,
        }
    ).encode("ascii")


def _unpack(raw: bytes) -> tuple[tuple[tuple[str, bytes], ...], tuple[bytes, ...], bool]:
    data = json.loads(raw)
    inputs = tuple((str(name), base64.b64decode(b)) for name, b in data["inputs"])
    return inputs, tuple(base64.b64decode(p) for p in data["passwords"]), bool(data["force"])


class Imports:
    def __init__(
        self, audit: Audit, *, settings: ConsoleSettings, clock: Clock, trust: Callable[[], TrustStore]
    ) -> None:
        self._audit, self._settings, self._clock, self._trust = audit, settings, clock, trust

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
        token = secrets.token_urlsafe(16)
        digest = token_hash(token)
        store = self._audit.store
        sealed = store.vault().seal(_pack(inputs, passwords, force), _aad(digest, actor.account_id, lineage))
        with store.session(write=True) as s:
            self._sweep(s)
            # each may hold up to the upload limit: keep a bounded number per account, dropping the oldest
            older = s.scalars(
                select(PendingImportRow.token_hash)
                .where(PendingImportRow.account_id == actor.account_id)
                .order_by(PendingImportRow.created_at.desc(), PendingImportRow.token_hash)
                .offset(MAX_PREVIEWS - 1)
            ).all()
            if older:
                s.execute(delete(PendingImportRow).where(PendingImportRow.token_hash.in_(older)))
            s.add(
                PendingImportRow(
                    token_hash=digest,
                    account_id=actor.account_id,
                    lineage=lineage,
                    sealed=sealed,
                    created_at=now,
                    expires_at=now + self._settings.import_ttl,
                )
            )
        preview = ImportPreview(token, actor.account_id, lineage, tuple(inputs), tuple(passwords), now, result, force)
        return result, preview

    def get(self, actor: Actor, preview_id: str) -> ImportPreview:
        """An import waiting for its sender's confirmation (its findings page), read again."""
        lineage, created, inputs, passwords, force = self._waiting(actor, preview_id, take=False)
        result = self.read(actor, lineage, inputs, passwords, save=False, force=force)
        return ImportPreview(preview_id, actor.account_id, lineage, inputs, passwords, created, result, force)

    def confirm(self, actor: Actor, preview_id: str) -> ImportPreview:
        """Save what ``preview_id`` showed, now that its sender confirmed it; it waits no more."""
        lineage, created, inputs, passwords, force = self._waiting(actor, preview_id, take=True)
        result = self.read(actor, lineage, inputs, passwords, save=True, force=force)
        if not result.accepted:  # the store changed since the preview
            raise InputError("the import was refused: " + "; ".join(p.message for p in result.problems))
        return ImportPreview(preview_id, actor.account_id, lineage, inputs, passwords, created, result, force)

    def _sweep(self, s: Session) -> None:
        """Forget every stale import, whoever sent it."""
        s.execute(delete(PendingImportRow).where(PendingImportRow.expires_at <= self._clock()))

    def _waiting(
        self, actor: Actor, preview_id: str, *, take: bool
    ) -> tuple[str, dt.datetime, tuple[tuple[str, bytes], ...], tuple[bytes, ...], bool]:
        """The import ``preview_id`` of ``actor``, opened; deleted with ``take``. Another account's
        is as unknown as one never made. Stale ones are deleted first, whoever sent them."""
        digest = token_hash(preview_id[:64])
        store = self._audit.store
        opened: tuple[str, dt.datetime, bytes] | None = None
        with store.session(write=True) as s:
            self._sweep(s)
            row = s.get(PendingImportRow, digest, with_for_update=take)
            if row is not None and row.account_id == actor.account_id:
                try:
                    raw = store.vault().open(row.sealed, _aad(digest, row.account_id, row.lineage))
                except StoreError:  # not sealed for this row: never opened, left to expire
                    raw = None
                if raw is not None:
                    opened = (row.lineage, row.created_at, raw)
                    if take:
                        s.delete(row)
        if opened is None:
            raise InputError(_GONE, hint="imports wait 15 minutes")
        lineage, created, raw = opened
        inputs, passwords, force = _unpack(raw)
        return lineage, created, inputs, passwords, force
