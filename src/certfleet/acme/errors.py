"""What an ACME CA can answer, as certfleet errors: one line, a hint, an exit code.

    OperationFailed
    └── AcmeProblem              the CA refused (exit 1); ``problem`` is the ACME error code
        ├── RateLimited          rateLimited, with the CA's Retry-After when it gave one
        ├── BadNonce             badNonce, still after every retry
        ├── Unauthorized         unauthorized / incorrectResponse: a challenge failed (its detail)
        ├── CaaForbidden         caa: the name's CAA records do not allow this CA
        ├── DnsProblem           dns / unknownHost / dnssec: the CA could not resolve the name
        ├── ConnectionProblem    connection / tls: the CA could not reach the name's server
        ├── ExternalAccountRequired   the CA wants EAB (--eab-kid, --eab-hmac-file)
        ├── UserActionRequired   the CA's terms changed: agree to them on its site
        └── AccountProblem       accountDoesNotExist, a deactivated account
    NetworkError
    └── CAUnreachable            the CA did not answer (exit 3)

:func:`mapped` is the one place where the ``acme`` library's and ``requests``' exceptions become
these; the CA's own words (its ``detail``) are kept in the message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from certfleet.errors import CertfleetError, NetworkError, OperationFailed

__all__ = [
    "AccountProblem",
    "AcmeProblem",
    "BadNonce",
    "CAUnreachable",
    "CaaForbidden",
    "ConnectionProblem",
    "DnsProblem",
    "ExternalAccountRequired",
    "RateLimited",
    "Unauthorized",
    "UserActionRequired",
    "mapped",
    "problem_code",
    "problem_error",
]

_MAX_DETAIL = 400
_URN = "urn:ietf:params:acme:error:"


def _clip(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


class AcmeProblem(OperationFailed):
    """The CA answered with an ACME problem: it refused what certfleet asked."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        source: str | None = None,
        problem: str | None = None,
        identifier: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, source=source)
        self.problem = problem
        self.identifier = identifier


