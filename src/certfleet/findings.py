"""Findings that verification and lint both report, worded once.

Each builder returns a :class:`Problem` (or None when the certificate is fine) whose message
names the certificate the way the caller asks: "the certificate" for the leaf, the label of an
intermediate otherwise.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfleet.certinfo import describe, fingerprint, is_precertificate, printable
from certfleet.paths import extension
from certfleet.problems import Problem, ProblemCode, Severity
from certfleet.signatures import weak_signature

__all__ = [
    "eku_problem",
    "expiring_problem",
    "issuer_name_problem",
    "label",
    "no_san_problem",
    "precertificate_problem",
    "validity_problem",
    "weak_signature_problem",
]


def label(name: x509.Name) -> str:
    """A short, quoted way to name a certificate in a message: its CN, else its whole subject."""
    try:
        cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
        text = str(cns[0].value) if cns else name.rfc4514_string()
    except (ValueError, UnicodeError):
        text = "an undecodable name"
    text = text or "an empty name"
    return f"'{printable(text)}'"


def _days(n: int) -> str:
    return "1 day" if n == 1 else f"{n} days"


def validity_problem(cert: x509.Certificate, at: dt.datetime, *, prefix: str = "") -> Problem | None:
    """``expired`` or ``not-yet-valid`` for ``cert`` at ``at``, worded "expired on 2024-06-01, 178 days ago"."""
    not_after = cert.not_valid_after_utc
    not_before = cert.not_valid_before_utc
    if at > not_after:
        ago = (at - not_after).days
        when = _days(ago) + " ago" if ago else "less than a day ago"
        return Problem(
            ProblemCode.EXPIRED,
            Severity.ERROR,
            f"{prefix}expired on {not_after:%Y-%m-%d}, {when}",
            "renew it, then deploy the new certificate",
            fingerprint(cert),
        )
    if at < not_before:
        ahead = (not_before - at).days
        when = "in " + _days(ahead) if ahead else "in less than a day"
        return Problem(
            ProblemCode.NOT_YET_VALID,
            Severity.ERROR,
            f"{prefix}is not valid until {not_before:%Y-%m-%d}, {when}",
            "check the clock of this machine, or wait until then",
            fingerprint(cert),
        )
    return None


def expiring_problem(cert: x509.Certificate, at: dt.datetime, expiring_days: int, *, what: str = "") -> Problem | None:
    """``expiring-soon`` for ``cert`` when it has ``expiring_days`` or fewer left at ``at``, worded
    "expires on 2024-06-01, in 12 days"; ``what`` names another certificate than the leaf."""
    not_after = cert.not_valid_after_utc
    left = not_after - at
    if left < dt.timedelta(0) or left > dt.timedelta(days=expiring_days):
        return None
    days = left.days
    when = "in less than a day" if days == 0 else "in " + _days(days)
    return Problem(
        ProblemCode.EXPIRING_SOON,
        Severity.WARNING,
        f"{what + ' ' if what else ''}expires on {not_after:%Y-%m-%d}, {when}",
        "renew it now" if not what else "get the CA's current intermediate",
        fingerprint(cert),
    )


def weak_signature_problem(
    cert: x509.Certificate, *, what: str = "the certificate", unchecked: bool = False
) -> Problem | None:
    """``weak-signature`` when ``cert`` is signed over SHA-1, MD5 or MD2, or, with ``unchecked``
    (its issuer's signature could not be checked), in an algorithm clients do not know.

    ``what`` names the certificate in the message.
    """
    weak = weak_signature(cert)
    if weak is not None:
        message = f"{what} is signed with {weak}; clients refuse {weak} signatures, so a phone will refuse this chain"
    elif unchecked:
        message = f"{what} is signed with {describe(cert).signature_algorithm[:80]}, an algorithm clients do not accept"
    else:
        return None
    return Problem(
        ProblemCode.WEAK_SIGNATURE,
        Severity.ERROR,
        message,
        "have it reissued: every CA signs with SHA-256 or better today",
        fingerprint(cert),
    )


def _eku_lacks_server_auth(cert: x509.Certificate) -> list[str] | None:
    """The EKUs of ``cert`` when they exclude serverAuth (None when they allow it or are absent)."""
    eku = extension(cert, x509.ExtendedKeyUsage)
    if eku is None:
        return None
    oids = list(eku)
    if ExtendedKeyUsageOID.SERVER_AUTH in oids or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in oids:
        return None
    return [o._name if o._name != "Unknown OID" else o.dotted_string for o in oids]


def eku_problem(cert: x509.Certificate, *, prefix: str = "") -> Problem | None:
    """``missing-server-auth`` when ``cert`` has an extended key usage without serverAuth."""
    allowed = _eku_lacks_server_auth(cert)
    if allowed is None:
        return None
    return Problem(
        ProblemCode.MISSING_SERVER_AUTH,
        Severity.ERROR,
        f"{prefix}extended key usage lacks serverAuth (it allows: {', '.join(allowed) or 'nothing'})",
        "reissue it as a TLS server certificate (extended key usage serverAuth)",
        fingerprint(cert),
    )


def issuer_name_problem(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    severity: Severity = Severity.ERROR,
    source: str | None = None,
) -> Problem | None:
    """``issuer-name-differs`` when ``issuer`` was matched to ``cert``'s issuer name only as RFC 5280
    compares names (letter case, spaces, string type), not byte for byte as cryptography does.

    ``source``, the file ``issuer`` came from, is named with it.
    """
    if cert.issuer.public_bytes() == issuer.subject.public_bytes():
        return None
    where = f" ({source})" if source else ""
    return Problem(
        ProblemCode.ISSUER_NAME_DIFFERS,
        severity,
        f"{label(issuer.subject)}{where} was matched as the issuer of {label(cert.subject)} by RFC 5280's rules: "
        "the issuer name differs from its subject in letter case, spacing or string type; OpenSSL and "
        "browsers accept that, strict verifiers (cryptography's, which gives certfleet's verdict) do not",
        "ask the CA for the intermediate whose subject is exactly the issuer name in the certificate",
        fingerprint(issuer),
    )


def precertificate_problem(
    cert: x509.Certificate, *, what: str = "the certificate", source: str | None = None
) -> Problem | None:
    """``precertificate`` when ``cert`` is a CT precertificate (RFC 6962's poison extension)."""
    if not is_precertificate(cert):
        return None
    where = f" ({source})" if source else ""
    return Problem(
        ProblemCode.PRECERTIFICATE,
        Severity.ERROR,
        f"{what}{where} is a CT precertificate (it carries the critical poison extension): "
        "the CA logs it, and no client accepts it",
        "use the certificate the CA issued after logging this precertificate: download it again from the CA",
        fingerprint(cert),
    )


def no_san_problem(leaf: x509.Certificate) -> Problem:
    """``no-san``: the leaf names no DNS name or IP address, and clients ignore its common name."""
    return Problem(
        ProblemCode.NO_SAN,
        Severity.ERROR,
        "the certificate names no DNS name or IP address (no subjectAltName); clients ignore the common name",
        "reissue it with every name in the subjectAltName extension",
        fingerprint(leaf),
    )
