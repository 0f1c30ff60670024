"""What the console trusts: Mozilla's roots, the store's anchors and any the settings add; and the
anchors themselves, added and removed from the console as ``certfleet trust`` does."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from cryptography import x509

from certfleet.certinfo import describe, fingerprint
from certfleet.console.services.audit import Actor, Audit
from certfleet.errors import InputError
from certfleet.fleet.lineage import trust_with
from certfleet.store import Store, TrustAnchor
from certfleet.trust import TrustStore

__all__ = ["Trust"]


class Trust:
    """The trust store imports and checks use, built again only when the anchors changed (here, or
    by ``certfleet trust add`` or ``remove``, even from another process)."""

    def __init__(self, store: Store, audit: Audit, extra: Sequence[x509.Certificate] = ()) -> None:
        self._store = store
        self._audit = audit
        self._extra = tuple(extra)
        self._built: tuple[tuple[str, ...], TrustStore] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> TrustStore:
        anchors = [a.cert for a in self._store.trust_anchors()] + list(self._extra)
        key = tuple(sorted(fingerprint(c) for c in anchors))
        with self._lock:
            built = self._built
            if built is not None and built[0] == key:
                return built[1]
        trust = trust_with(anchors)
        with self._lock:
            self._built = (key, trust)
        return trust

    def anchors(self) -> list[TrustAnchor]:
        """The roots the store trusts besides Mozilla's, oldest first."""
        return self._store.trust_anchors()

    def add(self, actor: Actor, inputs: Sequence[tuple[str, bytes]]) -> list[tuple[TrustAnchor, bool]]:
        """Trust the CA certificates in ``inputs`` (any format certfleet reads); (anchor, True when
        new) for each. A server certificate is refused: it is no trust anchor."""
        from certfleet.formats import read_pool

        certs = read_pool(inputs).unique_certificates()
        if not certs:
            raise InputError("no certificate among the files", hint="choose the CA's root certificate")
        for item in certs:
            if not describe(item.cert).is_ca:
                raise InputError("not a CA certificate: a server certificate is no trust anchor", source=item.source)
        store = self._audit.store_for(actor)
        return [store.add_trust_anchor(item.cert) for item in certs]

    def remove(self, actor: Actor, sha256: str) -> TrustAnchor:
        """Stop trusting the anchor with this fingerprint (the whole of it: the console links each)."""
        sha256 = sha256.strip().lower()
        if len(sha256) != 64:
            raise InputError("a trust anchor is named by its SHA-256 fingerprint (64 hex digits)")
        return self._audit.store_for(actor).remove_trust_anchor(sha256)

    def anchor(self, sha256: str) -> TrustAnchor:
        """The anchor with this fingerprint."""
        found = next((a for a in self.anchors() if a.fingerprint == sha256.strip().lower()), None)
        if found is None:
            raise InputError("no trust anchor with this fingerprint", hint="the Trust anchors page lists them")
        return found
