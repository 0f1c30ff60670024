"""Check endpoints as a strict client would: what each one serves, and whether a phone accepts it.

Every endpoint is probed (:mod:`certfleet.probe`), then its chain *as served* is verified without
fetching anything (a phone never fetches a missing intermediate) and linted. Thousands of
endpoints run concurrently under a bound on connections in flight, a timeout per connection and
an overall deadline; one failing endpoint is a result, never an exception that stops the rest.

Fleets serve the same intermediates from every server, so parsed certificates are shared by
their DER bytes, and endpoints that send the same intermediates share one verifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.exceptions import UnsupportedAlgorithm

from certfleet.certinfo import CertInfo, describe
from certfleet.endpoint import Endpoint
from certfleet.errors import CertfleetError
from certfleet.lint import lint
from certfleet.probe import CertCache, ProbeResult, probe
from certfleet.problems import EXPIRING_DAYS, Problem, ProblemCode, Severity, worst
from certfleet.trust import TrustStore
from certfleet.verify import Verifier

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TIMEOUT",
    "CheckReport",
    "EndpointReport",
    "check",
    "judge",
    "run_async",
    "run_check",
    "unprobed",
]

_T = TypeVar("_T")

DEFAULT_CONCURRENCY = 200
DEFAULT_TIMEOUT = 5.0
_MAX_VERIFIERS = 10_000
_MAX_DESCRIBED = 200_000
_MAX_VERDICTS = 100_000  # distinct sets of intermediates kept; a fleet has a handful
# DNS look-ups run in threads; asyncio's default pool (cores + 4) would serialise a large fleet
_RESOLVER_THREADS = 64

# ------------------------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class EndpointReport:
    """What one endpoint serves and what a strict client makes of it."""

    target: Endpoint
    probe: ProbeResult
    verified: bool  # the chain as served leads to a trusted root for the expected name, no fetching
    name: str  # the name checked
    chain: tuple[CertInfo, ...]  # as served, in the order sent
    days_left: int | None  # of the leaf; negative once expired
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        """The handshake worked, the chain verifies, and nothing is an error."""
        return self.probe.ok and self.verified and self.severity is not Severity.ERROR

    @property
    def severity(self) -> Severity | None:
        return worst(self.problems)

    def fails(self, fail_on: Severity = Severity.ERROR) -> bool:
        """True when a problem is at least as severe as ``fail_on`` (or the endpoint is not ok)."""
        if not self.ok:
            return True
        found = self.severity
        return found is not None and found.rank >= fail_on.rank

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": str(self.target),
            "node": self.target.label,
            "host": self.target.host,
            "port": self.target.port,
            "name": self.name,
            "server_name": self.probe.server_name,
            "starttls": self.probe.starttls.value,
            "ok": self.ok,
            "verified": self.verified,
            "tls_version": self.probe.tls_version,
            "cipher": self.probe.cipher,
            "days_left": self.days_left,
            "not_after": self.chain[0].not_after.isoformat() if self.chain else None,
            "chain": [info.to_dict() for info in self.chain],
            "problems": [p.to_dict() for p in self.problems],
            "elapsed": round(self.probe.elapsed, 4),
        }


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Every endpoint, in the order given."""

    endpoints: tuple[EndpointReport, ...]
    checked_at: dt.datetime
    elapsed: float  # seconds for the whole run
    deadline_reached: bool = False

    def failed(self, fail_on: Severity = Severity.ERROR) -> list[EndpointReport]:
        return [e for e in self.endpoints if e.fails(fail_on)]

    def counts(self) -> dict[str, int]:
        """``ok`` (nothing to say), ``warning`` (works, with warnings), ``failing`` (a client refuses)."""
        out = {"ok": 0, "warning": 0, "failing": 0}
        for e in self.endpoints:
            if not e.ok:
                out["failing"] += 1
            elif e.severity is Severity.WARNING:
                out["warning"] += 1
            else:
                out["ok"] += 1
        return out

    def to_list(self) -> list[dict[str, Any]]:
        """The ``--json`` form: a list with one object per endpoint."""
        return [e.to_dict() for e in self.endpoints]

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at.isoformat(),
            "elapsed": round(self.elapsed, 3),
            "deadline_reached": self.deadline_reached,
            "counts": self.counts(),
            "endpoints": self.to_list(),
        }


