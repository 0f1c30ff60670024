"""What the console trusts: Mozilla's roots, the store's anchors and any the settings add."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from cryptography import x509

from certfleet.certinfo import fingerprint
from certfleet.fleet.lineage import trust_with
from certfleet.store import Store
from certfleet.trust import TrustStore

__all__ = ["Trust"]


class Trust:
    """The trust store imports and checks use, built again only when the anchors changed (``certfleet
    trust add`` or ``remove``, even from another process)."""

    def __init__(self, store: Store, extra: Sequence[x509.Certificate] = ()) -> None:
        self._store = store
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
