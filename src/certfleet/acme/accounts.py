"""Issuers: register an ACME account (its key made here and sealed in the store), change its key,
deactivate it, forget it; and the manual issuer (CSR out, package in).

Each function takes an open :class:`~certfleet.store.Store` and returns the stored
:class:`~certfleet.acme.model.IssuerRecord`. The CA is asked before the store changes, so that a
refusal leaves nothing behind; a key change keeps the new key in the store before the CA is asked
(see :func:`rollover`), so that no answer, or lack of one, can lose the account.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from certfleet.acme.connection import AccountKey, Connection, thumbprint
from certfleet.acme.errors import AcmeProblem, CAUnreachable
from certfleet.acme.model import AccountStatus, IssuerKind, IssuerRecord
from certfleet.errors import InputError
from certfleet.keys import KeySpec, generate_key
from certfleet.store import Store, check_name

__all__ = [
    "ACCOUNT_KEY",
    "DirectoryInfo",
    "add_acme_issuer",
    "add_manual_issuer",
    "ca_bundle_pem",
    "connect",
    "deactivate",
    "directory_info",
    "parse_contact",
    "remove",
    "rollover",
]

# ES256: what every ACME CA takes, and a small JWS on every request
ACCOUNT_KEY = KeySpec.EC_P256
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def parse_contact(values: Sequence[str]) -> tuple[str, ...]:
    """``mailto:`` URLs (a bare address gets the prefix)."""
    out = []
    for value in values:
        text = value.strip()
        address = text.removeprefix("mailto:")
        if not _EMAIL.fullmatch(address) or len(text) > 254:
            raise InputError(f"contact {value[:80]!r} is not an e-mail address", hint="e.g. mailto:pki@example.com")
        out.append(f"mailto:{address}")
    return tuple(out)


def _check_directory(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InputError(
            f"{url[:80]!r} is not the URL of an ACME directory",
            hint="e.g. https://acme-v02.api.letsencrypt.org/directory",
        )
    return url.strip()


def ca_bundle_pem(inputs: Iterable[tuple[str, bytes]]) -> str:
    """The PEM roots of a private ACME server's own HTTPS certificate, from files in any format
    certfleet reads (``(name, bytes)``); refused when they hold no certificate."""
    from certfleet.export import pem
    from certfleet.trust import read_certificates

    files = list(inputs)
    certs = read_certificates(files)
    if not certs:
        names = ", ".join(name for name, _ in files) or "the CA bundle"
        raise InputError(f"{names} holds no certificate", hint="give the PEM root of the ACME server's HTTPS")
    return pem(*certs).decode("ascii")


@dataclass(frozen=True, slots=True)
class DirectoryInfo:
    """What a CA's ACME directory says before an account is opened: its terms, whether it wants
    External Account Binding, the profiles it offers, its CAA names."""

    url: str
    terms_of_service: str | None
    eab_required: bool
    profiles: dict[str, str]
    caa_identities: tuple[str, ...]
    website: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": self.url,
            "terms_of_service": self.terms_of_service,
            "external_account_required": self.eab_required,
            "profiles": dict(self.profiles),
            "caa_identities": list(self.caa_identities),
            "website": self.website,
        }


def directory_info(directory_url: str, *, ca_bundle: str | None = None) -> DirectoryInfo:
    """Read the CA's directory (no account, nothing stored): what to show before agreeing."""
    url = _check_directory(directory_url)
    with Connection("directory", url, ca_bundle=ca_bundle) as conn:
        meta = conn.meta
        return DirectoryInfo(
            url=url,
            terms_of_service=meta.terms_of_service,
            eab_required=bool(meta.external_account_required),
            profiles=dict(conn.profiles()),
            caa_identities=conn.caa_identities(),
            website=meta.website,
        )


def connect(store: Store, issuer: IssuerRecord, *, key: AccountKey | None = None) -> Connection:
    """A connection to the issuer's CA, signing with its account key (or ``key``)."""
    if not issuer.is_acme or issuer.directory_url is None:
        raise InputError(f"issuer {issuer.name} is {issuer.kind.value}: it has no ACME account")
    if key is None:
        key, _ = store.account_key(issuer.name)
    return Connection(
        issuer.name, issuer.directory_url, key=key, account_url=issuer.account_url, ca_bundle=issuer.ca_bundle
    )


