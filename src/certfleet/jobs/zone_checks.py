"""``certfleet check`` through the workers of a zone (a PostgreSQL store): the asking side.

- :func:`probe_nodes`: ``check --nodes``, for the chosen nodes in a zone. A ``probe`` job each
  (unique: one already open is followed, not doubled), followed for up to ``wait`` seconds; the
  probe a worker recorded is judged here, as ``certfleet status`` judges it
  (:func:`certfleet.jobs.probes.zone_probed`).
- :func:`check_in_zone`: ``check HOST:PORT --zone dmz``. A ``check`` job each, followed the same
  way; what the worker saw comes back as the job's result and is judged here (the trust store
  and the time of the one asking).

An endpoint whose job no worker ended in time is reported failing, in one line naming the zone
("no worker of zone dmz probed it in time"). A probe job stays queued, and a worker started later
records the probe for ``status``; a check job no worker took is ended, failed, by the one who
asked (nobody waits for its answer any more), and pruned with the ended jobs a day later.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from certfleet.check import EndpointReport, judge, unprobed
from certfleet.clock import utc_now
from certfleet.endpoint import Endpoint
from certfleet.jobs.endpoint_jobs import CHECK, endpoint_payload
from certfleet.jobs.probes import PROBE, recorded_result, zone_probed
from certfleet.jobs.runner import follow_jobs
from certfleet.probe import ProbeResult
from certfleet.problems import Problem, ProblemCode, Severity
from certfleet.store import JobRecord, JobState, Store
from certfleet.trust import TrustStore

__all__ = ["ZoneChecked", "check_in_zone", "probe_nodes", "zoned_nodes"]


@dataclass(frozen=True, slots=True)
class ZoneChecked:
    """An endpoint judged from what a worker of ``zone`` saw there: by whom (``""``: no worker
    ended its job in time), when, and the job."""

    report: EndpointReport
    zone: str
    job: int
    by: str = ""
    at: dt.datetime | None = None

    def to_dict(self) -> dict[str, object]:
        """What ``--json`` adds to the endpoint's object."""
        return {"zone": self.zone, "job": self.job, "probed_by": self.by, "probed_at": _iso(self.at)}


