"""Lint: what path validation lets through but a careful administrator (or a stricter client) would not."""

from __future__ import annotations

import calendar
import datetime as dt
import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from certfleet.certinfo import (
    cert_public_key,
    common_name,
    fingerprint,
    is_ca,
    is_self_issued,
    printable,
    readable,
    san_names,
)
from certfleet.findings import (
    eku_problem,
    expiring_problem,
    label,
    no_san_problem,
    precertificate_problem,
    validity_problem,
    weak_signature_problem,
)
from certfleet.names import canonical_name
from certfleet.problems import EXPIRING_DAYS, Problem, ProblemCode, Severity
from certfleet.signatures import Signature, check_signature, is_self_signed
from certfleet.trust import TrustStore

__all__ = ["MAX_VALIDITY", "ValidityRule", "lint", "max_validity_days", "validity_rule"]


@dataclass(frozen=True, slots=True)
class ValidityRule:
    """The longest validity of a subscriber certificate issued (notBefore) on or after ``start``."""

    start: dt.datetime
    rule: str  # where the limit comes from
    days: int | None = None  # a limit in days (both ends counted, any part of a day a whole day)
    months: int | None = None  # or in calendar months

    @property
    def limit(self) -> str:
        return f"{self.days} days" if self.days is not None else f"{self.months} months"

    def allows(self, not_before: dt.datetime, not_after: dt.datetime) -> bool:
        if self.months is not None:
            return not_after <= _add_months(not_before, self.months)
        assert self.days is not None  # noqa: S101 (every rule has days or months)
        return _days(not_before, not_after) <= self.days

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.date().isoformat(), "limit": self.limit, "rule": self.rule}


def _utc(year: int, month: int, day: int) -> dt.datetime:
    return dt.datetime(year, month, day, tzinfo=dt.UTC)


# The CA/B Forum Baseline Requirements over the years, newest first. Before the first of them
# took effect (2012-07-01) no rule bounded a certificate's validity.
MAX_VALIDITY: tuple[ValidityRule, ...] = (
    ValidityRule(_utc(2029, 3, 15), "CA/B Forum ballot SC-081", days=47),
    ValidityRule(_utc(2027, 3, 15), "CA/B Forum ballot SC-081", days=100),
    ValidityRule(_utc(2026, 3, 15), "CA/B Forum ballot SC-081", days=200),
    ValidityRule(_utc(2020, 9, 1), "CA/B Forum ballot SC31", days=398),
    ValidityRule(_utc(2018, 3, 1), "CA/B Forum ballot 193", days=825),
    ValidityRule(_utc(2015, 4, 1), "CA/B Forum Baseline Requirements", months=39),
    ValidityRule(_utc(2012, 7, 1), "CA/B Forum Baseline Requirements 1.0", months=60),
)


def validity_rule(not_before: dt.datetime) -> ValidityRule | None:
    """The rule in force for a certificate issued at ``not_before``; None before there was one."""
    return next((rule for rule in MAX_VALIDITY if not_before >= rule.start), None)


def max_validity_days(not_before: dt.datetime) -> int | None:
    """The longest validity, in days, of a certificate issued at ``not_before``; None before any rule."""
    rule = validity_rule(not_before)
    if rule is None:
        return None
    if rule.days is not None:
        return rule.days
    assert rule.months is not None  # noqa: S101 (every rule has days or months)
    return (_add_months(not_before, rule.months) - not_before).days


def _add_months(when: dt.datetime, months: int) -> dt.datetime:
    month0 = when.month - 1 + months
    year, month = when.year + month0 // 12, month0 % 12 + 1
    return when.replace(year=year, month=month, day=min(when.day, calendar.monthrange(year, month)[1]))


def _days(not_before: dt.datetime, not_after: dt.datetime) -> int:
    # the Baseline Requirements count both ends inclusive, and any part of a day as a whole day
    return math.ceil(((not_after - not_before).total_seconds() + 1) / 86400)


_GOOD_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
_MIN_RSA_BITS = 2048


def _weak_key(cert: x509.Certificate, name: str | None) -> Problem | None:
    what = "the certificate's key" if name is None else f"the key of {name}"
    key = cert_public_key(cert)
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
        reason = "is DSA, which no TLS client accepts"
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
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    rule = validity_rule(not_before)
    if rule is None or rule.allows(not_before, not_after):
        return None
    seconds = (not_after - not_before).total_seconds() + 1
    return Problem(
        ProblemCode.VALIDITY_TOO_LONG,
        Severity.WARNING,
        f"valid for {_span(seconds)}; certificates issued on {not_before:%Y-%m-%d} may live at most {rule.limit} "
        f"({rule.rule}, in force from {rule.start:%Y-%m-%d})",
        "clients that follow the CA/B Forum rules may refuse it; have it reissued with a shorter validity",
        fingerprint(cert),
    )


def _span(seconds: float) -> str:
    whole, rest = divmod(seconds, 86400)
    return f"{int(whole)} days" if not rest else f"more than {int(whole)} days"


