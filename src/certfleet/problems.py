"""Problems: findings with a stable code, a severity, a plain message and a hint."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["EXPIRING_DAYS", "Problem", "ProblemCode", "Severity", "worst"]

# the one default for ``expiring-soon``: a certificate with fewer days left than this is warned about
# (lint, check, watch, status and the console all start from it)
EXPIRING_DAYS = 30


class Severity(StrEnum):
    ERROR = "error"  # a strict client will refuse, or the job cannot go on
    WARNING = "warning"  # works today, will break or is poor practice
    INFO = "info"  # worth knowing (a certificate dropped from a bundle, a fetched intermediate)

    @property
    def rank(self) -> int:
        return {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}[self]


class ProblemCode(StrEnum):
    """Stable codes: scripts and the console match on these, so never rename one."""

    # path validation, as a strict client sees it
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    NAME_MISMATCH = "name-mismatch"
    UNTRUSTED = "untrusted"
    INCOMPLETE_CHAIN = "incomplete-chain"
    INVALID = "invalid"  # any other path-validation failure; the message carries the detail
    SELF_SIGNED = "self-signed"
    # the structure of the path: a certificate that may not stand where it stands
    MISSING_BASIC_CONSTRAINTS = "missing-basic-constraints"  # an issuer without basicConstraints
    NOT_A_CA = "not-a-ca"  # an issuer whose basicConstraints says cA=false
    MISSING_KEY_CERT_SIGN = "missing-key-cert-sign"  # an issuer whose key usage lacks keyCertSign
    PATH_LENGTH_EXCEEDED = "path-length-exceeded"  # more intermediates than a pathLenConstraint allows
    NAME_CONSTRAINTS_VIOLATED = "name-constraints-violated"  # names outside an issuer's name constraints
    UNKNOWN_CRITICAL_EXTENSION = "unknown-critical-extension"  # a critical extension clients do not know
    PRECERTIFICATE = "precertificate"  # a CT precertificate (the poison extension), not the certificate
    # an issuer matched as RFC 5280 compares names (case, spaces, string type), not byte for byte
    ISSUER_NAME_DIFFERS = "issuer-name-differs"
    # the chain as served
    WRONG_ORDER = "wrong-order"
    ROOT_INCLUDED = "root-included"
    UNRELATED_CERTIFICATE = "unrelated-certificate"
    DUPLICATE_CERTIFICATE = "duplicate-certificate"
    FETCHED_INTERMEDIATE = "fetched-intermediate"
    # lint
    WEAK_SIGNATURE = "weak-signature"
    WEAK_KEY = "weak-key"
    MISSING_SERVER_AUTH = "missing-server-auth"
    VALIDITY_TOO_LONG = "validity-too-long"
    EXPIRING_SOON = "expiring-soon"
    NO_SAN = "no-san"
    CN_NOT_IN_SAN = "cn-not-in-san"
    MALFORMED_NAME = "malformed-name"  # a name attribute out of its bounds (a country code of three letters)
    # keys
    KEY_MISMATCH = "key-mismatch"
    # reading the inputs: an item left unread beside the ones that were read
    UNREADABLE_ITEM = "unreadable-item"  # damaged or cut short
    PASSWORD_NEEDED = "password-needed"  # noqa: S105 (encrypted; no password given opens it)
    UNSUPPORTED_ITEM = "unsupported-item"  # of a kind no TLS client accepts (a DSA certificate)
    IGNORED_ITEM = "ignored-item"  # of no use to a server (a certificate revocation list)
    # endpoints
    HANDSHAKE_FAILED = "handshake-failed"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    SERVES_OTHER_CERTIFICATE = "serves-other-certificate"
    # a lineage's versions and deployments
    DOWNGRADE = "downgrade"  # a version that would replace the active one is worse in some way
    INTERRUPTED = "interrupted"  # a deploy never finished on a node
    UNPROVEN = "unproven"  # a node's live files point at a version no deploy proved there


@dataclass(frozen=True, slots=True)
class Problem:
    code: ProblemCode
    severity: Severity
    message: str
    hint: str = ""
    # sha256 fingerprint or file name of the certificate/key the problem is about, when there is one
    subject: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "code": self.code.value,
            "severity": self.severity.value,
            "message": self.message,
            "hint": self.hint,
            "subject": self.subject,
        }


def worst(problems: Iterable[Problem]) -> Severity | None:
    """The most severe severity among ``problems``, or None when there are none."""
    found = [p.severity for p in problems]
    return max(found, key=lambda s: s.rank) if found else None
