"""dns-01 by RFC 2136 dynamic updates signed with TSIG (dnspython): BIND, Knot, PowerDNS, Windows
DNS and most self-run DNS servers take them.

``dns-01:rfc2136:FILE`` names a credentials file, readable by its owner only, in the format of
certbot's dns-rfc2136 plugin (so one file serves both)::

    dns_rfc2136_server = 192.0.2.53
    dns_rfc2136_port = 53
    dns_rfc2136_name = certfleet-key.
    dns_rfc2136_secret = 4q4wM/2I180UXoMyN4INVhJNi8V9BCV+jMw2mXgZw/CSuxUT8C7NKKFs AmKd7ak51vWKgSl12ib86oQRPkpDjg==
    dns_rfc2136_algorithm = HMAC-SHA512
    # dns_rfc2136_zone = example.com   (when the zone cannot be asked of the server)

The keys may also be written without the ``dns_rfc2136_`` prefix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from certfleet.acme.challenges._base import Check, DnsSolver, read_secret_settings
from certfleet.errors import InputError, OperationFailed

__all__ = ["Rfc2136Solver", "TsigCredentials", "read_credentials"]

TTL = 60
TIMEOUT = 10.0
_ALGORITHMS = {
    "hmac-md5": dns.tsig.HMAC_MD5,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}


@dataclass(frozen=True, slots=True)
class TsigCredentials:
    server: str
    port: int
    key_name: str
    secret: str
    algorithm: dns.name.Name
    zone: str | None = None

    def __repr__(self) -> str:  # the secret stays out of logs
        return f"TsigCredentials(server={self.server!r}, port={self.port}, key_name={self.key_name!r})"


def read_credentials(path: str) -> TsigCredentials:
    """The TSIG credentials in ``path`` (refused when others may read the file)."""
    values = {
        k.removeprefix("dns_rfc2136_"): v for k, v in read_secret_settings(path, "the RFC 2136 credentials").items()
    }
    missing = [k for k in ("server", "name", "secret") if not values.get(k)]
    if missing:
        raise InputError(f"{path} lacks {', '.join(missing)}", hint="see `certfleet` docs/acme.md, RFC 2136 solver")
    algorithm = values.get("algorithm", "hmac-sha512").lower()
    if algorithm not in _ALGORITHMS:
        raise InputError(f"{path}: unknown TSIG algorithm {algorithm}", hint=f"use one of {', '.join(_ALGORITHMS)}")
    port = values.get("port", "53")
    if not port.isdigit():
        raise InputError(f"{path}: the port {port[:10]!r} is not a number")
    return TsigCredentials(
        server=values["server"],
        port=int(port),
        key_name=values["name"],
        secret=values["secret"],
        algorithm=_ALGORITHMS[algorithm],
        zone=values.get("zone") or None,
    )


class Rfc2136Solver(DnsSolver):
    method = "rfc2136"

    def validate(self, names: Sequence[str]) -> None:
        self.credentials()

    def credentials(self) -> TsigCredentials:
        if not self.spec:
            raise InputError("the rfc2136 solver needs its credentials file: dns-01:rfc2136:FILE")
        return read_credentials(self.spec)

    def _keyring(self, creds: TsigCredentials) -> dict[dns.name.Name, dns.tsig.Key]:
        try:
            return dns.tsigkeyring.from_text({creds.key_name: (creds.algorithm, creds.secret)})
        except (ValueError, dns.exception.DNSException) as exc:
            raise InputError(f"{self.spec}: the TSIG secret is not base64") from exc

    async def _zone(self, creds: TsigCredentials, record: str) -> str:
        if creds.zone:
            return creds.zone
        # the server is authoritative: its answer (or the SOA beside its "no such name") names the zone
        query = dns.message.make_query(dns.name.from_text(record), dns.rdatatype.SOA)
        try:
            response = await dns.asyncquery.tcp(query, creds.server, port=creds.port, timeout=TIMEOUT)
        except (dns.exception.DNSException, OSError) as exc:
            raise OperationFailed(
                f"the DNS server {creds.server}:{creds.port} did not answer: {exc}", source=self.label
            ) from exc
        for rrset in (*response.answer, *response.authority):
            if rrset.rdtype == dns.rdatatype.SOA:
                return str(rrset.name.to_text(omit_final_dot=True))
        raise OperationFailed(
            f"the DNS server {creds.server}:{creds.port} is not authoritative for {record}",
            source=self.label,
            hint="give the zone in the credentials file (dns_rfc2136_zone), or the zone's primary server",
        )

    async def _update(self, records: Mapping[str, Sequence[str]], *, add: bool) -> None:
        creds = self.credentials()
        keyring = self._keyring(creds)
        zones: dict[str, list[tuple[str, str]]] = {}
        for record, values in records.items():
            zone = await self._zone(creds, record)
            zones.setdefault(zone, []).extend((record, v) for v in values)
        for zone, items in zones.items():
            update = dns.update.UpdateMessage(
                zone, keyring=keyring, keyname=dns.name.from_text(creds.key_name), keyalgorithm=creds.algorithm
            )
            for record, value in items:
                name = dns.name.from_text(record)
                if add:
                    update.add(name, TTL, "TXT", f'"{value}"')
                else:
                    update.delete(name, "TXT", f'"{value}"')
            await self._send(update, creds, zone)

    async def _send(self, update: dns.update.UpdateMessage, creds: TsigCredentials, zone: str) -> None:
        try:
            response = await dns.asyncquery.tcp(update, creds.server, port=creds.port, timeout=TIMEOUT)
        except dns.tsig.PeerError as exc:
            raise OperationFailed(
                f"the DNS server {creds.server} refused the TSIG key {creds.key_name}: {exc}",
                source=self.label,
                hint="check the key name, secret and algorithm against the server's key",
            ) from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise OperationFailed(
                f"the DNS update to {creds.server}:{creds.port} failed: {exc}", source=self.label
            ) from exc
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            text = dns.rcode.to_text(rcode)
            hint = {
                "NOTAUTH": "the server does not take this key for the zone: check the key and the zone's allow-update",
                "REFUSED": f"the server refuses updates to {zone} with this key (allow-update / update-policy)",
                "NOTZONE": "the record is not in the zone the update names: set dns_rfc2136_zone",
            }.get(text)
            raise OperationFailed(
                f"the DNS server {creds.server} refused the update of zone {zone}: {text}", source=self.label, hint=hint
            )

    async def add(self, records: Mapping[str, Sequence[str]]) -> None:
        await self._update(records, add=True)

    async def remove(self, records: Mapping[str, Sequence[str]]) -> None:
        await self._update(records, add=False)

    async def check(self, names: Sequence[str]) -> list[Check]:
        # a signed update that removes a value no one wrote proves the key and the right to
        # update each record, and changes nothing
        records = {f"_acme-challenge.{n.removeprefix('*.')}": ["certfleet-preflight"] for n in names}
        try:
            await self.remove(records)
        except (InputError, OperationFailed) as exc:
            return [Check(self.label, "solver", False, exc.message)]
        creds = self.credentials()
        return [
            Check(self.label, "solver", True, f"{creds.server}:{creds.port} accepts updates signed by {creds.key_name}")
        ]
