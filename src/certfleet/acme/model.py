"""The plain values of issuing: issuers (ACME accounts or the manual CA), how a lineage is issued
(its issuers in order, the challenge solvers for its names, profile, preferred chain, key
policy), where a version came from, and revocations.

Below the store, like :mod:`certfleet.fleet.model`: the store keeps and returns these values;
this module imports nothing of certfleet but the error tree, and nothing of the ACME library.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from certfleet.errors import InputError

__all__ = [
    "AccountStatus",
    "ChallengeType",
    "IssuanceRecord",
    "IssuerKind",
    "IssuerRecord",
    "LineagePolicy",
    "RevocationReason",
    "RevocationRecord",
    "SolverRule",
    "pick_rule",
]


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class IssuerKind(StrEnum):
    ACME = "acme"  # an ACME account at a CA: certfleet orders, proves control, downloads
    MANUAL = "manual"  # CSR out, package in: `certfleet request`, then `certfleet import`


class AccountStatus(StrEnum):
    VALID = "valid"
    DEACTIVATED = "deactivated"  # the CA will refuse every request signed by this account


@dataclass(frozen=True, slots=True)
class IssuerRecord:
    """An issuer as the store keeps it. The account key is not here: it stays sealed in the store."""

    name: str
    kind: IssuerKind
    created_at: dt.datetime
    updated_at: dt.datetime
    directory_url: str | None = None
    account_url: str | None = None
    status: AccountStatus | None = None
    contact: tuple[str, ...] = ()
    eab_kid: str | None = None  # the key id the CA gave for External Account Binding
    profile: str | None = None  # the CA profile every order asks for unless the lineage says otherwise
    ca_bundle: str | None = None  # PEM roots for the ACME server's own HTTPS certificate (a private CA)
    caa_identities: tuple[str, ...] = ()  # the CA's CAA domain names (its directory's, or given)
    terms_of_service: str | None = None  # the terms the account agreed to
    key_spec: str | None = None  # the account key's kind, "ec:p256"
    key_thumbprint: str | None = None  # RFC 7638 thumbprint of the account key (base64url)
    key_changed_at: dt.datetime | None = None

    @property
    def is_acme(self) -> bool:
        return self.kind is IssuerKind.ACME

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "directory": self.directory_url,
            "account": self.account_url,
            "status": self.status.value if self.status is not None else None,
            "contact": list(self.contact),
            "eab_kid": self.eab_kid,
            "profile": self.profile,
            "ca_bundle": self.ca_bundle is not None,
            "caa_identities": list(self.caa_identities),
            "terms_of_service": self.terms_of_service,
            "key": self.key_spec,
            "key_thumbprint": self.key_thumbprint,
            "key_changed_at": _iso(self.key_changed_at),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


class ChallengeType(StrEnum):
    HTTP01 = "http-01"
    DNS01 = "dns-01"


@dataclass(frozen=True, slots=True)
class SolverRule:
    """``PATTERN=TYPE[:SPEC]``: names matching ``pattern`` are proven with ``challenge`` through
    ``spec`` (``http-01:gw1`` is the webroot of node gw1, ``http-01`` alone the webroot of every
    node that serves the name; ``dns-01:rfc2136:FILE``, ``dns-01:lexicon:PROVIDER[:FILE]``,
    ``dns-01:hook:COMMAND``).

    A pattern is a name (``example.com``, ``*.example.com`` for the wildcard name itself) or a
    shell-style pattern over names (``*``, ``*.example.com`` also matches ``www.example.com``);
    for a given name the rule that names it exactly wins, then the longest pattern that matches.
    """

    pattern: str
    challenge: ChallengeType
    spec: str = ""

    @classmethod
    def parse(cls, text: str) -> SolverRule:
        pattern, eq, rest = text.strip().partition("=")
        challenge, _, spec = rest.strip().partition(":")
        pattern = pattern.strip().lower().rstrip(".")
        if not eq or not pattern or not challenge:
            raise InputError(
                f"solver {text[:80]!r} is not PATTERN=TYPE[:SPEC]",
                hint="e.g. 'mbg.example.com=http-01:gw1', '*.example.com=dns-01:rfc2136:/etc/certfleet/tsig.ini'",
            )
        try:
            kind = ChallengeType(challenge.strip().lower())
        except ValueError:
            raise InputError(
                f"solver {text[:80]!r}: unknown challenge {challenge[:20]!r}", hint="use http-01 or dns-01"
            ) from None
        if len(text) > 1024 or any(c in text for c in "\x00\r\n"):
            raise InputError("a solver is longer than 1024 characters or holds a line break")
        if kind is ChallengeType.DNS01 and not spec.strip():
            raise InputError(
                f"solver {text[:80]!r} says dns-01 but not how",
                hint="dns-01:rfc2136:FILE, dns-01:lexicon:PROVIDER[:FILE] or dns-01:hook:COMMAND",
            )
        return cls(pattern, kind, spec.strip())

    def matches(self, name: str) -> bool:
        return self.pattern == name or fnmatch.fnmatchcase(name, self.pattern)

    def __str__(self) -> str:
        return f"{self.pattern}={self.challenge.value}" + (f":{self.spec}" if self.spec else "")

    def to_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "challenge": self.challenge.value, "spec": self.spec}


def pick_rule(rules: Sequence[SolverRule], name: str) -> SolverRule | None:
    """The rule for ``name``: one naming it exactly, else the longest pattern that matches it."""
    exact = next((r for r in rules if r.pattern == name), None)
    if exact is not None:
        return exact
    matching = [r for r in rules if r.matches(name)]
    return max(matching, key=lambda r: len(r.pattern)) if matching else None


@dataclass(frozen=True, slots=True)
class LineagePolicy:
    """How a lineage gets its certificates: its issuers in order (the next is tried when one
    fails), the solvers for its names, the CA profile, the preferred chain, the key policy."""

    lineage: str
    issuers: tuple[str, ...] = ()
    solvers: tuple[SolverRule, ...] = ()
    profile: str | None = None
    preferred_chain: str | None = None  # the common name of the chain's top certificate's issuer
    reuse_key: bool = False  # False: a new key for every order

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "issuers": list(self.issuers),
            "solvers": [str(r) for r in self.solvers],
            "profile": self.profile,
            "preferred_chain": self.preferred_chain,
            "key_policy": "reuse" if self.reuse_key else "new key per order",
        }


class RevocationReason(StrEnum):
    """RFC 5280 reason codes an ACME client may give (RFC 8555 §7.6), spelled as in RFC 5280."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "keyCompromise"
    AFFILIATION_CHANGED = "affiliationChanged"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessationOfOperation"
    PRIVILEGE_WITHDRAWN = "privilegeWithdrawn"

    @property
    def code(self) -> int:
        return _REASON_CODES[self]

    @classmethod
    def parse(cls, text: str) -> RevocationReason:
        wanted = text.strip().replace("-", "").replace("_", "").lower()
        for reason in cls:
            if reason.value.lower() == wanted:
                return reason
        raise InputError(
            f"unknown revocation reason {text[:40]!r}", hint=f"use one of {', '.join(r.value for r in cls)}"
        )


