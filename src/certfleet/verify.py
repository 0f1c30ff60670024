"""Verification as a strict TLS client sees it: a phone, which never fetches a missing intermediate.

cryptography's ``x509.verification`` (RFC 5280 plus the CA/B Forum profile) gives the verdict.
When it refuses a chain, certfleet looks again, slowly, to say *why* in plain words; a valid
chain never pays for that second look.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, Subject, VerificationError

from certfleet.certinfo import NAME_ERRORS, cert_public_key, describe, fingerprint, readable, san_names
from certfleet.errors import CertfleetError, InputError
from certfleet.findings import (
    eku_problem,
    no_san_problem,
    validity_problem,
)
from certfleet.leafscan import LeafFacts, leaf_facts
from certfleet.paths import MAX_PATH_LENGTH, CertPath, PathEnd, extension, find_paths
from certfleet.problems import Problem, ProblemCode, Severity
from certfleet.signatures import is_self_signed
from certfleet.trust import TrustStore

__all__ = ["Verification", "Verifier", "parse_name", "verify_chain"]

_MIN_RSA_BITS = 2048
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")  # a name cryptography takes as it is
_MAX_PROVEN = 16  # intermediates remembered by reuse_proven; a bundle of leaves has a few
_MAX_NAMES = 1024  # names a verifier remembers in their parsed form


@dataclass(frozen=True)
class Verification:
    valid: bool
    # the validated path, leaf first, anchor included; when invalid, the best path found
    chain: tuple[x509.Certificate, ...]
    problems: tuple[Problem, ...]
    name: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "name": self.name,
            "chain": [describe(c).to_dict() for c in self.chain],
            "problems": [p.to_dict() for p in self.problems],
        }


# --- names ------------------------------------------------------------------------------------


def parse_name(name: str) -> x509.DNSName | x509.IPAddress:
    """A name to verify against: an IP address, or a DNS name in its ASCII (A-label) form."""
    from certfleet.names import is_ip, is_wildcard, normalize_name

    canonical = normalize_name(name)
    if is_ip(canonical):
        return x509.IPAddress(ipaddress.ip_address(canonical))
    if is_wildcard(canonical):
        raise InputError(f"{name[:80]!r} is a wildcard; a client connects to one name", hint="give a host name or IP")
    return x509.DNSName(canonical)


def _subject_of(
    dns: Sequence[str], ips: Callable[[], Sequence[str]]
) -> tuple[str, x509.DNSName | x509.IPAddress] | None:
    """The name to check when none is given: the leaf's first DNS name, else its first IP address."""
    for value in dns:
        # a wildcard stands for any one label; check it as such a name
        probe = ("certfleet-check" + value[1:] if value.startswith("*.") else value).lower()
        if _HOSTNAME.fullmatch(probe):  # the common case, without the cost of IDNA
            return value, x509.DNSName(probe)
        try:
            return value, parse_name(probe)
        except InputError:
            continue
    addresses = ips()
    if addresses:
        return addresses[0], x509.IPAddress(ipaddress.ip_address(addresses[0]))
    return None


def _name_problem(leaf: x509.Certificate, name: str) -> Problem | None:
    from certfleet.names import coverage

    try:
        missing = coverage(leaf, [name]).missing
    except CertfleetError:  # a hostile certificate with thousands of names
        return None
    if not missing:
        return None
    return Problem(
        ProblemCode.NAME_MISMATCH,
        Severity.ERROR,
        missing[0].reason,
        "reissue the certificate with this name among its subjectAltNames",
        fingerprint(leaf),
    )


# --- verification -----------------------------------------------------------------------------