class RateLimited(AcmeProblem):
    def __init__(self, message: str, *, retry_after: dt.datetime | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class BadNonce(AcmeProblem):
    pass


class Unauthorized(AcmeProblem):
    pass


class CaaForbidden(AcmeProblem):
    pass


class DnsProblem(AcmeProblem):
    pass


class ConnectionProblem(AcmeProblem):
    pass


class ExternalAccountRequired(AcmeProblem):
    pass


class UserActionRequired(AcmeProblem):
    def __init__(self, message: str, *, terms_url: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.terms_url = terms_url


class AccountProblem(AcmeProblem):
    pass


class CAUnreachable(NetworkError):
    pass


_CHALLENGE_HINT = {
    "http-01": "the CA fetched http://NAME/.well-known/acme-challenge/TOKEN and did not get the token: check that "
    "the name points at the node and that its web server serves the node's webroot there "
    "(`certfleet issue LINEAGE --dry-run` probes it)",
    "dns-01": "the CA did not find the TXT record at _acme-challenge.NAME: check the zone's delegation and the "
    "solver's credentials (`certfleet issue LINEAGE --dry-run`)",
}


def problem_error(
    code: str | None,
    detail: str | None,
    *,
    issuer: str,
    identifier: str | None = None,
    challenge: str | None = None,
    retry_after: dt.datetime | None = None,
    instance: str | None = None,
) -> AcmeProblem:
    """The error for one ACME problem document (``code`` without its URN prefix)."""
    said = _clip(detail) or (code or "no detail")
    about = f" for {identifier}" if identifier else ""
    kw: dict[str, Any] = {"problem": code, "identifier": identifier, "source": issuer}
    if code == "rateLimited":
        when = f"; try again after {retry_after:%Y-%m-%d %H:%M} UTC" if retry_after else ""
        return RateLimited(
            f"the CA's rate limit was reached{about}: {said}{when}",
            retry_after=retry_after,
            hint="wait, or list a second issuer for the lineage (`certfleet lineage set LINEAGE --issuer A --issuer B`)"
            ": the next one is tried when a CA refuses",
            **kw,
        )
    if code == "badNonce":
        return BadNonce(
            f"the CA refused every fresh nonce it gave (badNonce): {said}",
            hint="try again; if it lasts, the CA (or a proxy before it) is failing",
            **kw,
        )
    if code in ("unauthorized", "incorrectResponse") and challenge is not None:
        return Unauthorized(
            f"the CA could not verify {identifier or 'a name'} by {challenge}: {said}",
            hint=_CHALLENGE_HINT.get(challenge),
            **kw,
        )
    if code == "caa":
        return CaaForbidden(
            f"CAA records forbid this CA to issue{about}: {said}",
            hint="add a CAA record naming the CA (an `issue` tag, `issuewild` for a wildcard), or use another issuer",
            **kw,
        )
    if code in ("dns", "unknownHost", "dnssec"):
        return DnsProblem(
            f"the CA could not resolve{about or ' a name'}: {said}",
            hint="check that the name exists in public DNS and that its zone answers",
            **kw,
        )
    if code in ("connection", "tls"):
        return ConnectionProblem(
            f"the CA could not connect{about}: {said}",
            hint=_CHALLENGE_HINT.get(challenge or "", "check that the name's server is reachable from the Internet"),
            **kw,
        )
    if code == "externalAccountRequired":
        return ExternalAccountRequired(
            f"the CA requires External Account Binding: {said}",
            hint="give --eab-kid and --eab-hmac-file with the key id and HMAC key from your account at the CA",
            **kw,
        )
    if code == "userActionRequired":
        where = instance or "the CA's website"
        return UserActionRequired(
            f"the CA wants you to act before it goes on: {said}",
            terms_url=instance,
            hint=f"read and agree at {where}, then try again",
            **kw,
        )
    if code in ("accountDoesNotExist", "unauthorized"):
        return AccountProblem(
            f"the CA refused the account: {said}",
            hint="`certfleet issuer show NAME`; a deactivated or unknown account needs a new `certfleet issuer add`",
            **kw,
        )
    return AcmeProblem(f"the CA refused{about}: {said}", hint=None, **kw)


def problem_code(error: Any) -> str | None:
    """The ACME error code of a problem document (``rateLimited``), also for the codes newer than
    the library's list (``userActionRequired`` is not in it)."""
    typ = str(getattr(error, "typ", "") or "")
    prefix = "urn:ietf:params:acme:error:"
    return typ[len(prefix) :] if typ.startswith(prefix) else None


def _retry_after(headers: Mapping[str, str]) -> dt.datetime | None:
    from email.utils import parsedate_to_datetime

    value = headers.get("Retry-After")
    if not value:
        return None
    now = dt.datetime.now(dt.UTC)
    if value.strip().isdigit():
        return now + dt.timedelta(seconds=int(value.strip()))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def mapped(
    exc: BaseException,
    *,
    issuer: str,
    headers: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
) -> CertfleetError:
    """The certfleet error for an exception the ``acme`` library or ``requests`` raised while
    talking to ``issuer``; ``headers`` and ``body`` are those of the CA's last error answer."""
    import requests
    from acme import errors as acme_errors
    from acme import messages

    if isinstance(exc, CertfleetError):
        return exc
    if isinstance(exc, messages.Error):
        ident = exc.identifier.value if exc.identifier is not None else None
        return problem_error(
            problem_code(exc),
            exc.detail or exc.title,
            issuer=issuer,
            identifier=ident,
            retry_after=_retry_after(headers or {}),
            instance=str((body or {}).get("instance") or "") or None,
        )
    if isinstance(exc, acme_errors.ValidationError):
        for authzr in exc.failed_authzrs:
            for challb in authzr.body.challenges:
                if challb.error is not None:
                    return problem_error(
                        problem_code(challb.error),
                        challb.error.detail,
                        issuer=issuer,
                        identifier=authzr.body.identifier.value,
                        challenge=challb.chall.typ,
                    )
        return AcmeProblem("the CA did not validate the names", source=issuer)
    if isinstance(exc, acme_errors.IssuanceError):
        return mapped(exc.error, issuer=issuer, headers=headers, body=body)
    problem = body or {}
    if isinstance(exc, acme_errors.ConflictError) and str(problem.get("type", "")).startswith(_URN):
        # the library turns every 409 into ConflictError and drops its problem (alreadyReplaced, RFC 9773)
        code = str(problem["type"])[len(_URN) :]
        return problem_error(code, str(problem.get("detail") or ""), issuer=issuer)
    if isinstance(exc, requests.exceptions.SSLError):
        return CAUnreachable(
            f"the CA's HTTPS certificate is not trusted: {_clip(str(exc))}",
            source=issuer,
            hint="for a private ACME server, give the root of its HTTPS certificate with --ca-bundle",
        )
    if isinstance(exc, requests.exceptions.RequestException):
        return CAUnreachable(
            f"the CA did not answer: {_clip(_reason(exc))}",
            source=issuer,
            hint="check the directory URL and the network; the next issuer of the lineage is tried when there is one",
        )
    if isinstance(exc, acme_errors.TimeoutError):
        return CAUnreachable(
            "the CA did not finish the order in time", source=issuer, hint="try again later, or use the next issuer"
        )
    if isinstance(exc, acme_errors.ClientError | acme_errors.Error):
        return CAUnreachable(
            f"the CA answered something that is not ACME: {_clip(str(exc) or type(exc).__name__)}",
            source=issuer,
            hint="check the directory URL: it is the URL of the CA's ACME directory, e.g. https://acme.example/directory",
        )
    raise exc


def _reason(exc: BaseException) -> str:
    # requests wraps urllib3's errors two levels deep; the innermost says what happened
    inner: BaseException = exc
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    reason = getattr(inner, "reason", None)
    return str(reason or inner)