def add_acme_issuer(
    store: Store,
    name: str,
    directory_url: str,
    *,
    contact: Sequence[str] = (),
    agree_tos: bool = False,
    eab: tuple[str, str] | None = None,
    profile: str | None = None,
    ca_bundle: str | None = None,
    caa_identities: Sequence[str] = (),
) -> IssuerRecord:
    """Register a new account at the CA of ``directory_url`` and keep it as issuer ``name``.

    ``eab`` is ``(kid, hmac_key)`` from the CA's account page (commercial CAs require it);
    ``ca_bundle`` the PEM roots of the ACME server's own HTTPS certificate (a private CA);
    ``caa_identities`` the CA's CAA domain names when its directory does not publish them.
    """
    check_name("issuer", name)
    url = _check_directory(directory_url)
    emails = parse_contact(contact)
    identities = tuple(i.strip().lower().rstrip(".") for i in caa_identities if i.strip())
    if any(i.name == name for i in store.issuers()):
        raise InputError(f"an issuer named {name} exists", hint="`certfleet issuer list` shows the issuers")
    key = generate_key(ACCOUNT_KEY)
    with Connection(name, url, key=key, ca_bundle=ca_bundle) as conn:
        offered = conn.profiles()
        if profile and offered and profile not in offered:
            raise InputError(f"the CA offers no profile {profile!r}", hint=f"it offers: {', '.join(sorted(offered))}")
        terms = conn.meta.terms_of_service
        if terms and not agree_tos:
            raise InputError(
                "the CA asks you to agree to its terms of service before it opens an account",
                hint=f"read {terms}, then add --agree-tos",
            )
        try:
            regr = conn.register(contact=emails, agree_tos=agree_tos, eab=eab)
        except AcmeProblem as exc:
            if eab is not None and exc.problem in ("unauthorized", "malformed", "accountDoesNotExist"):
                # the binding is what the CA checks first: its answer names neither the key id nor the key
                exc.hint = "check the EAB key id and HMAC key: copy both again from your account at the CA"
            raise
        identities = identities or conn.caa_identities()
    return store.add_issuer(
        name,
        IssuerKind.ACME,
        directory_url=url,
        account_url=regr.uri,
        key=key,
        key_thumbprint=thumbprint(key),
        contact=emails,
        eab_kid=eab[0] if eab else None,
        profile=profile or None,
        ca_bundle=ca_bundle,
        caa_identities=identities,
        terms_of_service=terms if agree_tos else None,
    )


def add_manual_issuer(store: Store, name: str) -> IssuerRecord:
    """An issuer for CAs certfleet cannot talk to: `issue` makes the CSR, `import` takes the package."""
    return store.add_issuer(name, IssuerKind.MANUAL)


def _require_account(issuer: IssuerRecord) -> None:
    if not issuer.is_acme:
        raise InputError(f"issuer {issuer.name} is {issuer.kind.value}: it has no ACME account")
    if issuer.status is AccountStatus.DEACTIVATED:
        raise InputError(
            f"the account of issuer {issuer.name} is deactivated",
            hint=f"`certfleet issuer remove {issuer.name}`, then add a new one",
        )


def rollover(store: Store, name: str) -> IssuerRecord:
    """Change the account key (RFC 8555 §7.3.5): a new key made here, sealed in the store beside
    the current one, then the CA told; the new key replaces the old one once the CA says yes.

    When the CA's answer never came (the previous rollover was interrupted), the next rollover
    first asks the CA which of the two keys it holds, and keeps that one.
    """
    issuer = store.issuer(name)
    _require_account(issuer)
    current, staged = store.account_key(name)
    if staged is not None:
        with connect(store, issuer, key=staged) as conn:
            held = conn.account_exists() == issuer.account_url
        issuer = store.settle_account_key(name, changed=held, thumbprint=thumbprint(staged) if held else None)
        current = staged if held else current
    new = generate_key(issuer.key_spec or ACCOUNT_KEY)
    store.stage_account_key(name, new)
    with connect(store, issuer, key=current) as conn:
        try:
            conn.change_key(new)
        except AcmeProblem:
            store.settle_account_key(name, changed=False)
            raise
        except CAUnreachable as exc:
            exc.hint = (
                "the CA may or may not have changed the key: both keys are kept; "
                f"`certfleet issuer rollover {name}` again asks it which one it holds"
            )
            raise
    return store.settle_account_key(name, changed=True, thumbprint=thumbprint(new))


def deactivate(store: Store, name: str) -> IssuerRecord:
    """Deactivate the account at the CA (for good: RFC 8555 §7.3.6); the issuer stays, marked."""
    issuer = store.issuer(name)
    _require_account(issuer)
    with connect(store, issuer) as conn:
        conn.deactivate()
    return store.update_issuer(name, status=AccountStatus.DEACTIVATED)


def remove(store: Store, name: str) -> IssuerRecord:
    """Forget the issuer and its account key (the account stays at the CA: deactivate it first)."""
    return store.remove_issuer(name)