# --------------------------------------------------------------------------------- evaluation


class _Evaluator:
    """Turns probe results into reports, sharing parsed certificates, descriptions, verifiers and
    verdicts between the endpoints that serve the same things."""

    def __init__(self, trust: TrustStore, now: dt.datetime, expiring_days: int) -> None:
        self.trust = trust
        self.now = now
        self.expiring_days = expiring_days
        self.certs = CertCache()
        self._by_der: dict[bytes, CertInfo] = {}
        self._verifiers: dict[tuple[bytes, ...], Verifier] = {}
        self._verdicts: dict[tuple[tuple[bytes, ...], str], tuple[bool, tuple[Problem, ...]]] = {}

    def _infos(self, served: ProbeResult) -> tuple[CertInfo, ...]:
        if len(served.chain) != len(served.chain_der):  # a certificate was unreadable: no keys
            return tuple(describe(c) for c in served.chain)
        out = []
        for cert, der in zip(served.chain, served.chain_der, strict=True):
            info = self._by_der.get(der)
            if info is None:
                info = describe(cert)
                if len(self._by_der) < _MAX_DESCRIBED:
                    self._by_der[der] = info
            out.append(info)
        return tuple(out)

    def _verifier(self, served: ProbeResult) -> Verifier:
        # endpoints that send the same intermediates share one verifier (its trust store and
        # policy are built once); the key is their DER, as sent
        key = served.chain_der[1:]
        verifier = self._verifiers.get(key)
        if verifier is None:
            verifier = Verifier(self.trust, served.chain[1:], at=self.now, reuse_proven=True)
            if len(self._verifiers) < _MAX_VERIFIERS:
                self._verifiers[key] = verifier
        return verifier

    def failed(self, target: Endpoint, served: ProbeResult) -> EndpointReport:
        return EndpointReport(
            target=target,
            probe=served,
            verified=False,
            name=target.expected_name,
            chain=self._infos(served),
            days_left=None,
            problems=served.problems,
        )

    def _judge(self, served: ProbeResult, name: str) -> tuple[bool, tuple[Problem, ...]]:
        """Whether a strict client accepts the chain as served for ``name``, and the problems.

        One certificate on every server is the point of a fleet: the verdict for the same chain
        and name is worked out once and shared by every endpoint that serves it.
        """
        key = (served.chain_der, name)
        known = self._verdicts.get(key)
        if known is not None:
            return known
        try:
            verification = self._verifier(served).verify(served.chain[0], name)
            found = [
                *verification.problems,
                *lint(served.chain, now=self.now, expiring_days=self.expiring_days, trust=self.trust),
            ]
            valid = verification.valid
        except (ValueError, TypeError, UnsupportedAlgorithm, CertfleetError) as exc:
            # a certificate cryptography cannot work with: reported for this chain only
            valid = False
            found = [
                Problem(
                    ProblemCode.INVALID,
                    Severity.ERROR,
                    f"the served chain cannot be verified: {str(exc)[:200]}",
                    "check the certificate files on the server",
                )
            ]
        unique: list[Problem] = []
        seen: set[tuple[ProblemCode, str | None]] = set()
        for problem in found:  # verification and lint may both see an expiry
            if (problem.code, problem.subject) not in seen:
                seen.add((problem.code, problem.subject))
                unique.append(problem)
        verdict = (valid, tuple(unique))
        if len(self._verdicts) < _MAX_VERDICTS:
            self._verdicts[key] = verdict
        return verdict

    def evaluate(self, target: Endpoint, served: ProbeResult) -> EndpointReport:
        if not served.ok or not served.chain or len(served.chain) != len(served.chain_der):
            return self.failed(target, served)
        verified, found = self._judge(served, target.expected_name)
        return EndpointReport(
            target=target,
            probe=served,
            verified=verified,
            name=target.expected_name,
            chain=self._infos(served),
            days_left=(served.chain[0].not_valid_after_utc - self.now).days,
            problems=served.problems + found,
        )


