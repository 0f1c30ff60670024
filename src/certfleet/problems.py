"""Problems: findings with a stable code, a severity, a plain message and a hint."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Problem", "ProblemCode", "Severity", "worst"]


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
    # keys
    KEY_MISMATCH = "key-mismatch"
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
