"""One autopilot pass: every due lineage is issued, imported, deployed to all its nodes, proven, and
recorded; every other lineage is left alone, and the report says when it will be due.

For each lineage, in turn:

1. **Plan** (:func:`certfleet.renewal.plan_renewal`): the CA's renewal window (ARI, asked of the
   issuer that made the active certificate, again only when the CA said to), else the lifetime
   rule; a revoked certificate at once; the backoff after a failure.
2. **Due, ACME**: :func:`certfleet.acme.issue.issue`, whose certificate enters the store through
   the one import path (chain, strict verification, every node's names); the order names the
   certificate it replaces when the CA offers ARI. A failure changes nothing that is live; the
   next try waits (5 minutes doubling to 6 hours, or the CA's ``Retry-After``).
3. **Due, manual**: a new key and CSR (unless one waits already), and someone is told to buy.
4. **Deploy** the active version to every node that lacks it (all of them after an issue), but
   only once a strict client accepts it for every node's names: through
   :func:`certfleet.fleet.rollout.prepare_deploy`, so every node is switched atomically, probed
   until it serves the version, and rolled back alone if it does not. A node whose deploy failed
   is tried again at a later pass; one that someone deployed or rolled back by hand after the
   version arrived is left as it is.

Then the nodes are probed (a node serving an older or a revoked certificate) and the conditions
found go to :meth:`certfleet.autopilot.alerts.Alerts.dispatch`. A pass takes the store's pass
lock (:mod:`certfleet.autopilot.lock`): a second one started meanwhile stops at once and says so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from certfleet.acme.issue import Attempt, IssueEvent, IssueResult
from certfleet.acme.lookup import DnsSettings
from certfleet.acme.model import IssuerRecord
from certfleet.autopilot import conditions as found
from certfleet.autopilot.alerts import Alerts, Condition, Event, Scope
from certfleet.autopilot.ledger import AriCache, Ledger, Outcome, RenewalState
from certfleet.autopilot.lock import PassBusy, PassLock, pass_lock
from certfleet.autopilot.notify import Notifier
from certfleet.autopilot.report import Action, LineageRun, RenewReport, RenewSettings
from certfleet.autopilot.schedule import facts_for, standing
from certfleet.clock import Clock, utc_now
from certfleet.errors import CertfleetError, EnvError, InputError
from certfleet.fleet.deploy import Prober
from certfleet.problems import ProblemCode, Severity
from certfleet.renewal import Issuing, RenewalPlan, RenewalWindow, plan_renewal, retry_delay
from certfleet.store import Store, VersionRecord, VersionState
from certfleet.trust import TrustStore

__all__ = ["Action", "LineageRun", "RenewReport", "RenewSettings", "renew"]

NO_ARI_RECHECK = dt.timedelta(days=1)  # a CA without renewal information is asked again after this
QUEUED_WAIT = 600.0  # seconds a deploy step waits for the workers of its nodes' zones
AUDIT_RENEW = "renew"


class _Pass:
    """The state one pass shares between its lineages."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        dry_run: bool,
        force: bool,
        settings: RenewSettings,
        dns: DnsSettings | None,
        prober: Prober | None,
        progress: Callable[[IssueEvent], None] | None,
        zone: str | None = None,
    ) -> None:
        self.store = store
        self.zone = zone  # where the pass runs (a worker's zone): the nodes it deploys itself
        self.clock = clock
        self.now = clock()
        self.dry_run = dry_run
        self.force = force
        self.settings = settings
        self.dns = dns
        self.prober = prober
        self.progress = progress
        self.ledger = Ledger(store, clock=clock)
        self.conditions: list[Condition] = []
        self.scope = Scope()
        self._trust: TrustStore | None = None

    @property
    def trust(self) -> TrustStore:
        if self._trust is None:
            from certfleet.fleet.lineage import trust_for

            self._trust = trust_for(self.store)
        return self._trust

    def look(self, *items: tuple[Event, str, str | None]) -> None:
        self.scope = self.scope.plus(*items)

    # -- one lineage ------------------------------------------------------------------------------

    async def lineage(self, name: str) -> LineageRun:
        where = standing(self.store, name)
        issuing, first, active = where.issuing, where.first, where.active
        state = self.ledger.state(name)
        window, replaces = await self._ari(name, active, state, issuing)
        facts = facts_for(where, state, window=window, manual_days=self.settings.manual_days)
        plan = plan_renewal(facts, now=self.now, force=self.force)
        if not self.dry_run:
            self.ledger.plan(name, plan.next_attempt, plan.reason.value)
        self.look((Event.EXPIRING, name, None))
        expiring = found.expiry(name, active, now=self.now, days=self._expiry_days(), plan=plan)
        if expiring is not None:
            self.conditions.append(expiring)
        try:
            return await self._act(
                name, plan, issuing=issuing, first=first, active=active, state=state, replaces=replaces
            )
        except CertfleetError as exc:  # this lineage's failure, told; the pass goes on to the others
            if self.dry_run:
                return LineageRun(name, plan, Action.FAILED, str(exc), error=str(exc), hint=exc.hint)
            return self._failed(name, plan, str(exc), active=active, hint=exc.hint)

    async def _act(
        self,
        name: str,
        plan: RenewalPlan,
        *,
        issuing: Issuing,
        first: IssuerRecord | None,
        active: VersionRecord | None,
        state: RenewalState,
        replaces: dict[str, str] | None,
    ) -> LineageRun:
        if plan.due and issuing is Issuing.MANUAL:
            return self._manual(name, plan, active)
        if plan.due:
            return await self._issue(name, plan, active, first, replaces)
        self.look((Event.MANUAL_WAITING, name, None))  # not due: nothing waits to be bought
        if not plan.backing_off:
            self.look((Event.RENEWAL_FAILED, name, None))
        owed = self._owed(name, active)
        if not owed:
            self.look((Event.DEPLOY_FAILED, name, None), (Event.DEPLOY_ROLLED_BACK, name, None))
            return LineageRun(name, plan, Action.WAITING if plan.backing_off else Action.NOTHING, plan.detail)
        if active is None:  # nothing is owed without an active version
            raise ValueError("owed nodes without an active version")
        wait = self._deploy_wait(state)
        if wait is not None:
            summary = (
                f"{len(owed)} node(s) lack version {active.number} ({', '.join(owed)}); "
                f"next try at {wait:%Y-%m-%d %H:%M} UTC"
            )
            return LineageRun(name, plan, Action.WAITING, summary, owed=tuple(owed))
        return await self._deploy(name, plan, active, owed)

    def _expiry_days(self) -> tuple[int, ...]:
        days = self.ledger.setting("alert.expiry_days") or []
        return tuple(int(d) for d in days if isinstance(d, int) and d > 0)

    def _deploy_wait(self, state: RenewalState) -> dt.datetime | None:
        if self.force or not state.failures or state.last_attempt_at is None:
            return None
        at = state.last_attempt_at + retry_delay(state.failures)
        return at if at > self.now else None

    async def _ari(
        self, name: str, active: VersionRecord | None, state: RenewalState, issuing: Issuing
    ) -> tuple[RenewalWindow | None, dict[str, str] | None]:
        """The CA's window for the active certificate, and what a new order ``replaces``: asked of
        the ACME issuer that made it, and only when the CA said to ask again (or for a new one)."""
        if issuing is not Issuing.ACME or active is None or active.leaf is None or active.fingerprint is None:
            return None, None
        origin = next((i for i in self.store.issuances(name) if i.version == active.number), None)
        if origin is None:
            return None, None
        try:
            issuer = self.store.issuer(origin.issuer)
        except InputError:  # the issuer was removed since
            return None, None
        if not issuer.is_acme:
            return None, None
        cache = state.ari if state.ari is not None and state.ari.fingerprint == active.fingerprint else None
        fresh = cache is not None and cache.ask_again is not None and cache.ask_again > self.now
        expired = active.not_after is not None and active.not_after <= self.now  # RFC 9773: never asked then
        if not fresh and not expired:
            cache = await asyncio.to_thread(self._fetch_ari, issuer, active, cache)
        if cache is None or cache.window is None:
            return None, None
        return cache.window, ({issuer.name: cache.cert_id} if cache.cert_id else None)

    def _fetch_ari(self, issuer: IssuerRecord, active: VersionRecord, cache: AriCache | None) -> AriCache | None:
        from certfleet.acme.accounts import connect
        from certfleet.acme.ari import fetch_renewal_info

        if active.leaf is None or active.fingerprint is None:
            return cache
        try:
            with connect(self.store, issuer) as conn:
                info = fetch_renewal_info(conn, active.leaf, now=self.now)
        except CertfleetError:
            return cache  # the CA is down or answers nonsense: the window it gave before still holds
        if info is None:
            fresh = AriCache(active.fingerprint, None, None, self.now + NO_ARI_RECHECK)
        else:
            fresh = AriCache(active.fingerprint, info.cert_id, info.window, info.ask_again)
        if not self.dry_run:
            self.ledger.remember_ari(active.lineage, fresh)
        return fresh

    def _owed(self, name: str, active: VersionRecord | None) -> list[str]:
        """The lineage's nodes that lack the active version: never deployed since it arrived, or
        whose deploy of it failed. A node deployed (or rolled back) by hand since is left alone."""
        if active is None:
            return []
        last = self.store.last_results(name)
        owed = []
        for node in self.store.nodes(name):
            found_last = last.get(node.name)
            if found_last is None:
                owed.append(node.name)
                continue
            deployment, result = found_last
            if deployment.version == active.number:
                if not result.outcome.ok:
                    owed.append(node.name)
            elif active.issued_at is None or deployment.started_at < active.issued_at:
                owed.append(node.name)
        return owed

    # -- doing it ---------------------------------------------------------------------------------

    def _audit(self, run: LineageRun) -> LineageRun:
        if not self.dry_run and run.action not in (Action.NOTHING, Action.WAITING):
            detail: dict[str, Any] = {
                "lineage": run.lineage,
                "action": run.action.value,
                "reason": run.plan.reason.value,
                "version": run.version,
                "error": run.error,
            }
            if run.deployed is not None:
                detail["nodes"] = {n.node: n.outcome.value for n in run.deployed.report.nodes}
            self.store.audit(AUDIT_RENEW, detail)
        return run

    def _failed(
        self,
        name: str,
        plan: RenewalPlan,
        error: str,
        *,
        active: VersionRecord | None,
        hint: str | None,
        attempts: Sequence[Attempt] = (),
        **extra: Any,
    ) -> LineageRun:
        retry_after = max((a.retry_after for a in attempts if a.retry_after is not None), default=None)
        state = self.ledger.record(name, Outcome.FAILED, at=self.now, error=error, retry_after=retry_after)
        left = active.not_after - self.now if active is not None and active.not_after is not None else None
        next_try = self.now + retry_delay(state.failures, left)
        if retry_after is not None:
            next_try = max(next_try, retry_after)
        self.ledger.plan(name, next_try, plan.reason.value)
        self.conditions.append(
            found.renewal_failed(name, error, hint=hint, attempts=attempts, active=active, next_try=next_try)
        )
        summary = f"renewal failed: {error}; next try at {next_try:%Y-%m-%d %H:%M} UTC"
        return self._audit(LineageRun(name, plan, Action.FAILED, summary, error=error, hint=hint, **extra))

    async def _issue(
        self,
        name: str,
        plan: RenewalPlan,
        active: VersionRecord | None,
        first: IssuerRecord | None,
        replaces: dict[str, str] | None,
    ) -> LineageRun:
        from certfleet.acme.issue import issue

        nodes = [n.name for n in self.store.nodes(name)]
        if self.dry_run:
            issuer = first.name if first is not None else "its issuers"
            naming = " naming the certificate it replaces (ARI)" if replaces else ""
            summary = (
                f"would issue from {issuer}{naming} ({plan.detail}), then deploy to {', '.join(nodes) or 'no node'}"
            )
            return LineageRun(name, plan, Action.WOULD_ISSUE, summary)
        self.look((Event.RENEWAL_FAILED, name, None))
        try:
            result = await issue(
                self.store, name, clock=self.clock, progress=self.progress, dns=self.dns or DnsSettings.from_env(),
                check_first=self.settings.preflight, replaces=replaces,
            )  # fmt: skip
        except CertfleetError as exc:
            attempts = getattr(exc, "attempts", ())
            return self._failed(name, plan, str(exc), active=active, hint=exc.hint, attempts=attempts)
        version = result.imported.version if result.imported is not None else None
        if not result.ok or version is None:
            if result.preflight is not None and not result.preflight.ok:
                why = "; ".join(f"{c.subject}: {c.message}" for c in result.preflight.failed())
                error = f"the preflight refused, nothing was ordered: {why}"
                hint = f"`certfleet issue {name} --dry-run` shows each name's checks"
            else:
                problems = result.imported.problems if result.imported is not None else ()
                error = "the CA's certificate was refused: " + ("; ".join(p.message for p in problems) or "not stored")
                hint = "nothing was stored or deployed"
            return self._failed(name, plan, error, active=active, hint=hint, attempts=result.attempts, issued=result)
        return await self._deploy(name, plan, version, nodes, issued=result)

    def _manual(self, name: str, plan: RenewalPlan, active: VersionRecord | None) -> LineageRun:
        from certfleet.fleet.lineage import request

        self.look((Event.MANUAL_WAITING, name, None))
        newest = active.number if active is not None else 0
        pending = [v for v in self.store.versions(name) if v.state is VersionState.PENDING and v.number > newest]
        if pending:
            waiting = pending[-1]
            summary = f"version {waiting.number}'s CSR waits for the certificate to be bought ({plan.detail})"
            action = Action.WAITING
        elif self.dry_run:
            return LineageRun(name, plan, Action.WOULD_REQUEST, f"would make a new key and CSR ({plan.detail})")
        else:
            waiting = request(self.store, name).version
            self.ledger.record(name, Outcome.REQUESTED, at=self.now, version=waiting.number)
            summary = f"a new key and CSR wait as version {waiting.number} ({plan.detail})"
            action = Action.REQUESTED
        self.conditions.append(found.manual_waiting(name, waiting, active, plan))
        return self._audit(LineageRun(name, plan, action, summary, version=waiting.number))

    def _unproven(self, name: str, version: VersionRecord) -> str | None:
        """Why a strict client would refuse ``version`` for one of the lineage's names (None: it is proven)."""
        from certfleet.fleet.health import version_health
        from certfleet.fleet.nodes import lineage_names

        if version.leaf is None:
            return f"version {version.number} has no certificate"
        record = self.store.lineage(name)
        names = lineage_names(record, self.store.nodes(name))
        # judged now, not at the pass's start: the certificate may have been issued since
        health = version_health(version.leaf, version.chain, trust=self.trust, now=self.clock(), required=names)
        refused = [
            p.message
            for p in health.problems
            if p.severity is Severity.ERROR and (not health.valid or p.code is ProblemCode.NAME_MISMATCH)
        ]
        if health.valid and not refused:
            return None
        return "; ".join(refused) or "a strict client refuses its chain"

    async def _deploy(
        self,
        name: str,
        plan: RenewalPlan,
        version: VersionRecord,
        nodes: Sequence[str],
        *,
        issued: IssueResult | None = None,
    ) -> LineageRun:
        from certfleet.fleet.rollout import prepare_deploy
        from certfleet.jobs.deployments import route_deploy, run_queued

        if self.dry_run:
            summary = f"would deploy version {version.number} to {', '.join(nodes)} (they lack it)"
            return LineageRun(name, plan, Action.WOULD_DEPLOY, summary, version=version.number, owed=tuple(nodes))
        why = self._unproven(name, version)
        if why is not None:
            error = f"version {version.number} is not deployed: it is not proven ({why})"
            return self._failed(name, plan, error, active=None, hint=f"`certfleet status {name}`", issued=issued)
        waiting: tuple[str, ...] = ()
        try:
            route = route_deploy(self.store, name, nodes, here=self.zone)
            if route.queued:  # PostgreSQL, nodes in other zones: their zones' workers deploy them, bounded
                queued = await run_queued(
                    self.store, name, route.nodes, options=self.settings.deploy, wait=QUEUED_WAIT,
                    prober=self.prober, here=self.zone,
                )  # fmt: skip
                result, waiting = queued.as_result(fingerprint=version.fingerprint or ""), queued.waiting
            else:
                rollout = prepare_deploy(self.store, name, nodes, options=self.settings.deploy)
        except EnvError as exc:  # a deploy of the lineage started by hand is running: the next pass goes on
            return LineageRun(name, plan, Action.SKIPPED, str(exc), version=version.number, issued=issued)
        if not route.queued:
            with rollout:
                result = await rollout.run(prober=self.prober, clock=self.clock)
        self.conditions.extend(found.deploy_problems(name, result))
        for node in result.report.nodes:
            self.look((Event.DEPLOY_FAILED, name, node.node), (Event.DEPLOY_ROLLED_BACK, name, node.node))
        failed = tuple(n.node for n in result.report.nodes if not n.ok)
        proven = [n.node for n in result.report.nodes if n.ok]
        outcome = Outcome.PARTIAL if failed else Outcome.RENEWED if issued is not None else Outcome.DEPLOYED
        unserved = f" (no worker of {', '.join(waiting)} in time)" if waiting else ""
        self.ledger.record(
            name, outcome, at=self.now, version=version.number,
            error=f"not deployed to {', '.join(failed)}{unserved}" if failed else None,
        )  # fmt: skip
        if failed:
            self.ledger.plan(name, self.now + retry_delay(1), plan.reason.value)
        done = f"issued version {version.number}" if issued is not None else f"version {version.number}"
        summary = f"{done}: deployed and proven on {len(proven)} of {len(result.report.nodes)} node(s)"
        if failed:
            summary += f"; not on {', '.join(failed)} (they keep what they had)"
        if waiting:
            summary += f"; no worker finished the jobs of {', '.join(waiting)} in time (they stay queued)"
        action = Action.ISSUED if issued is not None else Action.DEPLOYED
        return self._audit(
            LineageRun(name, plan, action, summary, version=version.number, issued=issued, deployed=result, owed=failed)
        )

    # -- after the lineages -------------------------------------------------------------------------

    async def probe(self, names: Sequence[str]) -> None:
        """What every node serves now: older, foreign and revoked certificates become conditions."""
        from certfleet.fleet.status import Serving, status

        revoked = {r.fingerprint for r in self.store.revocations() if r.fingerprint}
        wanted = set(names)
        report = await status(self.store, now=self.clock(), probe=True, trust=self.trust)
        for lineage in report.lineages:
            if lineage.name not in wanted:
                continue
            self.conditions.extend(found.served_problems(lineage, revoked))
            for node in lineage.nodes:
                if node.serving in (Serving.ACTIVE, Serving.OLDER, Serving.OTHER):
                    self.look(
                        (Event.SERVING_OTHER, lineage.name, node.node), (Event.REVOKED_SERVED, lineage.name, node.node)
                    )