_PATH_CODES = frozenset(
    {
        ProblemCode.INCOMPLETE_CHAIN,
        ProblemCode.UNTRUSTED,
        ProblemCode.SELF_SIGNED,
        ProblemCode.INVALID,
        ProblemCode.ISSUER_NAME_DIFFERS,
    }
)
# fragments of cryptography's refusals, and the codes of certfleet's findings that explain them
# (and, first, certfleet.diagnose's structural faults, each explained by its own code)
_EXPLAINED_BY: tuple[tuple[str, frozenset[ProblemCode]], ...] = (
    ("not valid at validation time", frozenset({ProblemCode.EXPIRED, ProblemCode.NOT_YET_VALID})),
    ("subjectAltName", frozenset({ProblemCode.NAME_MISMATCH, ProblemCode.NO_SAN})),
    ("EKU", frozenset({ProblemCode.MISSING_SERVER_AUTH})),
    ("no interior errors", _PATH_CODES),
    ("signature does not match", _PATH_CODES),
    ("exceeds max depth", _PATH_CODES),
    ("Forbidden signature algorithm", frozenset({ProblemCode.WEAK_SIGNATURE})),
)
_PROCESSING = re.compile(r" \(encountered processing <Certificate\(subject=<Name\((.*?)\)>, \.\.\.\)>\)")
# cryptography's Rust debug form of an algorithm: keep only the name of its parameters
_ALGORITHM = re.compile(r"AlgorithmIdentifier \{ oid: [^}]*?, params: (\w+)[^}]*\}")


def _explained(reason: str, problems: Sequence[Problem]) -> bool:
    from certfleet.diagnose import ALSO_EXPLAINED_BY, STRUCTURAL

    codes = {p.code for p in problems}
    structural = tuple(
        (fragment, frozenset({code, *ALSO_EXPLAINED_BY.get(code, ())})) for fragment, code in STRUCTURAL
    )
    for fragment, codes_that_explain in (*structural, *_EXPLAINED_BY):
        if fragment in reason:
            return bool(codes & codes_that_explain)
    return False


def _plain(reason: str) -> str:
    """cryptography's message without its prefix and Python reprs, bounded."""
    text = reason.removeprefix("validation failed: ")
    text = _PROCESSING.sub(lambda m: f" (at {m.group(1)[:100]})", text)
    text = _ALGORITHM.sub(lambda m: m.group(1), text)
    return text[:300]


_PHONE_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


def _server_auth_problem(leaf: x509.Certificate) -> Problem | None:
    eku = extension(leaf, x509.ExtendedKeyUsage)
    if eku is not None and ExtendedKeyUsageOID.SERVER_AUTH in eku:
        return None
    lacking = eku_problem(leaf, prefix="the certificate's ") if eku is not None else None
    what = "has no extended key usage" if eku is None else "allows any extended key usage but not serverAuth by name"
    return lacking or Problem(
        ProblemCode.MISSING_SERVER_AUTH,
        Severity.ERROR,
        f"the certificate {what}; iPhones and Macs refuse it for a server",
        "have it reissued as a TLS server certificate (extended key usage serverAuth)",
        fingerprint(leaf),
    )


def _weak_key(leaf: x509.Certificate) -> str | None:
    """Why phones refuse the leaf's key, or None."""
    key = cert_public_key(leaf)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            return f"is RSA {key.key_size} bits; phones require at least {_MIN_RSA_BITS}"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _PHONE_CURVES:
            return f"is on the curve {key.curve.name}; phones accept P-256, P-384 and P-521"
        return None
    return "is of a kind (DSA, Ed25519, ...) that phones do not accept in a server certificate"


