"""How the console behaves."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509

from certfleet.problems import EXPIRING_DAYS

__all__ = ["ConsoleSettings"]


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """How the console behaves; the defaults are what ``certfleet serve`` uses."""

    upload_limit: int = 10 * 1024 * 1024
    session_idle: dt.timedelta = dt.timedelta(minutes=30)
    session_max: dt.timedelta = dt.timedelta(hours=12)
    setup_ttl: dt.timedelta = dt.timedelta(hours=1)
    probe_timeout: float = 3.0
    probe_ttl: float = 30.0  # seconds a node's probe result is reused by the dashboard and /metrics
    import_ttl: dt.timedelta = dt.timedelta(minutes=15)  # an import shown but not confirmed is dropped
    extra_trust: tuple[x509.Certificate, ...] = field(default=(), repr=False)  # besides Mozilla + the store's
    fetch_aia: bool = True
    expiring_days: int = EXPIRING_DAYS  # warn when a certificate has fewer days left