def _san_problems(leaf: x509.Certificate) -> list[Problem]:
    dns, ips = san_names(leaf)
    if not dns and not ips:
        return [no_san_problem(leaf)]
    cn = common_name(leaf)
    if cn is None:
        return []
    if canonical_name(cn) in {canonical_name(n) for n in (*dns, *ips)}:
        return []
    return [
        Problem(
            ProblemCode.CN_NOT_IN_SAN,
            Severity.WARNING,
            f"the common name {cn[:100]!r} is not among the subjectAltNames; clients will not accept it for that name",
            "have it reissued with the common name among the subjectAltNames",
            fingerprint(leaf),
        )
    ]


# name attributes with bounds (RFC 5280's upper bounds, ISO 3166 country codes): (least, most) characters
_BOUNDED = {
    NameOID.COUNTRY_NAME: ("country code", 2, 2),
    NameOID.JURISDICTION_COUNTRY_NAME: ("jurisdiction country code", 2, 2),
    NameOID.COMMON_NAME: ("common name", 1, 64),
}


def _malformed_name(cert: x509.Certificate, name: str | None) -> list[Problem]:
    """``malformed-name`` for each subject attribute out of its bounds (cryptography only warns)."""
    what = "the certificate's" if name is None else f"the certificate {name}'s"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the very thing reported here
        attributes = list(cert.subject)
    problems: list[Problem] = []
    for attribute in attributes:
        bounds = _BOUNDED.get(attribute.oid)
        if bounds is None or not isinstance(attribute.value, str):
            continue
        kind, least, most = bounds
        size = len(attribute.value.encode())
        if least <= size <= most:
            continue
        if most == 2:
            detail = f"has the {kind} {printable(attribute.value, 40)!r}; a country code is two letters (ISO 3166)"
        else:
            detail = f"{kind} is {size} bytes long; RFC 5280 allows {least} to {most}"
        problems.append(
            Problem(
                ProblemCode.MALFORMED_NAME,
                Severity.WARNING,
                f"{what} subject {detail}",
                "have it reissued with the name corrected: strict clients may refuse it",
                fingerprint(cert),
            )
        )
    return problems


def lint(
    served: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    expiring_days: int = EXPIRING_DAYS,
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
    served = [readable(cert) for cert in served]
    leaf = served[0]
    # each certificate's signature, checked once with the next one as its issuer
    signatures = [check_signature(child, parent) for child, parent in itertools.pairwise(served)]
    for index, cert in enumerate(served):
        # names in messages: None for the leaf ("the certificate"), else the certificate's label
        name = None if index == 0 else label(cert.subject)
        what = "the certificate" if name is None else f"the certificate {name}"
        trusted = trust is not None and trust.contains(cert)
        # an anchor is trusted as a name and a key: clients never check its signature on itself,
        # so neither is it checked here, and a SHA-1 root is harmless
        self_signed = is_self_issued(cert) if trusted else is_self_signed(cert)
        root = index > 0 and self_signed and is_ca(cert)
        anchor = trusted if trust is not None else root
        unchecked = index < len(signatures) and signatures[index] is Signature.UNCHECKED
        found = [
            None if anchor and self_signed else weak_signature_problem(cert, what=what, unchecked=unchecked),
            _weak_key(cert, name),
            validity_problem(cert, now, prefix="" if name is None else f"{what} "),
            expiring_problem(cert, now, expiring_days, what="" if name is None else f"the intermediate {name}"),
        ]
        if index == 0 or not anchor:
            found.append(eku_problem(cert, prefix="the certificate's " if name is None else f"{what}: "))
        if root:
            found.append(
                Problem(
                    ProblemCode.ROOT_INCLUDED,
                    Severity.WARNING,
                    f"the root {name} is in the served chain; clients use their own copy or none",
                    "leave the root out",
                    fingerprint(cert),
                )
            )
        problems.extend(p for p in found if p is not None)
        problems.extend(_malformed_name(cert, name))
    poisoned = precertificate_problem(leaf)
    if poisoned is not None:
        problems.append(poisoned)
    if not is_ca(leaf):
        problems.extend(_san_problems(leaf))
        found_validity = _validity_too_long(leaf)
        if found_validity is not None:
            problems.append(found_validity)
    problems.extend(_order_problems(served, signatures))
    return problems


def _order_problems(served: Sequence[x509.Certificate], signatures: Sequence[Signature]) -> list[Problem]:
    """``wrong-order`` at the first certificate not issued by the next one.

    A signature in an algorithm nobody can check proves nothing either way: it is reported as a
    weak signature, not as a certificate out of place.
    """
    for index, signature in enumerate(signatures):
        if signature is Signature.BAD:
            child, parent = served[index], served[index + 1]
            return [
                Problem(
                    ProblemCode.WRONG_ORDER,
                    Severity.ERROR,
                    f"the chain is out of order: certificate {index + 1} ({label(child.subject)}) is not issued "
                    f"by certificate {index + 2} ({label(parent.subject)})",
                    "send the leaf first, then each issuer in turn (`certfleet chain` puts them in order)",
                    fingerprint(parent),
                )
            ]
    return []
