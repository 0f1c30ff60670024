"""Lint: what path validation lets through but a careful administrator (or a stricter client) would not."""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
from collections.abc import Sequence

import idna
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from certfleet.certinfo import describe, fingerprint, san_names
from certfleet.problems import Problem, ProblemCode, Severity
from certfleet.trust import TrustStore, is_self_signed, signed_by
from certfleet.verify import eku_problem, label, validity_problem

__all__ = ["MAX_VALIDITY", "lint", "max_validity_days"]

# CA/B Forum Baseline Requirements (ballot SC-081): the longest validity of a subscriber
# certificate, by the date it was issued (notBefore). Newest first; the last row has no start.
MAX_VALIDITY: tuple[tuple[dt.datetime | None, int], ...] = (
    (dt.datetime(2029, 3, 15, tzinfo=dt.UTC), 47),
    (dt.datetime(2027, 3, 15, tzinfo=dt.UTC), 100),
    (dt.datetime(2026, 3, 15, tzinfo=dt.UTC), 200),
    (None, 398),
)

_WEAK_SIGNATURES = {
    "1.2.840.113549.1.1.2": "MD2",  # md2WithRSAEncryption
    "1.2.840.113549.1.1.4": "MD5",  # md5WithRSAEncryption
    "1.2.840.113549.1.1.5": "SHA-1",  # sha1WithRSAEncryption
    "1.3.14.3.2.29": "SHA-1",  # sha1WithRSASignature (OIW)
    "1.2.840.10045.4.1": "SHA-1",  # ecdsa-with-SHA1
    "1.2.840.10040.4.3": "SHA-1",  # dsa-with-sha1
}
_GOOD_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
_MIN_RSA_BITS = 2048


def max_validity_days(not_before: dt.datetime) -> int:
    """The CA/B Forum maximum validity, in days, for a certificate issued at ``not_before``."""
    for start, days in MAX_VALIDITY:
        if start is None or not_before >= start:
            return days
    raise AssertionError("MAX_VALIDITY ends with a row without a start")


def _is_ca(cert: x509.Certificate) -> bool:
    return describe(cert).is_ca


def _weak_signature(cert: x509.Certificate, index: int, anchor: bool) -> Problem | None:
    # clients never check a trust anchor's signature on itself: a SHA-1 self-signed root is harmless
    if anchor and is_self_signed(cert):
        return None
    weak = _WEAK_SIGNATURES.get(cert.signature_algorithm_oid.dotted_string)
    if weak is None:
        return None
    what = "the certificate" if index == 0 else f"the certificate {label(cert.subject)}"
    return Problem(
        ProblemCode.WEAK_SIGNATURE,
        Severity.ERROR,
        f"{what} is signed with {weak}; clients refuse {weak} signatures",
        "reissue it: every CA signs with SHA-256 or better today",
        fingerprint(cert),
    )


def _weak_key(cert: x509.Certificate, index: int) -> Problem | None:
    what = "the certificate's key" if index == 0 else f"the key of {label(cert.subject)}"
    try:
        key = cert.public_key()
    except (ValueError, TypeError):
        reason = "is of a type clients do not know"
    else:
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size >= _MIN_RSA_BITS:
                return None
            reason = f"is RSA {key.key_size} bits; at least {_MIN_RSA_BITS} are needed"
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name in _GOOD_CURVES:
                return None
            reason = f"is on the curve {key.curve.name}; browsers accept P-256 and P-384 (Chrome refuses P-521)"
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            reason = "is Ed25519/Ed448, which browsers and phones do not accept for web certificates"
        elif isinstance(key, dsa.DSAPublicKey):
            reason = "is DSA, which TLS clients no longer accept"
        else:
            reason = "is of a type clients do not know"
    return Problem(
        ProblemCode.WEAK_KEY,
        Severity.ERROR,
        f"{what} {reason}",
        "make a new key (certfleet key --type ec:p256 or rsa:2048) and have the certificate reissued",
        fingerprint(cert),
    )


def _validity_too_long(cert: x509.Certificate) -> Problem | None:
    not_before = cert.not_valid_before_utc
    # the Baseline Requirements count both ends inclusive, and any part of a day as a whole day
    seconds = (cert.not_valid_after_utc - not_before).total_seconds() + 1
    days = math.ceil(seconds / 86400)
    limit = max_validity_days(not_before)
    if days <= limit:
        return None
    return Problem(
        ProblemCode.VALIDITY_TOO_LONG,
        Severity.WARNING,
        f"valid for {_span(seconds)}; certificates issued on {not_before:%Y-%m-%d} may live at most {limit} days",
        "clients that follow the CA/B Forum rules may refuse it; have it reissued with a shorter validity",
        fingerprint(cert),
    )