def _within_file_limit(concurrency: int) -> int:
    """``concurrency``, lowered if the process may not open that many sockets.

    The soft limit on open files is raised towards the hard one first (it is often 1,024 while
    the hard limit is far higher); an endpoint must never be reported unreachable only because
    certfleet ran out of file descriptors.
    """
    try:
        import resource
    except ImportError:  # not a POSIX system: no limit we can read
        return concurrency
    spare = 64  # the interpreter, DNS threads, the terminal
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = concurrency + spare
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):  # not allowed: keep what we have
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return concurrency
    return max(1, min(concurrency, soft - spare))


def unprobed(target: Endpoint, problem: Problem) -> ProbeResult:
    """What is known of an endpoint that was not probed: ``problem`` says why."""
    return ProbeResult(
        target=str(target),
        host=target.host,
        port=target.port,
        server_name=target.server_name,
        ok=False,
        problems=(problem,),
    )


def _deadline_result(target: Endpoint, deadline: float) -> ProbeResult:
    return unprobed(
        target,
        Problem(
            ProblemCode.TIMEOUT,
            Severity.ERROR,
            f"not checked within the overall deadline of {deadline:g} s",
            "raise --deadline or --concurrency, or lower --timeout",
        ),
    )


async def check(
    targets: Sequence[Endpoint],
    *,
    trust: TrustStore,
    timeout: float = DEFAULT_TIMEOUT,
    concurrency: int = DEFAULT_CONCURRENCY,
    deadline: float | None = None,
    now: dt.datetime | None = None,
    expiring_days: int = EXPIRING_DAYS,
    on_result: Callable[[EndpointReport], None] | None = None,
) -> CheckReport:
    """Probe and judge every target; at most ``concurrency`` connections are open at once.

    ``timeout`` bounds each connection; ``deadline`` (seconds) bounds the whole run, and targets
    not done by then are reported as ``timeout``. ``now`` is when certificates are judged (the
    clock when None). ``on_result`` is called as each endpoint finishes (progress).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if timeout <= 0 or (deadline is not None and deadline <= 0):
        raise ValueError("timeout and deadline must be positive")
    concurrency = _within_file_limit(concurrency)
    at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    evaluator = _Evaluator(trust, at, expiring_days)
    results: list[EndpointReport | None] = [None] * len(targets)
    pending = iter(range(len(targets)))
    started = time.monotonic()

    async def worker() -> None:
        # a shared iterator hands each worker the next target: no queue, no task per target
        for index in pending:
            target = targets[index]
            served = await probe(
                target.host,
                target.port,
                server_name=target.server_name,
                timeout=timeout,
                starttls=target.starttls,
                certs=evaluator.certs,
            )
            report = evaluator.evaluate(target, served)
            results[index] = report
            if on_result is not None:
                on_result(report)

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(targets)))]
    deadline_reached = False
    try:
        async with asyncio.timeout(deadline):
            await asyncio.gather(*workers)
    except TimeoutError:
        deadline_reached = True
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    final: list[EndpointReport] = []
    for index, report in enumerate(results):
        if report is None:
            target = targets[index]
            report = evaluator.failed(target, _deadline_result(target, deadline or 0.0))
            if on_result is not None:
                on_result(report)
        final.append(report)
    return CheckReport(
        endpoints=tuple(final),
        checked_at=at,
        elapsed=time.monotonic() - started,
        deadline_reached=deadline_reached,
    )


def judge(
    target: Endpoint, served: ProbeResult, *, trust: TrustStore, now: dt.datetime, expiring_days: int = EXPIRING_DAYS
) -> EndpointReport:
    """What a strict client makes of ``served``, a probe made elsewhere (a worker of the node's
    zone recorded it), judged as :func:`check` judges its own."""
    return _Evaluator(trust, now.astimezone(dt.UTC), expiring_days).evaluate(target, served)


def run_check(targets: Sequence[Endpoint], **options: Any) -> CheckReport:
    """:func:`check` from synchronous code, in an event loop of its own."""
    return run_async(check(targets, **options))


def run_async(main: Coroutine[Any, Any, _T]) -> _T:
    """Run ``main`` in a new event loop with threads enough for a fleet's DNS look-ups."""

    async def with_resolvers() -> _T:
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=_RESOLVER_THREADS, thread_name_prefix="certfleet-dns")
        )
        return await main

    return asyncio.run(with_resolvers())