_REASON_CODES = {
    RevocationReason.UNSPECIFIED: 0,
    RevocationReason.KEY_COMPROMISE: 1,
    RevocationReason.AFFILIATION_CHANGED: 3,
    RevocationReason.SUPERSEDED: 4,
    RevocationReason.CESSATION_OF_OPERATION: 5,
    RevocationReason.PRIVILEGE_WITHDRAWN: 9,
}


@dataclass(frozen=True, slots=True)
class RevocationRecord:
    lineage: str
    version: int
    fingerprint: str | None
    reason: RevocationReason
    revoked_at: dt.datetime
    actor: str
    issuer: str | None  # the ACME issuer that was told; None when only the store knows

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "reason": self.reason.value,
            "revoked_at": _iso(self.revoked_at),
            "actor": self.actor,
            "issuer": self.issuer,
        }


@dataclass(frozen=True, slots=True)
class IssuanceRecord:
    """Which issuer made a version, and what was tried before it."""

    lineage: str
    version: int
    issuer: str
    order_url: str | None
    issued_at: dt.datetime
    tried: tuple[str, ...] = ()  # "issuer: why it failed", in order, for the issuers tried first

    def to_dict(self) -> dict[str, Any]:
        return {
            "lineage": self.lineage,
            "version": self.version,
            "issuer": self.issuer,
            "order": self.order_url,
            "issued_at": _iso(self.issued_at),
            "tried": list(self.tried),
        }
