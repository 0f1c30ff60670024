"""Preflight: what can be known before an order spends the CA's limits.

For each name: its CAA records allow the CA (RFC 8659, against the CA's ``caaIdentities``); an
http-01 name resolves, and the server at each of its addresses serves a probe token put in the
node's webroot the way the real token will be. For each DNS solver: its credentials work.
``certfleet issue --dry-run`` runs only this.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from certfleet.acme.challenges import Check, Solver, Task
from certfleet.acme.lookup import DnsSettings, addresses, caa_for
from certfleet.acme.model import ChallengeType
from certfleet.errors import CertfleetError

__all__ = ["HTTP_PORT_ENV", "PreflightReport", "check_caa", "check_http", "preflight"]

HTTP_PORT_ENV = "CERTFLEET_ACME_HTTP_PORT"
PROBE_TIMEOUT = 5.0
CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class PreflightReport:
    lineage: str
    names: tuple[str, ...]
    where: Mapping[str, str]  # name -> how it is proven
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def for_name(self, name: str) -> list[Check]:
        return [c for c in self.checks if c.subject == name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "ok": self.ok,
            "names": [
                {
                    "name": n,
                    "solver": self.where.get(n),
                    "ok": all(c.ok for c in self.for_name(n)),
                    "checks": [c.to_dict() for c in self.for_name(n)],
                }
                for n in self.names
            ],
            "solvers": [c.to_dict() for c in self.checks if c.subject not in self.names],
        }


def http_port() -> int:
    raw = os.environ.get(HTTP_PORT_ENV, "").strip()
    return int(raw) if raw.isdigit() and 0 < int(raw) < 65536 else 80


async def check_caa(names: Sequence[str], issuer: str, identities: Sequence[str], dns: DnsSettings) -> list[Check]:
    """Whether each name's CAA records let ``issuer`` (whose CAA names are ``identities``) issue."""
    ids = {i.lower().rstrip(".") for i in identities}
    what = f"caa:{issuer}"
    memo: dict[str, Any] = {}

    async def one(name: str) -> Check:
        answer = await caa_for(name, dns, memo=memo)
        if answer.error is not None:
            return Check(name, what, False, f"the CAA lookup failed ({answer.error}): a CA must then refuse")
        if answer.unknown_critical():
            return Check(name, what, False, f"CAA at {answer.owner} has a critical tag no CA knows: every CA refuses")
        allowed = answer.issuers(wildcard=name.startswith("*."))
        if allowed is None:
            return Check(name, what, True, "no CAA record restricts issuance")
        named = sorted({a for a in allowed if a})
        if not named:
            return Check(name, what, False, f"CAA at {answer.owner} forbids every CA to issue for it")
        if not ids:
            return Check(
                name, what, True, f"CAA at {answer.owner} allows {', '.join(named)}; {issuer} publishes no CAA "
                "identity to compare (give it with `issuer add --caa-identity`)", warning=True,
            )  # fmt: skip
        if ids & set(named):
            return Check(name, what, True, f"CAA at {answer.owner} allows {', '.join(sorted(ids & set(named)))}")
        theirs, only = ", ".join(sorted(ids)), ", ".join(named)
        return Check(name, what, False, f"CAA at {answer.owner} allows only {only}, not {issuer} ({theirs})")

    return list(await asyncio.gather(*(one(n) for n in names)))


def _fetch(address: str, port: int, name: str, path: str) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection(address, port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", path, headers={"Host": name, "User-Agent": "certfleet-preflight"})
        response = conn.getresponse()
        body = response.read(4096).decode("ascii", "replace")
        return response.status, body, response.getheader("Location") or ""
    finally:
        conn.close()


async def check_http(solver: Solver, names: Sequence[str], dns: DnsSettings, *, port: int) -> list[Check]:
    """Put one probe token where the solver puts tokens (each node's webroot, or its own
    listener); every name's addresses must serve it."""
    token = secrets.token_urlsafe(24)
    value = f"{token}.certfleet-preflight"
    probes = [Task(n, ChallengeType.HTTP01, token=token, value=value) for n in names]
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(name: str) -> Check:
        async with limit:
            try:
                found = await addresses(name, dns)
            except CertfleetError as exc:
                return Check(name, "http-01", False, exc.message)
            if not found:
                return Check(name, "http-01", False, f"{name} has no address: the CA cannot reach it")
            where = solver.where(name)
            for address in found:
                try:
                    status, body, location = await asyncio.to_thread(_fetch, address, port, name, probes[0].path)
                except OSError as exc:
                    return Check(name, "http-01", False, f"{address}:{port} did not answer HTTP: {exc}")
                if status in (301, 302, 303, 307, 308):
                    return Check(
                        name, "http-01", True, f"{address}:{port} redirects to {location}; the CA follows, "
                        "certfleet did not", warning=True,
                    )  # fmt: skip
                if status != 200 or body.strip() != value:
                    return Check(
                        name, "http-01", False, f"{address}:{port} answered {status} without the probe token put by "
                        f"{where}: that server does not serve the webroot at /.well-known/acme-challenge/",
                    )  # fmt: skip
            return Check(name, "http-01", True, f"{', '.join(found)} serve the probe token from {where}")

    try:
        await solver.present(probes)
    except CertfleetError as exc:
        return [Check(n, "http-01", False, f"could not put the probe token: {exc}") for n in names]
    try:
        return list(await asyncio.gather(*(one(n) for n in names)))
    finally:
        await solver.cleanup(probes)


async def preflight(
    lineage: str,
    assignment: Mapping[str, Solver],
    issuers: Sequence[tuple[str, Sequence[str]]],
    dns: DnsSettings,
) -> PreflightReport:
    """Every check, all at once: CAA for each issuer, http-01 probes, DNS solvers' credentials."""
    names = tuple(assignment)
    groups: dict[int, tuple[Solver, list[str]]] = {}
    for name, solver in assignment.items():
        groups.setdefault(id(solver), (solver, []))[1].append(name)
    jobs = [check_caa(names, issuer, ids, dns) for issuer, ids in issuers]
    for solver, mine in groups.values():
        if solver.kind is ChallengeType.HTTP01:
            jobs.append(check_http(solver, mine, dns, port=http_port()))
        else:
            jobs.append(solver.check(mine))
    results = await asyncio.gather(*jobs)
    where = {}
    for name, solver in assignment.items():
        try:
            where[name] = solver.where(name)
        except CertfleetError as exc:
            where[name] = str(exc)
    return PreflightReport(lineage, names, where, tuple(c for group in results for c in group))
