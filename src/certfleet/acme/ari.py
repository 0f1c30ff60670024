"""ACME Renewal Information (RFC 9773): when the CA wants a certificate it issued to be renewed.

A CA that offers it names a ``renewalInfo`` resource in its directory; the certificate's
renewal information is at ``<renewalInfo>/<CertID>``, where the CertID is the base64url of the
certificate's Authority Key Identifier (its keyIdentifier) and of its serial number's DER
content octets, joined by a dot. The answer is a suggested window and, in ``Retry-After``, when
to ask again; a window moved into the past means the CA wants the certificate replaced now
(before it revokes it, say). A new order names the certificate it replaces by the same CertID.

The request is an unauthenticated GET through the connection's own network, so the library's
and ``requests``' errors are mapped at the one boundary (:meth:`Connection.call`).
"""

from __future__ import annotations

import base64
import datetime as dt
import warnings
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from certfleet.acme.connection import Connection
from certfleet.acme.errors import AcmeProblem
from certfleet.errors import InputError
from certfleet.renewal import RenewalWindow

with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    from acme import messages
    from josepy.errors import DeserializationError

__all__ = ["DEFAULT_RETRY", "RenewalInfo", "cert_id", "fetch_renewal_info", "renewal_info_url"]

DEFAULT_RETRY = dt.timedelta(hours=6)  # RFC 9773 §4.3.3, when the CA gives no Retry-After
SHORTEST_RETRY = dt.timedelta(minutes=1)
LONGEST_RETRY = dt.timedelta(days=1)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def cert_id(cert: x509.Certificate) -> str:
    """The certificate's ARI CertID: base64url(AKI keyIdentifier) "." base64url(serial, DER)."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        aki = None
    if aki is None or aki.key_identifier is None:
        raise InputError("the certificate has no Authority Key Identifier: renewal information cannot name it")
    serial = cert.serial_number
    # the INTEGER's content octets: big-endian two's complement, as short as the sign allows
    octets = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    return f"{_b64(aki.key_identifier)}.{_b64(octets)}"


@dataclass(frozen=True, slots=True)
class RenewalInfo:
    """The CA's answer for one certificate: its window, and when to ask again."""

    cert_id: str
    window: RenewalWindow
    ask_again: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {"cert_id": self.cert_id, "window": self.window.to_dict(), "ask_again": self.ask_again.isoformat()}


def renewal_info_url(conn: Connection) -> str | None:
    """The CA's ``renewalInfo`` resource, or None when its directory offers none."""
    try:
        url = conn.directory["renewalInfo"]
    except KeyError:
        return None
    return str(url) if url else None


def _retry_after(value: str | None, now: dt.datetime) -> dt.datetime:
    wait = DEFAULT_RETRY
    if value and value.strip().isdigit():
        wait = dt.timedelta(seconds=int(value.strip()))
    elif value:
        try:
            when = parsedate_to_datetime(value)
            wait = (when if when.tzinfo else when.replace(tzinfo=dt.UTC)) - now
        except (TypeError, ValueError):
            pass
    return now + min(max(wait, SHORTEST_RETRY), LONGEST_RETRY)


def fetch_renewal_info(conn: Connection, cert: x509.Certificate, *, now: dt.datetime) -> RenewalInfo | None:
    """What the CA says of ``cert`` (None when its directory offers no renewal information).

    Blocks on the network. Raises the mapped errors of :meth:`Connection.call`, and
    :class:`AcmeProblem` for an answer that is not a renewal window."""
    base = renewal_info_url(conn)
    if base is None:
        return None
    ident = cert_id(cert)
    response = conn.call(conn.net.get, f"{base.rstrip('/')}/{ident}")
    try:
        body = response.json()
        info = messages.RenewalInfo.from_json(body)
    except (ValueError, DeserializationError) as exc:
        raise AcmeProblem(f"the CA's renewal information is not a window: {exc}", source=conn.issuer) from exc
    start, end = info.suggested_window.start, info.suggested_window.end
    if start.tzinfo is None or end.tzinfo is None or end <= start:
        raise AcmeProblem("the CA's renewal window ends before it starts", source=conn.issuer)
    explanation = body.get("explanationURL") if isinstance(body, dict) else None
    window = RenewalWindow(
        start.astimezone(dt.UTC), end.astimezone(dt.UTC), str(explanation)[:1024] if explanation else None
    )
    return RenewalInfo(ident, window, _retry_after(response.headers.get("Retry-After"), now))