def _phone_rules(
    leaf: x509.Certificate, subject: x509.DNSName | x509.IPAddress | None, facts: LeafFacts | None = None
) -> list[Problem]:
    """What phones refuse beyond cryptography's policy, checked on a leaf it accepted.

    Apple's platforms (since iOS 13 and macOS 10.15) require serverAuth in an extended key usage
    and RSA keys of at least 2048 bits in TLS server certificates; browsers and Apple refuse a
    wildcard over a public suffix (``*.com``). This runs for every leaf, so the common case is cheap:
    ``facts``, when the leaf's DER gave them, stand in for decoding its extensions.
    """
    problems: list[Problem] = []
    lacking = None if facts is not None and facts.server_auth else _server_auth_problem(leaf)
    if lacking is not None:
        problems.append(lacking)
    # a key the facts read is a valid point on a curve phones accept
    weak = None if facts is not None and facts.ec_curve is not None else _weak_key(leaf)
    if weak is not None:
        problems.append(
            Problem(
                ProblemCode.WEAK_KEY,
                Severity.ERROR,
                f"the certificate's key {weak}",
                "make a new key (ec:p256 or rsa:2048) and have the certificate reissued",
                fingerprint(leaf),
            )
        )
    if type(subject) is x509.DNSName:
        dns = facts.dns_names if facts is not None else san_names(leaf)[0]
        if any(n.startswith("*.") for n in dns) and not _covered(dns, subject.value):
            problem = _name_problem(leaf, subject.value)
            if problem is not None:
                problems.append(problem)
    return problems


def _covered(dns: Sequence[str], name: str) -> bool:
    # the naming rules load for a leaf with a wildcard only (the common leaf has none)
    from certfleet.names import covers

    return any(covers(n, name) for n in dns)


def _facts_if_undecodable(leaf: x509.Certificate) -> LeafFacts | None:
    """The leaf's facts, read from its DER, when cryptography cannot decode its extensions.

    cryptography decodes a certificate's extensions all at once: one that no verifier step reads
    (a malformed certificate policy) would hide the subjectAltName and the extended key usage,
    which its verifier parses on their own. leafscan reads those as cryptography would, or not
    at all. For any other leaf, cryptography's decoding (kept by the certificate) is used.
    """
    try:
        _ = leaf.extensions
    except (x509.DuplicateExtension, x509.UnsupportedGeneralNameType, ValueError, TypeError):
        return leaf_facts(leaf.tbs_certificate_bytes)
    return None