def _span(seconds: float) -> str:
    whole, rest = divmod(seconds, 86400)
    return f"{int(whole)} days" if not rest else f"more than {int(whole)} days"


def _normal(name: str) -> str:
    name = name.lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    if name.isascii():
        return name
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError:
        return name


def _san_problems(leaf: x509.Certificate) -> list[Problem]:
    dns, ips = san_names(leaf)
    fp = fingerprint(leaf)
    if not dns and not ips:
        return [
            Problem(
                ProblemCode.NO_SAN,
                Severity.ERROR,
                "the certificate has no subjectAltName; clients ignore the common name and refuse it",
                "have it reissued with every name in the subjectAltName extension",
                fp,
            )
        ]
    cn = describe(leaf).common_name
    if cn is None:
        return []
    listed = {_normal(n) for n in dns} | {_normal(i) for i in ips}
    if _normal(cn) in listed:
        return []
    return [
        Problem(
            ProblemCode.CN_NOT_IN_SAN,
            Severity.WARNING,
            f"the common name {cn[:100]!r} is not among the subjectAltNames; clients will not accept it for that name",
            "have it reissued with the common name among the subjectAltNames",
            fp,
        )
    ]


def _expiring(cert: x509.Certificate, index: int, now: dt.datetime, expiring_days: int) -> Problem | None:
    not_after = cert.not_valid_after_utc
    left = not_after - now
    if left < dt.timedelta(0) or left > dt.timedelta(days=expiring_days):
        return None
    days = left.days
    when = "in less than a day" if days == 0 else ("in 1 day" if days == 1 else f"in {days} days")
    what = "" if index == 0 else f"the intermediate {label(cert.subject)} "
    return Problem(
        ProblemCode.EXPIRING_SOON,
        Severity.WARNING,
        f"{what}expires on {not_after:%Y-%m-%d}, {when}",
        "renew it now" if index == 0 else "get the CA's current intermediate",
        fingerprint(cert),
    )


def lint(
    served: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    expiring_days: int = 30,
    trust: TrustStore | None = None,
) -> list[Problem]:
    """Problems with the chain as a server sends it (leaf first), beyond path validation.

    With no ``trust``, a self-signed CA certificate counts as a trust anchor.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if expiring_days < 0:
        raise ValueError("expiring_days must not be negative")
    problems: list[Problem] = []
    if not served:
        return problems
    leaf = served[0]
    for index, cert in enumerate(served):
        self_signed_ca = index > 0 and _is_ca(cert) and is_self_signed(cert)
        anchor = trust.contains(cert) if trust is not None else self_signed_ca
        found = [
            _weak_signature(cert, index, anchor),
            _weak_key(cert, index),
            validity_problem(cert, now, prefix="" if index == 0 else f"the certificate {label(cert.subject)} "),
            _expiring(cert, index, now, expiring_days),
        ]
        if index == 0 or not anchor:
            prefix = "the certificate's " if index == 0 else f"the certificate {label(cert.subject)}: "
            found.append(eku_problem(cert, prefix=prefix))
        if self_signed_ca:
            found.append(
                Problem(
                    ProblemCode.ROOT_INCLUDED,
                    Severity.WARNING,
                    f"the root {label(cert.subject)} is in the served chain; clients use their own copy or none",
                    "leave the root out",
                    fingerprint(cert),
                )
            )
        problems.extend(p for p in found if p is not None)
    if not _is_ca(leaf):
        problems.extend(_san_problems(leaf))
        found_validity = _validity_too_long(leaf)
        if found_validity is not None:
            problems.append(found_validity)
    for index in range(len(served) - 1):
        child, parent = served[index], served[index + 1]
        if not signed_by(child, parent):
            problems.append(
                Problem(
                    ProblemCode.WRONG_ORDER,
                    Severity.ERROR,
                    f"the chain is out of order: certificate {index + 1} ({label(child.subject)}) is not issued "
                    f"by certificate {index + 2} ({label(parent.subject)})",
                    "send the leaf first, then each issuer in turn (`certfleet chain` puts them in order)",
                    fingerprint(parent),
                )
            )
            break
    return problems
