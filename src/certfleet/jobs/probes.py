"""Probes by zone: a node in a zone may be unreachable from where ``certfleet status`` or the
console runs, so a worker of its zone probes it (``certfleet worker --probe-every SECONDS``) and
records what it saw in the store (:meth:`certfleet.store.Store.record_probe`): the chain as sent,
the TLS version and cipher, and the probe's own problems. ``status`` (and the dashboard) judge
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
from certfleet.errors import CertfleetError
from certfleet.probe import ProbeResult, StartTLS, probe
from certfleet.problems import Problem, ProblemCode, Severity
from certfleet.store import Store
from certfleet.trust import TrustStore

__all__ = ["ZoneProbe", "probe_payload", "probe_zone", "recorded_result", "zone_probed"]

DEFAULT_TIMEOUT = 5.0


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


class ZoneProbe:
    """One round of a worker's probes: every node of its zone that names a probe endpoint."""

    def __init__(self, store: Store, zone: str | None, *, by: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.store = store
        self.zone = zone
        self.by = by
        self.timeout = timeout

    def _endpoints(self) -> dict[str, Endpoint]:
        zones = self.store.node_zones()
        out: dict[str, Endpoint] = {}
        for node in self.store.nodes():
            if zones.get(node.name) != self.zone:
                continue
            try:
                endpoint = node.endpoint()
            except CertfleetError:
                continue
            if endpoint is not None:
                out[node.name] = endpoint
        return out

    async def run(self, *, now: dt.datetime | None = None) -> dict[str, ProbeResult]:
        """Probe the zone's nodes one after the other and record each result; what each served."""

        endpoints = await asyncio.to_thread(self._endpoints)
        out: dict[str, ProbeResult] = {}
        for name, e in endpoints.items():
            served = await probe(e.host, e.port, server_name=e.server_name, timeout=self.timeout, starttls=e.starttls)
            at = now or utc_now()
            await asyncio.to_thread(self.store.record_probe, name, probe_payload(served), by=self.by, at=at)
            out[name] = served
        return out


async def probe_zone(
    store: Store, zone: str | None, *, by: str, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, ProbeResult]:
    """:class:`ZoneProbe` once."""
    return await ZoneProbe(store, zone, by=by, timeout=timeout).run()


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
