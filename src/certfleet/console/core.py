"""The console of one application: its services, made once, and what it serves over TLS.

Nothing here decides anything the library does not: names, chains, verification, probing, the
store, requests, imports and deploys are the library's; the services gather their results into
what the pages and the API show, keep the short-lived state a browser flow needs (an import shown
before it is saved, a deploy in progress, a new token or link shown once: all in the store, so
that any console process sharing it answers), and record who did what.
"""

from __future__ import annotations

from dataclasses import dataclass

from certfleet.clock import Clock
from certfleet.console.services.accounts import Accounts
from certfleet.console.services.audit import Audit
from certfleet.console.services.autopilot import Autopilot
from certfleet.console.services.certificates import Certificates
from certfleet.console.services.clients import Clients
from certfleet.console.services.exports import Exports
from certfleet.console.services.fleet import Fleet
from certfleet.console.services.imports import Imports
from certfleet.console.services.issue_jobs import IssueJobs
from certfleet.console.services.issuers import Issuers
from certfleet.console.services.jobs import Jobs
from certfleet.console.services.queue import Queue
from certfleet.console.services.reveals import Reveals
from certfleet.console.services.status import Status
from certfleet.console.services.tokens import Tokens
from certfleet.console.services.trust import Trust
from certfleet.console.settings import ConsoleSettings
from certfleet.console.tls import ServedCertificate, TLSContexts
from certfleet.store import Store

__all__ = ["Console"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Console:
    """Everything a request needs, made once per application."""

    settings: ConsoleSettings
    clock: Clock
    tls: TLSContexts | None
    audit: Audit
    accounts: Accounts
    tokens: Tokens
    clients: Clients
    fleet: Fleet
    imports: Imports
    jobs: Jobs
    queue: Queue
    status: Status
    certificates: Certificates
    trust: Trust
    exports: Exports
    reveals: Reveals
    autopilot: Autopilot
    issuers: Issuers
    issue_jobs: IssueJobs

    @classmethod
    def over(cls, store: Store, *, settings: ConsoleSettings, clock: Clock, tls: TLSContexts | None) -> Console:
        audit = Audit(store)
        trust = Trust(store, audit, settings.extra_trust)
        clients = Clients(store.session, audit=audit, clock=clock)
        return cls(
            settings=settings,
            clock=clock,
            tls=tls,
            audit=audit,
            accounts=Accounts(
                store.session,
                audit=audit,
                clock=clock,
                session_idle=settings.session_idle,
                session_max=settings.session_max,
                setup_ttl=settings.setup_ttl,
            ),
            tokens=Tokens(store.session, audit=audit, clock=clock),
            clients=clients,
            fleet=Fleet(store, audit),
            imports=Imports(audit, settings=settings, clock=clock, trust=trust),
            jobs=Jobs(audit, clock=clock),
            queue=Queue(store, clock=clock),
            status=Status(store, settings=settings, clock=clock, trust=trust, clients=clients),
            certificates=Certificates(store, trust=trust, clock=clock, expiring_days=settings.expiring_days, tls=tls),
            trust=trust,
            exports=Exports(audit),
            reveals=Reveals(store, clock=clock),
            autopilot=Autopilot(audit, clock=clock),
            issuers=Issuers(store, audit),
            issue_jobs=IssueJobs(audit, clock=clock),
        )

    def served_for(self, host: str | None) -> ServedCertificate | None:
        """The certificate the console serves a client that connects to ``host`` (None without TLS)."""
        return self.tls.served_for(host) if self.tls is not None else None

    def served_fingerprint_for(self, host: str | None) -> str:
        """The leaf the console serves for ``host`` (what a client that pins would expect)."""
        served = self.served_for(host)
        return served.fingerprint if served is not None else ""
