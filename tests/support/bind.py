"""BIND 9 on loopback: the authoritative server of a test zone that takes RFC 2136 updates signed
with a TSIG key, and the DNS server Pebble asks (``-dnsserver``).

It serves ``zone`` (``acme.test`` by default: ``ns1`` at 127.0.0.1, then the records given) and an
empty parent zone, so that a CAA lookup climbing from a name finds an answer at every level.
:meth:`BindServer.credentials` writes the TSIG key as certbot's dns-rfc2136 plugin (and certfleet)
read it; :meth:`BindServer.env` is what certfleet needs to ask this server rather than the system's.

    with BindServer(tmp_path / "bind", records=["main A 127.0.0.2"]) as bind:
        ... bind.address, bind.credentials(path), bind.update("acme.test", "CAA", '0 issue ";"') ...
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update

from support.servers import Server

__all__ = ["BindServer", "named_binary"]

KEY_NAME = "certfleet-test."


def named_binary() -> str:
    found = shutil.which("named") or ("/usr/sbin/named" if Path("/usr/sbin/named").exists() else None)
    if found is None:
        raise RuntimeError("BIND is not installed: apt-get install bind9 (the dns-01 tests need the real server)")
    return found


class BindServer(Server):
    name = "named"

    def __init__(
        self,
        workdir: Path,
        *,
        zone: str = "acme.test",
        records: Sequence[str] = (),
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(workdir, port=port, host=host)
        self.zone = zone
        self.secret = base64.b64encode(os.urandom(32)).decode("ascii")
        parent = zone.partition(".")[2] or "test"
        self.conf = workdir / "named.conf"
        zones = ""
        for name, body in ((zone, records), (parent, ())):
            (workdir / f"{name}.zone").write_text(self._zone_text(name, body))
            update = f' allow-update {{ key "{KEY_NAME}"; }};' if name == zone else ""
            zones += f'zone "{name}" {{ type primary; file "{workdir / f"{name}.zone"}";{update} }};\n'
        self.conf.write_text(
            f"""options {{
  directory "{workdir}";
  pid-file "{workdir / "named.pid"}";
  session-keyfile "{workdir / "session.key"}";
  managed-keys-directory "{workdir}";
  listen-on port {self.port} {{ {host}; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  allow-query {{ any; }};
  notify no;
}};
controls {{ }};
key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{self.secret}"; }};
{zones}"""
        )

    def _zone_text(self, name: str, records: Sequence[str]) -> str:
        ns = f"ns1.{name}."
        lines = [
            "$TTL 60",
            f"@ IN SOA {ns} hostmaster.{name}. 1 60 60 600 60",
            f"@ IN NS {ns}",
            f"ns1 IN A {self.host}",
        ]
        if name != self.zone:  # the parent delegates the test zone to the same server
            child = self.zone.removesuffix(f".{name}")
            lines += [f"{child} IN NS ns1.{self.zone}.", f"ns1.{child} IN A {self.host}"]
        return "\n".join([*lines, *records, ""])

    def command(self) -> list[str]:
        return [named_binary(), "-g", "-4", "-c", str(self.conf)]

    def start(self) -> Self:
        super().start()
        # named listens before it has loaded its zones: wait until the test zone answers
        deadline = time.monotonic() + 30
        while not self.query(self.zone, "SOA"):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"named did not load zone {self.zone}\n{self.errors()}")
            time.sleep(0.05)
        return self

    @property
    def address(self) -> str:
        """``host:port``, as Pebble's ``-dnsserver`` takes it."""
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment that makes certfleet ask this server for everything DNS."""
        return {"CERTFLEET_DNS_RESOLVER": self.address, "CERTFLEET_DNS_PORT": str(self.port)}

    def credentials(self, path: Path, *, secret: str | None = None, port: int | None = None) -> Path:
        """Write the TSIG key (or a wrong ``secret``) as a dns-rfc2136 credentials file, 0600."""
        text = (
            f"dns_rfc2136_server = {self.host}\n"
            f"dns_rfc2136_port = {port or self.port}\n"
            f"dns_rfc2136_name = {KEY_NAME}\n"
            f"dns_rfc2136_secret = {secret or self.secret}\n"
            "dns_rfc2136_algorithm = HMAC-SHA256\n"
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return path

    def update(self, name: str, rdtype: str, *values: str, delete: bool = False) -> None:
        """Add (or with ``delete``, remove every) ``rdtype`` record at ``name``, as an operator would."""
        keyring = dns.tsigkeyring.from_text({KEY_NAME: (dns.tsig.HMAC_SHA256, self.secret)})
        message = dns.update.UpdateMessage(self.zone, keyring=keyring, keyalgorithm=dns.tsig.HMAC_SHA256)
        owner = dns.name.from_text(name)
        if delete:
            message.delete(owner, rdtype)
        for value in values:
            message.add(owner, 60, rdtype, value)
        response = dns.query.tcp(message, self.host, port=self.port, timeout=5)
        if response.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"the update of {name} was refused: {dns.rcode.to_text(response.rcode())}")

    def query(self, name: str, rdtype: str) -> list[str]:
        """What this server answers for ``name`` (an independent look, for assertions)."""
        response = dns.query.udp(dns.message.make_query(name, rdtype), self.host, port=self.port, timeout=5)
        return [r.to_text() for rrset in response.answer for r in rrset]
