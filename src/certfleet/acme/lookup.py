"""DNS as issuing needs it (dnspython): which zone holds a name, which servers are authoritative
for it, whether each of them already answers a TXT record, the CAA records that govern a name
(RFC 8659), and a name's addresses.

Where the answers come from is :class:`DnsSettings`: the system's resolver by default;
``CERTFLEET_DNS_RESOLVER`` (``HOST[:PORT],...``) names others, and ``CERTFLEET_DNS_PORT`` the port
the zones' authoritative servers are asked on (53; another only for a test or lab DNS).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver

from certfleet.errors import InputError, OperationFailed

__all__ = [
    "PORT_ENV",
    "RESOLVER_ENV",
    "CaaAnswer",
    "DnsSettings",
    "PropagationError",
    "addresses",
    "authoritative_servers",
    "caa_for",
    "txt_at",
    "wait_for_txt",
    "zone_of",
]

RESOLVER_ENV = "CERTFLEET_DNS_RESOLVER"
PORT_ENV = "CERTFLEET_DNS_PORT"
QUERY_TIMEOUT = 5.0


class PropagationError(OperationFailed):
    """A TXT record did not reach every authoritative server in time."""


def _endpoint(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, "53"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"{RESOLVER_ENV}: {text[:60]!r} is not HOST[:PORT]")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """Where DNS questions go, and how long a record may take to reach every server."""

    resolvers: tuple[tuple[str, int], ...] = ()  # empty: the system's (/etc/resolv.conf)
    auth_port: int = 53
    propagation_timeout: float = 300.0
    interval: float = 0.25  # the first pause between two rounds of questions; it grows to 2 s
    _cache: dict[str, dns.asyncresolver.Resolver] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kw: float) -> DnsSettings:
        env = os.environ if env is None else env
        raw = env.get(RESOLVER_ENV, "").strip()
        resolvers = tuple(_endpoint(part) for part in raw.split(",") if part.strip())
        port_text = env.get(PORT_ENV, "").strip() or "53"
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InputError(f"{PORT_ENV} must be a port number, not {port_text[:20]!r}")
        return cls(resolvers, int(port_text), **kw)  # type: ignore[arg-type]

    def resolver(self) -> dns.asyncresolver.Resolver:
        cached = self._cache.get("resolver")
        if cached is not None:
            return cached
        if self.resolvers:
            res = dns.asyncresolver.Resolver(configure=False)
            res.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in self.resolvers]
        else:
            res = dns.asyncresolver.Resolver()
        res.lifetime = QUERY_TIMEOUT * 2
        res.timeout = QUERY_TIMEOUT
        # answers change while certfleet waits for them: never remember one
        res.cache = None
        self._cache["resolver"] = res
        return res


def _fqdn(name: str) -> dns.name.Name:
    return dns.name.from_text(name.removeprefix("*."))


async def zone_of(name: str, settings: DnsSettings) -> str:
    """The zone that holds ``name`` (its SOA's owner), without the final dot."""
    try:
        zone = await dns.asyncresolver.zone_for_name(_fqdn(name), resolver=settings.resolver())
    except dns.exception.DNSException as exc:
        raise OperationFailed(
            f"cannot find the DNS zone of {name}: {exc}",
            hint="check that the name's zone is delegated and answers (dig SOA NAME)",
        ) from exc
    return zone.to_text(omit_final_dot=True)


async def addresses(name: str, settings: DnsSettings) -> list[str]:
    """The IPv4 and IPv6 addresses of ``name`` (empty when it has none)."""
    res = settings.resolver()
    out: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = await res.resolve(_fqdn(name), rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as exc:
            raise OperationFailed(f"cannot resolve {name}: {exc}") from exc
        out.extend(r.to_text() for r in answer)
    return out


async def authoritative_servers(zone: str, settings: DnsSettings) -> list[tuple[str, str]]:
    """``(server name, address)`` of every authoritative server of ``zone`` (its NS records)."""
    res = settings.resolver()
    try:
        ns = await res.resolve(dns.name.from_text(zone), "NS")
    except dns.exception.DNSException as exc:
        raise OperationFailed(f"cannot list the name servers of zone {zone}: {exc}") from exc
    out: list[tuple[str, str]] = []
    for record in ns:
        host = record.target.to_text(omit_final_dot=True)
        out.extend((host, address) for address in await addresses(host, settings))
    if not out:
        raise OperationFailed(f"the name servers of zone {zone} have no address")
    return out


async def txt_at(address: str, port: int, name: str) -> set[str]:
    """The TXT strings one server itself holds for ``name`` (no recursion, no cache)."""
    query = dns.message.make_query(dns.name.from_text(name), dns.rdatatype.TXT)
    query.flags &= ~dns.flags.RD
    response = await dns.asyncquery.udp(query, address, port=port, timeout=QUERY_TIMEOUT)
    if response.flags & dns.flags.TC:
        response = await dns.asyncquery.tcp(query, address, port=port, timeout=QUERY_TIMEOUT)
    values: set[str] = set()
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            values.update(b"".join(r.strings).decode("ascii", "replace") for r in rrset)
    return values


async def wait_for_txt(records: Mapping[str, set[str]], settings: DnsSettings) -> None:
    """Return once every authoritative server of each name's zone answers all its TXT values."""

    async def one(name: str, wanted: set[str]) -> None:
        zone = await zone_of(name, settings)
        servers = await authoritative_servers(zone, settings)
        missing = list(servers)
        deadline = time.monotonic() + settings.propagation_timeout
        pause = settings.interval
        while True:
            still = []
            for host, address in missing:
                try:
                    have = await txt_at(address, settings.auth_port, name)
                except (dns.exception.DNSException, OSError):
                    have = set()
                if not wanted <= have:
                    still.append((host, address))
            missing = still
            if not missing:
                return
            if time.monotonic() > deadline:
                where = ", ".join(f"{h} ({a})" for h, a in missing)
                raise PropagationError(
                    f"the TXT record {name} did not reach every server of zone {zone} "
                    f"in {settings.propagation_timeout:g} s: {where} lack it",
                    hint="check that the solver updates the zone those servers serve, and their zone transfers",
                )
            await asyncio.sleep(pause)
            pause = min(pause * 1.6, 2.0)

    await asyncio.gather(*(one(name, set(values)) for name, values in records.items()))


@dataclass(frozen=True, slots=True)
class CaaAnswer:
    """The CAA records that govern a name (RFC 8659 §3): those found nearest to it, and where."""

    name: str
    owner: str | None  # where the relevant record set was found; None: no CAA up to the top
    records: tuple[tuple[int, str, str], ...]  # (flags, tag, value)
    error: str | None = None  # the lookup failed: a CA must then refuse

    def issuers(self, *, wildcard: bool) -> list[str] | None:
        """The issuer domains the records allow (``""`` for none); None when nothing restricts."""
        tags = [(t.lower(), v) for _, t, v in self.records]
        # for a wildcard, issuewild properties take precedence when there are any (RFC 8659 §4.3)
        wanted = "issuewild" if wildcard and any(t == "issuewild" for t, _ in tags) else "issue"
        chosen = [v for t, v in tags if t == wanted]
        if not chosen:
            return None
        return [v.split(";", 1)[0].strip().lower().rstrip(".") for v in chosen]

    def unknown_critical(self) -> list[str]:
        known = {"issue", "issuewild", "iodef", "issuemail", "issuevmc", "contactemail", "contactphone"}
        return [t for flags, t, _ in self.records if flags & 128 and t.lower() not in known]


async def caa_for(
    name: str, settings: DnsSettings, *, memo: dict[str, asyncio.Task[CaaAnswer | None]] | None = None
) -> CaaAnswer:
    """The CAA record set relevant to ``name`` (climbing to its parents until one has any).

    ``memo`` shares the lookups of one batch: names under one parent ask for the parent once."""
    memo = {} if memo is None else memo
    current = _fqdn(name)
    while len(current.labels) > 1:  # stop before the root
        key = current.to_text()
        if key not in memo:
            memo[key] = asyncio.ensure_future(_caa_at(current, settings))
        found = await memo[key]
        if found is not None:
            return CaaAnswer(name, found.owner, found.records, found.error)
        current = current.parent()
    return CaaAnswer(name, None, ())


async def _caa_at(owner: dns.name.Name, settings: DnsSettings) -> CaaAnswer | None:
    """The CAA records at ``owner`` itself; None when it has none."""
    where = owner.to_text(omit_final_dot=True)
    try:
        answer = await settings.resolver().resolve(owner, "CAA", raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return None
    except dns.exception.DNSException as exc:
        return CaaAnswer(where, where, (), error=str(exc) or type(exc).__name__)
    if answer.rrset is None or not len(answer.rrset):
        return None
    records = tuple(
        (int(r.flags), r.tag.decode("ascii", "replace"), r.value.decode("utf-8", "replace")) for r in answer.rrset
    )
    return CaaAnswer(where, where, records)
