"""Probes by zone: a node in a zone may be unreachable from where ``certfleet status`` or the
console runs, so a worker of its zone probes it and records what it saw in the store
(:meth:`certfleet.store.Store.record_probe`): the chain as sent, the TLS version and cipher, and
the probe's own problems. A probe is a job of the queue (kind ``probe``, one node): queued by the
workers of the zone every ``--probe-every`` seconds for the nodes not probed since
(:func:`queue_probes`, unique: one open per node), and by ``certfleet check --nodes``; taken by
any worker of the zone (:func:`probe_handler`). ``status`` (and the dashboard) judge
that recorded chain as they judge one probed here (:func:`certfleet.check.judge`), dated when the
worker probed it, instead of probing the node from where they run.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Mapping
from typing import Any

from cryptography import x509

from certfleet.check import EndpointReport, judge
from certfleet.clock import utc_now
from certfleet.endpoint import Endpoint
from certfleet.errors import CertfleetError, InputError, NotFoundError
from certfleet.jobs.context import JobContext, JobDone
from certfleet.probe import ProbeResult, StartTLS, probe
from certfleet.problems import Problem, ProblemCode, Severity
from certfleet.store import JobRecord, Store
from certfleet.trust import TrustStore

__all__ = [
    "PROBE",
    "due_probes",
    "probe_handler",
    "probe_payload",
    "probe_summary",
    "queue_probes",
    "recorded_result",
    "zone_probed",
]

PROBE = "probe"  # the kind of job
MAX_TIMEOUT = 10.0  # seconds a worker gives one probe (less when its --timeout is shorter)


def probe_payload(result: ProbeResult) -> dict[str, Any]:
    """A probe's result as the store keeps it (JSON): the chain as DER in base64."""
    return {
        "target": result.target,
        "host": result.host,
        "port": result.port,
        "server_name": result.server_name,
        "ok": result.ok,
        "chain": [base64.b64encode(der).decode("ascii") for der in result.chain_der],
        "tls_version": result.tls_version,
        "cipher": result.cipher,
        "problems": [p.to_dict() for p in result.problems],
        "elapsed": round(result.elapsed, 4),
        "starttls": result.starttls.value,
    }


def recorded_result(payload: Mapping[str, Any]) -> ProbeResult:
    """The probe result a worker recorded (:func:`probe_payload`), as :func:`certfleet.probe.probe`
    returns one. A chain that no longer parses is left out, and said."""
    problems = [
        Problem(
            ProblemCode(p["code"]),
            Severity(p["severity"]),
            str(p["message"]),
            str(p.get("hint") or ""),
            p.get("subject"),
        )
        for p in payload.get("problems", ())
    ]
    ders = [base64.b64decode(c) for c in payload.get("chain", ())]
    try:
        chain = tuple(x509.load_der_x509_certificate(d) for d in ders)
    except ValueError as exc:
        chain, ders = (), []
        problems.append(
            Problem(ProblemCode.INVALID, Severity.ERROR, f"the recorded chain cannot be read: {str(exc)[:200]}")
        )
    return ProbeResult(
        target=str(payload.get("target", "")),
        host=str(payload.get("host", "")),
        port=int(payload.get("port", 0)),
        server_name=payload.get("server_name"),
        ok=bool(payload.get("ok")) and bool(chain),
        chain=chain,
        tls_version=payload.get("tls_version"),
        cipher=payload.get("cipher"),
        problems=tuple(problems),
        elapsed=float(payload.get("elapsed", 0.0)),
        starttls=StartTLS(payload.get("starttls", StartTLS.NONE.value)),
        chain_der=tuple(ders),
    )


def probe_summary(served: ProbeResult) -> dict[str, Any]:
    """What a probe job says it found (its result; the probe itself is the node's record)."""
    problem = served.problems[0].message if served.problems else ""
    return {"ok": served.ok, "outcome": "ok" if served.ok else "failed", "target": served.target, "problem": problem}


async def probe_handler(ctx: JobContext, job: JobRecord) -> JobDone:
    """A ``probe`` job: probe the node's probe endpoint from this worker, record what it served
    (:meth:`Store.record_probe`, by this worker), and answer with :func:`probe_summary`. The job
    is done when the probe was made and recorded, whatever the node served; it fails when the
    node is gone, names no probe endpoint, or the store refused the record."""
    if job.node is None:
        raise InputError("a probe job names no node")
    specs = await asyncio.to_thread(ctx.store.node_specs, [job.node])
    spec = specs.get(job.node)
    if spec is None:
        raise NotFoundError(f"no node named {job.node[:80]!r}")
    endpoint = spec.endpoint()
    if endpoint is None:
        raise InputError(f"node {job.node} names no probe endpoint")
    timeout = min(ctx.options.command_timeout, MAX_TIMEOUT)
    served = await probe(
        endpoint.host, endpoint.port, server_name=endpoint.server_name, timeout=timeout, starttls=endpoint.starttls
    )
    await asyncio.to_thread(ctx.store.record_probe, job.node, probe_payload(served), by=ctx.worker, at=utc_now())
    summary = probe_summary(served)
    return JobDone(True, summary, summary["problem"] or served.target)


def due_probes(store: Store, zone: str | None, *, every: float, now: dt.datetime | None = None) -> list[str]:
    """The nodes of ``zone`` (None: of no zone) that name a probe endpoint and whose last recorded
    probe is older than ``every`` seconds (or that have none), by name."""
    cutoff = (now or utc_now()) - dt.timedelta(seconds=every)
    zones = store.node_zones()
    recorded = store.recorded_probes()
    due: dict[str, None] = {}
    for node in store.nodes():
        if zones.get(node.name) != zone or node.name in due:
            continue
        try:
            if node.endpoint() is None:
                continue
        except CertfleetError:
            continue  # an endpoint that no longer parses: said by `status`, never probed
        last = recorded.get(node.name)
        if last is None or last.at < cutoff:
            due[node.name] = None
    return list(due)


def queue_probes(store: Store, zone: str | None, *, every: float, now: dt.datetime | None = None) -> list[JobRecord]:
    """A worker's round (``--probe-every``): a ``probe`` job for each of :func:`due_probes`, in one
    transaction, unique (a node with a probe job queued or running gets none more: the workers of
    a zone, however many, probe each node once a round)."""
    due = due_probes(store, zone, every=every, now=now)
    if not due:
        return []
    return store.enqueue_jobs(PROBE, [("", node, zone, {}) for node in due], unique=True)


def zone_probed(
    store: Store, endpoints: Mapping[str, Endpoint], *, trust: TrustStore, now: dt.datetime, expiring_days: int
) -> dict[str, tuple[EndpointReport | None, dt.datetime | None, str]]:
    """Of ``endpoints`` (by node name), those a worker of their zone probes (a PostgreSQL store, a
    node in a zone): the last probe recorded, judged now as ``certfleet check`` judges one, when
    it was made, and by which worker (None, None, "": none probed it yet). On SQLite: none."""
    if store.url.startswith("sqlite"):
        return {}
    zones = store.node_zones()
    zoned = [name for name in endpoints if zones.get(name)]
    if not zoned:
        return {}
    recorded = store.recorded_probes()
    out: dict[str, tuple[EndpointReport | None, dt.datetime | None, str]] = {}
    for name in zoned:
        found = recorded.get(name)
        if found is None:
            out[name] = (None, None, "")
            continue
        served = recorded_result(found.probed)
        report = judge(endpoints[name], served, trust=trust, now=now, expiring_days=expiring_days)
        out[name] = (report, found.at, found.by)
    return out
