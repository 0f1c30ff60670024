"""Why a strict client refuses a path, told certificate by certificate.

The verdict is cryptography's. When a chain is refused, its client verifier is asked again about
the path alone, without a name, so that a leaf without a subjectAltName (or a name the server
verifier stops at first) still gets its path judged: a CA certificate without basicConstraints,
with cA=false or without keyCertSign, a chain beyond a pathLenConstraint or outside name
constraints, an extension clients must refuse. Each fault cryptography names is reported with its
own code, on the certificate that has it; the other faults of the same kinds on that path are
reported with it (cryptography stops at the first).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from certfleet import extensions
from certfleet.certinfo import fingerprint
from certfleet.findings import (
    eku_problem,
    issuer_name_problem,
    label,
    precertificate_problem,
    validity_problem,
    weak_signature_problem,
)
from certfleet.paths import CertPath, PathEnd
from certfleet.problems import Problem, ProblemCode, Severity
from certfleet.signatures import Signature, check_signature, is_self_signed
from certfleet.trust import TrustStore

__all__ = ["ALSO_EXPLAINED_BY", "STRUCTURAL", "path_problems", "structural_problems"]

# fragments of cryptography's refusals that name a fault in the structure of the path, and its code
STRUCTURAL: tuple[tuple[str, ProblemCode], ...] = (
    ("CA certificate has no basicConstraints", ProblemCode.MISSING_BASIC_CONSTRAINTS),
    ("basicConstraints.cA must be asserted in a CA certificate", ProblemCode.NOT_A_CA),
    ("keyUsage.keyCertSign must be asserted", ProblemCode.MISSING_KEY_CERT_SIGN),
    ("path length constraint violated", ProblemCode.PATH_LENGTH_EXCEEDED),
    ("name constraint matched", ProblemCode.NAME_CONSTRAINTS_VIOLATED),
    ("name constraints matched", ProblemCode.NAME_CONSTRAINTS_VIOLATED),
    ("ctPoison", ProblemCode.PRECERTIFICATE),
    ("unaccounted-for critical extensions", ProblemCode.UNKNOWN_CRITICAL_EXTENSION),
)
# a precertificate's poison extension is the critical extension some cryptography releases leave
# unaccounted for, rather than naming ctPoison: the precertificate finding explains that reason
ALSO_EXPLAINED_BY: dict[ProblemCode, frozenset[ProblemCode]] = {
    ProblemCode.UNKNOWN_CRITICAL_EXTENSION: frozenset({ProblemCode.PRECERTIFICATE}),
}
_HINT_CA = "get the CA's current intermediate certificate (this one cannot issue certificates), or ask the CA"


def _fault(reason: str) -> ProblemCode | None:
    return next((code for fragment, code in STRUCTURAL if fragment in reason), None)


def _path_policy() -> PolicyBuilder:
    # the leaf's names and usages are judged elsewhere: here only what it takes to be a path
    ee = (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
    )
    return PolicyBuilder().extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)


def structural_problems(
    leaf: x509.Certificate,
    path: CertPath,
    untrusted: Sequence[x509.Certificate],
    trust: TrustStore,
    at: dt.datetime,
) -> list[Problem]:
    """The faults in the structure of ``leaf``'s path, as cryptography's client verifier finds them.

    ``path`` (certfleet's best path, by signatures) names the certificates; when it does not reach
    an anchor, its last certificate stands in for one, so the part of the path that is there is judged.
    """
    anchors = list(trust.certs)
    if not path.trusted and len(path.certs) > 1:
        anchors.append(path.certs[-1])
    if not anchors:
        return []
    try:
        _path_policy().store(Store(anchors)).time(at).build_client_verifier().verify(leaf, list(untrusted))
    except VerificationError as exc:
        reason = str(exc)
    except extensions.DECODE_ERRORS:  # the path holds, but the leaf's names do not convert (an x400Address)
        return []
    else:
        return []
    code = _fault(reason)
    if code is None:
        return []
    found = _scan(path, trust, reason)
    accounted = {code, *ALSO_EXPLAINED_BY.get(code, ())}
    if not any(p.code in accounted for p in found):
        found.append(_unplaced(code, reason, leaf))
    return found


def _scan(path: CertPath, trust: TrustStore, reason: str) -> list[Problem]:
    """Every fault of the kinds cryptography checks, on each certificate of ``path``."""
    problems: list[Problem] = []
    certs = path.certs
    for index, cert in enumerate(certs):
        # an anchor, or the certificate that stands in for one: only its pathLenConstraint binds
        anchor = trust.contains(cert) or (index == len(certs) - 1 and not path.trusted and index > 0)
        root = trust.contains(cert) or is_self_signed(cert)
        what = "the certificate" if index == 0 else f"the {'root' if root else 'intermediate'} {label(cert.subject)}"
        if not anchor:
            problems.extend(_critical(cert, what))
        if index == 0:
            continue
        constraints = extensions.get(cert, x509.BasicConstraints)
        below = index - 1  # intermediates between it and the leaf, as cryptography counts them
        if constraints is not None and constraints.path_length is not None and below > constraints.path_length:
            allowed = constraints.path_length
            problems.append(
                _problem(
                    ProblemCode.PATH_LENGTH_EXCEEDED,
                    f"{what} allows {allowed} intermediate{'' if allowed == 1 else 's'} below it (pathLenConstraint), "
                    f"and this chain has {below}",
                    "use the chain the CA publishes for this certificate, or ask the CA",
                    cert,
                )
            )
        if anchor:
            continue  # an anchor is trusted as a name and a key; its own constraints are the client's
        if constraints is None:
            problems.append(
                _problem(
                    ProblemCode.MISSING_BASIC_CONSTRAINTS,
                    f"{what} issued a certificate but has no basicConstraints extension, so it is no CA",
                    _HINT_CA,
                    cert,
                )
            )
        elif not constraints.ca:
            problems.append(
                _problem(
                    ProblemCode.NOT_A_CA,
                    f"{what} issued a certificate but its basicConstraints says it is no CA (cA=false)",
                    _HINT_CA,
                    cert,
                )
            )
        usage = extensions.get(cert, x509.KeyUsage)
        if usage is not None and not usage.key_cert_sign:
            problems.append(
                _problem(
                    ProblemCode.MISSING_KEY_CERT_SIGN,
                    f"{what} issued a certificate but its key usage does not allow signing certificates (keyCertSign)",
                    _HINT_CA,
                    cert,
                )
            )
        if "name constraint" in reason and extensions.get(cert, x509.NameConstraints) is not None:
            how = "are excluded by" if "excluded" in reason else "are not among those permitted by"
            problems.append(
                _problem(
                    ProblemCode.NAME_CONSTRAINTS_VIOLATED,
                    f"the certificate's names {how} the name constraints of {what}",
                    "have the certificate issued by a CA allowed to issue for these names",
                    cert,
                )
            )
    return problems


def _critical(cert: x509.Certificate, what: str) -> list[Problem]:
    problems: list[Problem] = []
    for ext in extensions.decoded(cert).extensions:
        if not ext.critical:
            continue
        if ext.oid == ExtensionOID.PRECERT_POISON:
            poisoned = precertificate_problem(cert, what=what)
            if poisoned is not None:
                problems.append(poisoned)
        elif isinstance(ext.value, x509.UnrecognizedExtension):
            problems.append(
                _problem(
                    ProblemCode.UNKNOWN_CRITICAL_EXTENSION,
                    f"{what} has a critical extension clients do not know ({ext.oid.dotted_string}): "
                    "they must refuse it",
                    "have it reissued without that extension, or with it not critical",
                    cert,
                )
            )
    return problems


def _unplaced(code: ProblemCode, reason: str, leaf: x509.Certificate) -> Problem:
    # cryptography named a fault on a path other than the one certfleet found (or none it names)
    text = reason.removeprefix("validation failed: ").removeprefix("candidates exhausted: ")
    return _problem(
        code, f"a strict client refuses the path: {text[:200]}", "check the chain with `certfleet chain`", leaf
    )


def _problem(code: ProblemCode, message: str, hint: str, cert: x509.Certificate) -> Problem:
    return Problem(code, Severity.ERROR, message, hint, fingerprint(cert))


# --- the path certfleet found, and where it ends ------------------------------------------------


def path_problems(
    path: CertPath, trust: TrustStore, untrusted: Sequence[x509.Certificate], at: dt.datetime, max_depth: int | None
) -> list[Problem]:
    """Why ``path`` (certfleet's best, by signatures) does not reach an anchor, and what is wrong on it."""
    # only here: certfleet.aia brings http.client and urllib, which a valid leaf never needs
    from certfleet.aia import ca_issuers_urls

    problems: list[Problem] = []
    last = path.certs[-1]
    # an issuer named but not proven, because nobody can check the algorithm: said with the signature below
    unchecked = False
    if path.end is PathEnd.MISSING_ISSUER:
        named = [*trust.named(last.issuer), *(c for c in untrusted if c.subject == last.issuer)]
        unchecked = any(check_signature(last, c) is Signature.UNCHECKED for c in named)
        if named:
            if not unchecked:
                problems.append(
                    Problem(
                        ProblemCode.INVALID,
                        Severity.ERROR,
                        f"{label(last.subject)} names {label(last.issuer)} as its issuer, "
                        "but no certificate of that name here signed it",
                        "get the intermediate that matches this certificate from the CA",
                        fingerprint(last),
                    )
                )
        elif last is path.certs[0] or ca_issuers_urls(last):
            # a leaf's issuer, or one the CA publishes: an intermediate left out of the bundle
            what = "intermediate" if last is path.certs[0] else "certificate"
            problems.append(
                Problem(
                    ProblemCode.INCOMPLETE_CHAIN,
                    Severity.ERROR,
                    f"the {what} {label(last.issuer)} that issued {label(last.subject)} is missing; "
                    "a phone will refuse this chain",
                    "add the CA's intermediate bundle, or let `certfleet chain` fetch it",
                    fingerprint(last),
                )
            )
        else:
            problems.append(
                Problem(
                    ProblemCode.UNTRUSTED,
                    Severity.ERROR,
                    f"the chain ends at {label(last.subject)}, issued by {label(last.issuer)}, "
                    f"which is not among the trusted roots ({trust.source})",
                    "if this is your own CA, give its root with --trust; else add the CA's intermediate bundle",
                    fingerprint(last),
                )
            )
    elif path.end is PathEnd.UNTRUSTED_ROOT:
        problems.append(
            Problem(
                ProblemCode.UNTRUSTED,
                Severity.ERROR,
                f"the chain ends at the root {label(last.subject)}, which is not among the trusted roots "
                f"({trust.source})",
                "if this is your own CA, give its root with --trust (and install it on the clients)",
                fingerprint(last),
            )
        )
    elif path.end is PathEnd.TOO_LONG:
        problems.append(
            Problem(
                ProblemCode.INVALID,
                Severity.ERROR,
                f"no path to a trusted root with at most {max_depth} intermediates"
                if max_depth is not None and len(path.certs) >= max_depth + 2
                else f"no path to a trusted root within {len(path.certs)} certificates",
                "check the chain with `certfleet chain`",
                fingerprint(path.certs[0]),
            )
        )
    elif max_depth is not None and len(path.certs) - 2 > max_depth:
        problems.append(
            Problem(
                ProblemCode.INVALID,
                Severity.ERROR,
                f"the chain has {len(path.certs) - 2} intermediates, more than the {max_depth} allowed",
                "use a shorter chain",
                fingerprint(path.certs[0]),
            )
        )
    for index, cert in enumerate(path.certs):
        anchor = path.trusted and index == len(path.certs) - 1
        found: list[Problem | None] = []
        # the leaf's own validity and usages are judged by the caller
        what = "the certificate" if index == 0 else f"the {'root' if anchor else 'intermediate'} {label(cert.subject)}"
        if index > 0:
            found.append(validity_problem(cert, at, prefix=f"{what} "))
            found.append(issuer_name_problem(path.certs[index - 1], cert))
        if index > 0 and not anchor:  # an anchor is trusted as a name and a key, whatever usages it lists
            found.append(eku_problem(cert, prefix=f"{what} "))
        if not anchor and not is_self_signed(cert):  # nor does any client check a root's own signature
            found.append(weak_signature_problem(cert, what=what, unchecked=unchecked and cert is last))
        problems.extend(p for p in found if p is not None)
    return problems