def _iso(at: dt.datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def zoned_nodes(store: Store, endpoints: Mapping[str, Endpoint]) -> dict[str, str]:
    """Of ``endpoints`` (by node name), the nodes a worker of their zone probes, and their zones:
    none on SQLite (one machine holds the store; every node is probed from where it runs)."""
    if store.url.startswith("sqlite"):
        return {}
    zones = store.node_zones()
    return {name: zone for name in endpoints if (zone := zones.get(name))}


def _unserved(endpoint: Endpoint, zone: str, *, wait: float) -> ProbeResult:
    problem = Problem(
        ProblemCode.TIMEOUT,
        Severity.ERROR,
        f"no worker of zone {zone} probed it in time",
        f"start `certfleet worker --zone {zone}` where the zone's endpoints are reachable, or wait longer "
        f"than {wait:g} s (--wait); the job stays queued",
    )
    return unprobed(endpoint, problem)


def _job_failed(endpoint: Endpoint, zone: str, job: JobRecord) -> ProbeResult:
    error = str((job.result or {}).get("error") or "the job failed")[:300]
    problem = Problem(
        ProblemCode.UNREACHABLE,
        Severity.ERROR,
        f"the worker of zone {zone} could not probe it: {error}",
        f"see `certfleet jobs` (job {job.id})",
    )
    return unprobed(endpoint, problem)


def _judged(
    endpoint: Endpoint, served: ProbeResult, *, trust: TrustStore, now: dt.datetime, expiring_days: int
) -> EndpointReport:
    return judge(endpoint, served, trust=trust, now=now, expiring_days=expiring_days)


async def _follow(store: Store, jobs: Sequence[JobRecord], *, wait: float, poll: float) -> dict[int, JobRecord]:
    followed = await follow_jobs(store, [j.id for j in jobs], wait=wait, poll=poll)
    seen = {j.id: j for j in followed}
    return {j.id: seen.get(j.id, j) for j in jobs}


async def probe_nodes(
    store: Store,
    endpoints: Mapping[str, Endpoint],
    zones: Mapping[str, str],
    *,
    wait: float,
    trust: TrustStore,
    expiring_days: int,
    poll: float = 0.25,
) -> dict[str, ZoneChecked]:
    """Have the workers of their zones probe these nodes (by name; ``zones``: each one's zone)
    now, and judge what each recorded; by node name."""
    names = [n for n in endpoints if n in zones]
    if not names:
        return {}
    queued = await asyncio.to_thread(store.enqueue_jobs, PROBE, [("", n, zones[n], {}) for n in names], unique=True)
    ended = await _follow(store, queued, wait=wait, poll=poll)
    now = utc_now()
    done = {n: endpoints[n] for n, j in zip(names, queued, strict=True) if ended[j.id].state == JobState.DONE}
    recorded = await asyncio.to_thread(zone_probed, store, done, trust=trust, now=now, expiring_days=expiring_days)
    out: dict[str, ZoneChecked] = {}
    for name, queued_job in zip(names, queued, strict=True):
        job, zone, endpoint = ended[queued_job.id], zones[name], endpoints[name]
        seen, at, by = recorded.get(name, (None, None, ""))
        if seen is not None:
            out[name] = ZoneChecked(seen, zone, job.id, by, at)
            continue
        by = ""
        if job.state == JobState.FAILED:
            served, by = _job_failed(endpoint, zone, job), job.lease_owner or ""
        else:  # still open; or done, and its record gone since (the node removed)
            served = _unserved(endpoint, zone, wait=wait)
        report = _judged(endpoint, served, trust=trust, now=now, expiring_days=expiring_days)
        out[name] = ZoneChecked(report, zone, job.id, by)
    return out


def _give_up(store: Store, zone: str, jobs: Sequence[int], *, wait: float) -> None:
    """End the check jobs no worker took in time, failed: nobody waits for their answer any more.
    Each is taken as a worker would take it (a worker that took it meanwhile keeps it)."""
    from certfleet.jobs.worker import worker_name

    asker = worker_name(None)
    for job in jobs:
        for held in store.claim_jobs(asker, zone=zone, lease=30, job=job):
            message = f"no worker of zone {zone} took it within {wait:g} s; the check was given up"
            store.finish_job(held, ok=False, result={"error": message})


async def check_in_zone(
    store: Store,
    endpoints: Sequence[Endpoint],
    zone: str,
    *,
    wait: float,
    timeout: float,
    trust: TrustStore,
    expiring_days: int,
    poll: float = 0.25,
) -> list[ZoneChecked]:
    """Have a worker of ``zone`` probe each of ``endpoints`` (one ``check`` job each, queued in
    one transaction) and judge here what it saw; in the order given."""
    if not endpoints:
        return []
    asked = [("", None, zone, endpoint_payload(e, timeout=timeout)) for e in endpoints]
    queued = await asyncio.to_thread(store.enqueue_jobs, CHECK, asked)
    ended = await _follow(store, queued, wait=wait, poll=poll)
    unserved = [j.id for j in ended.values() if j.state == JobState.QUEUED]
    if unserved:
        await asyncio.to_thread(_give_up, store, zone, unserved, wait=wait)
    now = utc_now()
    out: list[ZoneChecked] = []
    for endpoint, queued_job in zip(endpoints, queued, strict=True):
        job = ended[queued_job.id]
        by = job.lease_owner or ""
        if job.state == JobState.DONE and job.result:
            served = dataclasses.replace(recorded_result(job.result), target=str(endpoint))
        elif job.state == JobState.FAILED:
            served = _job_failed(endpoint, zone, job)
        else:
            served, by = _unserved(endpoint, zone, wait=wait), ""
        report = _judged(endpoint, served, trust=trust, now=now, expiring_days=expiring_days)
        out.append(ZoneChecked(report, zone, job.id, by, job.finished_at if by else None))
    return out