class Verifier:
    """Verifies many leaves against one trust store and one set of intermediates, built once.

    With ``reuse_proven``, an intermediate that a leaf's full verification proved up to an anchor
    is remembered, and the next leaf it issued is checked against it alone (see ``_shortcut``):
    the same verdicts, in about half the time per leaf when many leaves share intermediates.
    Without it, every leaf is verified on its own, as by a fresh verifier.
    """

    def __init__(
        self,
        trust: TrustStore,
        untrusted: Sequence[x509.Certificate] = (),
        *,
        at: dt.datetime,
        max_depth: int | None = None,
        reuse_proven: bool = False,
    ) -> None:
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        self.trust = trust
        self.at = at.astimezone(dt.UTC)
        self.untrusted = [readable(c) for c in untrusted]
        self.max_depth = max_depth
        self.reuse_proven = reuse_proven
        self._builder: PolicyBuilder | None = None
        # intermediates proven up to an anchor, with the rest of their path; trusted by one verifier
        self._proven: list[tuple[x509.Certificate, tuple[x509.Certificate, ...]]] = []
        self._proven_builder: PolicyBuilder | None = None
        self._names: dict[str, x509.DNSName | x509.IPAddress] = {}
        if trust.certs:
            builder = PolicyBuilder().store(Store(list(trust.certs))).time(self.at)
            self._builder = builder.max_chain_depth(max_depth) if max_depth is not None else builder

    @property
    def proven(self) -> tuple[x509.Certificate, ...]:
        """The intermediates ``reuse_proven`` has remembered so far, in the order proven."""
        return tuple(cert for cert, _ in self._proven)

    def verify(self, leaf: x509.Certificate, name: str | None = None) -> Verification:
        """Verify ``leaf`` for ``name`` (DNS or IP; None: the leaf's own first name)."""
        facts = _facts_if_undecodable(leaf)
        step = self._prepare(leaf, name, facts)
        if isinstance(step, Verification):
            return step
        subject, shown = step
        chain, reason = self._verdict(leaf, subject)
        if chain is None:
            return self._explain(leaf, subject, shown, reason)
        return self._accepted(leaf, chain, subject, shown, facts)

    # verify() in three steps, which certfleet._batch also runs over many leaves at a time:
    # what the leaf is checked for, cryptography's verdict, then the rules phones add.

    def _prepare(
        self, leaf: x509.Certificate, name: str | None, facts: LeafFacts | None = None
    ) -> Verification | tuple[Subject, str | None]:
        """What ``leaf`` is to be checked for (the subject, the name shown), or its Verification
        already when it has no name to check or nothing can be trusted."""
        # As readable(leaf), in two steps: the subject now (unless the facts say it decodes), the
        # issuer once a path is found (it then names an issuer whose subject decodes), or at once
        # when none is (see _explain).
        if facts is None:
            try:
                _ = leaf.subject
            except NAME_ERRORS:
                readable(leaf)
        subject: Subject
        if name is not None:
            try:
                subject = self._parse_name(name)
            except CertfleetError:
                readable(leaf)  # a name that does not decode is said first
                raise
            shown: str | None = str(subject.value)
        else:
            if facts is not None:
                own = _subject_of(facts.dns_names, facts.ip_texts)
            else:
                dns, ips = san_names(leaf)
                own = _subject_of(dns, lambda: ips)
            if own is None:
                return self._explain(leaf, None, None, None)
            shown, subject = own
        if self._builder is None:
            return self._explain(leaf, subject, shown, None)
        return subject, shown

    def _verdict(self, leaf: x509.Certificate, subject: Subject) -> tuple[list[x509.Certificate] | None, str | None]:
        """cryptography's verdict: the validated chain, or None and cryptography's reason."""
        chain = self._shortcut(leaf, subject)
        if chain is not None:
            return chain, None
        if self._builder is None:  # (never: without it, _prepare explained the leaf)
            return None, None
        try:
            chain = self._builder.build_server_verifier(subject).verify(leaf, self.untrusted)
        except (VerificationError, ValueError) as exc:  # ValueError: a name cryptography refuses
            return None, str(exc)
        if self.reuse_proven:
            self._remember(chain)
        return chain, None

    def _accepted(
        self,
        leaf: x509.Certificate,
        chain: Sequence[x509.Certificate],
        subject: Subject,
        shown: str | None,
        facts: LeafFacts | None = None,
    ) -> Verification:
        """The Verification of a leaf cryptography accepted: valid unless phones refuse it."""
        if not self._issuer_decodes(chain):
            readable(leaf)
        refusals = _phone_rules(leaf, subject, facts)
        return Verification(valid=not refusals, chain=tuple(chain), problems=tuple(refusals), name=shown)

    @staticmethod
    def _issuer_decodes(chain: Sequence[x509.Certificate]) -> bool:
        # cryptography links a certificate to its issuer only when the issuer's subject and its
        # issuer name are the same attributes, byte for byte: one decodes exactly when the other does
        if len(chain) < 2:
            return False
        try:
            _ = chain[1].subject
        except NAME_ERRORS:
            return False
        return True

    def _parse_name(self, name: str) -> x509.DNSName | x509.IPAddress:
        # a batch checks every leaf for the same --name: its IDNA form is worked out once
        parsed = self._names.get(name)
        if parsed is None:
            parsed = parse_name(name)
            if len(self._names) < _MAX_NAMES:
                self._names[name] = parsed
        return parsed

    # reuse_proven: leaves that share intermediates. Once a full verification proves an
    # intermediate up to an anchor (at this time, under this policy), the next leaf it issued
    # needs only its own link, checked by a verifier that trusts that intermediate. Nothing above
    # the intermediate can change the verdict on such a leaf unless it constrains names, or a
    # depth limit applies; in those cases every leaf takes the full path. (A path length
    # constraint above it counts the intermediates between, never the leaf: the proof holds.)
    def _shortcut(self, leaf: x509.Certificate, subject: Subject) -> list[x509.Certificate] | None:
        if self._proven_builder is None:
            return None
        try:
            chain = self._proven_builder.build_server_verifier(subject).verify(leaf, [])
        except (VerificationError, ValueError):
            return None
        anchor = chain[-1]
        for cert, upper in self._proven:
            # the anchor is the very object the proven store holds; == compares whole certificates
            if cert is anchor or cert == anchor:
                return [*chain, *upper]
        return None

    def _remember(self, chain: Sequence[x509.Certificate]) -> None:
        if self.max_depth is not None or len(chain) < 3 or len(self._proven) >= _MAX_PROVEN:
            return
        intermediate, upper = chain[1], tuple(chain[2:])
        if any(cert == intermediate for cert, _ in self._proven):
            return
        if any(extension(c, x509.NameConstraints) is not None for c in chain[1:]):
            return
        self._proven.append((intermediate, upper))
        store = Store([cert for cert, _ in self._proven])
        self._proven_builder = PolicyBuilder().store(store).time(self.at)

    def _explain(
        self,
        leaf: x509.Certificate,
        subject: x509.DNSName | x509.IPAddress | None,
        shown: str | None,
        reason: str | None,
    ) -> Verification:
        """Why a strict client refuses ``leaf``: precise problems from certfleet's own checks.

        ``reason`` is cryptography's message; it is reported as well unless those checks explain it.
        """
        # only here: a leaf whose chain is valid never needs the diagnosis
        from certfleet.diagnose import path_problems, structural_problems

        readable(leaf)  # the issuer's name too: nothing proved that it decodes
        problems: list[Problem] = []
        path = self._best_path(leaf)

        def add(problem: Problem | None) -> None:
            if problem is not None and problem not in problems:
                problems.append(problem)

        add(validity_problem(leaf, self.at))
        self_signed = is_self_signed(leaf) and not self.trust.contains(leaf)
        if self_signed:
            add(
                Problem(
                    ProblemCode.SELF_SIGNED,
                    Severity.ERROR,
                    "the certificate is self-signed: no client trusts it unless told to",
                    "have a CA sign it, or give it to the clients (and to certfleet with --trust)",
                    fingerprint(leaf),
                )
            )
        if subject is None:
            add(no_san_problem(leaf))
        else:
            dns, ips = san_names(leaf)
            add(no_san_problem(leaf) if not dns and not ips else _name_problem(leaf, str(subject.value)))
        for problem in _phone_rules(leaf, subject):
            add(problem)

        if not self_signed:
            for problem in path_problems(path, self.trust, self.untrusted, self.at, self.max_depth):
                add(problem)
        # what cryptography finds wrong with the path itself, asked without a name
        for problem in structural_problems(leaf, path, self.untrusted, self.trust, self.at):
            add(problem)
        if (reason is not None and not _explained(reason, problems)) or not problems:
            add(
                Problem(
                    ProblemCode.INVALID,
                    Severity.ERROR,
                    f"a strict client refuses this chain: {_plain(reason or 'no path to a trusted root')}",
                    "check the chain with `certfleet chain`, or ask the CA",
                    fingerprint(leaf),
                )
            )
        return Verification(valid=False, chain=path.certs, problems=tuple(problems), name=shown)

    def _best_path(self, leaf: x509.Certificate) -> CertPath:
        # max_depth counts intermediates; a path also holds the leaf and the anchor
        depth = self.max_depth + 2 if self.max_depth is not None else MAX_PATH_LENGTH
        paths = find_paths(
            leaf, self.untrusted, self.trust, at=self.at, max_depth=min(depth, MAX_PATH_LENGTH), first_trusted=True
        )
        return paths[0] if paths else CertPath((leaf,), PathEnd.MISSING_ISSUER)


def verify_chain(
    leaf: x509.Certificate,
    untrusted: Sequence[x509.Certificate],
    trust: TrustStore,
    *,
    name: str | None = None,
    at: dt.datetime,
    max_depth: int | None = None,
) -> Verification:
    """Verify ``leaf`` with the ``untrusted`` intermediates against ``trust``, for ``name`` at ``at``.

    Never fetches anything. ``name`` None checks the leaf's own first DNS name (or IP address).
    """
    return Verifier(trust, untrusted, at=at, max_depth=max_depth).verify(leaf, name)