async def renew(
    store: Store,
    *,
    lineages: Sequence[str] = (),
    dry_run: bool = False,
    force: bool = False,
    clock: Clock = utc_now,
    settings: RenewSettings | None = None,
    dns: DnsSettings | None = None,
    prober: Prober | None = None,
    notifier: Notifier | None = None,
    progress: Callable[[IssueEvent], None] | None = None,
    on_lineage: Callable[[LineageRun], None] | None = None,
    lock: PassLock | None = None,
    zone: str | None = None,
) -> RenewReport:
    """One pass over ``lineages`` (every lineage when none is named); see the module's words.

    ``dry_run`` says what would be done and why, changing nothing (it takes no lock). ``force``
    renews every lineage named now, whatever its plan. ``clock`` is the one time source (the
    plan, the import's verification, the deploy's dates). ``prober`` replaces the deploy's TLS
    probe, ``notifier`` the delivery of alerts. ``on_lineage`` is told each lineage's run as it
    ends. ``lock``: the pass lock, taken already by a caller that wants to know at once whether
    another pass runs (:func:`certfleet.autopilot.lock.pass_lock`); the pass lets go of it when
    it ends. ``zone``: where the pass runs (a worker of that zone ran a ``renew`` job): on a
    PostgreSQL store it deploys the nodes of that zone itself, and those of the other zones (of
    no zone too) go to their workers. Raises :class:`InputError` for an unknown lineage before
    anything is done.
    """
    started = clock()
    names = list(dict.fromkeys(lineages)) or [r.name for r in store.lineages()]
    try:
        for name in names:
            store.lineage(name)  # an unknown lineage is refused before the lock is taken
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if lock is None:
        lock = pass_lock(store)
        if not dry_run:
            try:
                lock.acquire()
            except PassBusy as exc:
                return RenewReport(started, clock(), dry_run=dry_run, forced=force, busy=str(exc))
    try:
        work = _Pass(
            store, clock=clock, dry_run=dry_run, force=force, settings=settings or RenewSettings(), dns=dns,
            prober=prober, progress=progress, zone=zone,
        )  # fmt: skip
        runs = []
        for name in names:
            run = await work.lineage(name)
            runs.append(run)
            if on_lineage is not None:
                on_lineage(run)
        if work.settings.probe and names:
            await work.probe(names)
        alerts = Alerts(store, notifier=notifier, clock=clock)
        sent = await asyncio.to_thread(alerts.dispatch, work.conditions, work.scope, dry_run=dry_run)
    finally:
        lock.release()
    return RenewReport(
        started, clock(), dry_run=dry_run, forced=force, lineages=tuple(runs), conditions=tuple(work.conditions),
        alerts=tuple(sent),
    )  # fmt: skip
