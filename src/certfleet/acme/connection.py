"""One issuer's ACME server, reached through certbot's ``acme`` library.

:class:`Connection` holds a ``ClientV2`` on a ``ClientNetwork`` of our own that (1) retries
``badNonce`` answers a few times, not once, (2) keeps the CA's last error answer (its
``Retry-After``, its problem document's ``instance``), which the library's exceptions drop, and
(3) sends one signed request at a time, so that the library's nonce pool is safe when the issuing
flow calls it from worker threads. Every call goes through :meth:`Connection.call`, the one place
where the library's exceptions become certfleet errors (:func:`certfleet.acme.errors.mapped`).

The account key change of RFC 8555 §7.3.5, which ``ClientV2`` lacks, is :meth:`Connection.change_key`:
the inner JWS is made with the library's own ``acme.jws.JWS`` and sent through the same network.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    # pyOpenSSL, which the acme library imports, still names cryptography's deprecated DSA classes
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import requests
    from acme import client as acme_client
    from acme import jws as acme_jws
    from acme import messages
    from josepy.b64 import b64encode
    from josepy.errors import DeserializationError
    from josepy.json_util import JSONObjectWithFields, field
    from josepy.jwa import ES256, ES384, ES512, RS256, JWASignature
    from josepy.jwk import JWK, JWKEC, JWKRSA

from certfleet.acme.errors import CAUnreachable, mapped
from certfleet.errors import CertfleetError, InputError

__all__ = ["USER_AGENT", "Connection", "jwk_of", "thumbprint"]

T = TypeVar("T")
USER_AGENT = "certfleet (acme-python)"
BAD_NONCE_TRIES = 5  # each try is the library's post, which itself retries a badNonce once
TIMEOUT = 30
AccountKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def jwk_of(key: AccountKey) -> tuple[JWK, JWASignature]:
    """The JWK of an account key and the JWS algorithm it signs with."""
    if isinstance(key, rsa.RSAPrivateKey):
        return JWKRSA(key=key), RS256
    curve = key.curve.name
    alg = {"secp256r1": ES256, "secp384r1": ES384, "secp521r1": ES512}.get(curve)
    if alg is None:
        raise InputError(f"an account key on curve {curve} is not one ACME servers take")
    return JWKEC(key=key), alg


def thumbprint(key: AccountKey) -> str:
    """RFC 7638 thumbprint of the account key, base64url as ACME writes it."""
    return b64encode(jwk_of(key)[0].public_key().thumbprint()).decode("ascii")


class _Network(acme_client.ClientNetwork):
    def __init__(self, key: JWK | None, alg: JWASignature, *, verify: str | bool, timeout: int) -> None:
        super().__init__(key, alg=alg, user_agent=USER_AGENT, timeout=timeout)
        # requests takes a CA bundle's path where the library only ever passes a bool
        self.verify_ssl = verify  # type: ignore[assignment]
        self._lock = threading.Lock()
        self.bad_nonces = 0
        self.last_headers: dict[str, str] = {}
        self.last_body: dict[str, Any] = {}
        self.session.hooks["response"].append(self._remember)

    def _remember(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        if response.status_code < 400:
            return
        self.last_headers = {k: v for k, v in response.headers.items() if k in ("Retry-After", "Link")}
        try:
            body = response.json()
        except ValueError:
            body = None
        self.last_body = body if isinstance(body, dict) else {}

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        with self._lock:
            for attempt in range(BAD_NONCE_TRIES):
                try:
                    return super().post(*args, **kwargs)
                except messages.Error as exc:
                    if exc.code != "badNonce" or attempt == BAD_NONCE_TRIES - 1:
                        raise
                    self.bad_nonces += 1
            raise AssertionError("unreachable")


class _KeyChange(JSONObjectWithFields):
    """The inner payload of a key change (RFC 8555 §7.3.5)."""

    account: str = field("account")
    old_key: JWK = field("oldKey", decoder=JWK.from_json)


class Connection:
    """An issuer's ACME server: its directory, and its account when ``account_url`` is known.

    Use as a context manager (it removes the CA bundle file it wrote). Every method blocks on the
    network: the issuing flow runs them in a worker thread.
    """

    def __init__(
        self,
        issuer: str,
        directory_url: str,
        *,
        key: AccountKey | None = None,
        account_url: str | None = None,
        ca_bundle: str | None = None,
        timeout: int = TIMEOUT,
    ) -> None:
        self.issuer = issuer
        self.directory_url = directory_url
        self._bundle_dir: Path | None = None
        verify: str | bool = True
        if ca_bundle:
            # requests reads a CA bundle only from a file
            self._bundle_dir = Path(tempfile.mkdtemp(prefix="certfleet-ca-"))
            path = self._bundle_dir / "ca.pem"
            path.write_text(ca_bundle, encoding="ascii")
            verify = str(path)
        jwk, alg = jwk_of(key) if key is not None else (None, ES256)
        self.jwk = jwk
        self._verify, self._timeout = verify, timeout
        self.net = _Network(jwk, alg, verify=verify, timeout=timeout)
        if account_url is not None:
            self.net.account = messages.RegistrationResource(body=messages.Registration(), uri=account_url)
        self._client: acme_client.ClientV2 | None = None
        self._siblings: list[Connection] = []

    def sibling(self) -> Connection:
        """Another connection to the same CA, account and key, with its own HTTP session and
        nonces: requests sent side by side (one signed request at a time on each)."""
        other = Connection(self.issuer, self.directory_url, timeout=self._timeout)
        other.jwk = self.jwk
        other.net = _Network(self.net.key, self.net.alg, verify=self._verify, timeout=self._timeout)
        other.net.account = self.net.account
        other._client = acme_client.ClientV2(self.client.directory, other.net)
        self._siblings.append(other)
        return other

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        for other in self._siblings:
            other.close()
        with contextlib.suppress(Exception):
            self.net.session.close()
        if self._bundle_dir is not None:
            shutil.rmtree(self._bundle_dir, ignore_errors=True)
            self._bundle_dir = None

    # -- the one boundary ------------------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, with the library's and requests' exceptions mapped."""
        try:
            return fn(*args, **kwargs)
        except CertfleetError:
            raise
        except Exception as exc:
            error = mapped(exc, issuer=self.issuer, headers=self.net.last_headers, body=self.net.last_body)
            raise error from exc

    @property
    def client(self) -> acme_client.ClientV2:
        """The library's client, on the CA's directory (fetched on first use)."""
        if self._client is None:
            directory = self.call(acme_client.ClientV2.get_directory, self.directory_url, self.net)
            for field in ("newNonce", "newAccount", "newOrder"):
                try:
                    directory[field]
                except KeyError:
                    raise CAUnreachable(
                        f"{self.directory_url} is not an ACME directory (it lacks {field})",
                        source=self.issuer,
                        hint="give the URL of the CA's ACME directory, e.g. https://acme-v02.api.letsencrypt.org/directory",
                    ) from None
            self._client = acme_client.ClientV2(directory, self.net)
        return self._client

    @property
    def directory(self) -> messages.Directory:
        return self.client.directory

    @property
    def meta(self) -> messages.Directory.Meta:
        meta: messages.Directory.Meta = self.directory.meta
        return meta

    def caa_identities(self) -> tuple[str, ...]:
        return tuple(self.meta.caa_identities or ())

    def profiles(self) -> Mapping[str, str]:
        return dict(self.meta.profiles or {})

    def post_as_get(self, url: str) -> requests.Response:
        """An authenticated read of ``url`` (RFC 8555 §6.3)."""
        client = self.client
        return self.call(self.net.post, url, None, new_nonce_url=client.directory["newNonce"])

    # -- the account ---------------------------------------------------------------------------------

    def register(
        self, *, contact: tuple[str, ...], agree_tos: bool, eab: tuple[str, str] | None
    ) -> messages.RegistrationResource:
        """A new account for this key; EAB ``(kid, hmac_key)`` binds it to the account at the CA."""
        from certfleet.acme.errors import ExternalAccountRequired

        client = self.client
        if self.jwk is None:
            raise ValueError("registering needs the account key")
        if self.meta.external_account_required and eab is None:
            raise ExternalAccountRequired(
                "the CA requires External Account Binding and none was given",
                source=self.issuer,
                problem="externalAccountRequired",
                hint="give --eab-kid and --eab-hmac-file with the key id and HMAC key from your account at the CA",
            )
        binding = None
        if eab is not None:
            kid, hmac_key = eab
            try:
                binding = messages.ExternalAccountBinding.from_data(
                    self.jwk.public_key(), kid, hmac_key, client.directory
                )
            except (DeserializationError, ValueError) as exc:
                raise InputError(
                    "the EAB HMAC key is not base64url", hint="give the HMAC key exactly as the CA shows it"
                ) from exc
        registration = messages.NewRegistration.from_data(
            contact=contact, terms_of_service_agreed=agree_tos or None, external_account_binding=binding
        )
        return self.call(client.new_account, registration)

    def deactivate(self) -> None:
        regr = self._account()
        self.call(self.client.deactivate_registration, regr)

    def _account(self) -> messages.RegistrationResource:
        account = self.net.account
        if account is None:
            raise ValueError("this connection has no account")
        return account

    def change_key(self, new_key: AccountKey) -> None:
        """Replace the account key at the CA with ``new_key`` (RFC 8555 §7.3.5); from now on this
        connection signs with the new key."""
        client = self.client
        account = self._account()
        try:
            url = client.directory["keyChange"]
        except KeyError:
            raise InputError(f"the CA {self.issuer} does not offer account key changes") from None
        if self.jwk is None:
            raise ValueError("a key change needs the current key")
        new_jwk, new_alg = jwk_of(new_key)
        payload = _KeyChange(account=account.uri, old_key=self.jwk.public_key())
        inner = acme_jws.JWS.sign(payload.json_dumps().encode(), key=new_jwk, alg=new_alg, nonce=None, url=url)
        self.call(self.net.post, url, inner, new_nonce_url=client.directory["newNonce"])
        self.net.key, self.net.alg, self.jwk = new_jwk, new_alg, new_jwk

    def account_exists(self) -> str | None:
        """The account URL the CA knows for this connection's key, or None (``onlyReturnExisting``)."""
        client = self.client
        saved, self.net.account = self.net.account, None
        try:
            response = self.call(
                self.net.post,
                client.directory["newAccount"],
                messages.NewRegistration(only_return_existing=True),
                new_nonce_url=client.directory["newNonce"],
            )
        except CertfleetError as exc:
            if getattr(exc, "problem", None) == "accountDoesNotExist":
                return None
            raise
        finally:
            self.net.account = saved
        location = response.headers.get("Location")
        return str(location) if location else None

    # -- certificates ------------------------------------------------------------------------------

    def revoke(self, cert_der: bytes, reason: int) -> None:
        from cryptography import x509

        self.call(self.client.revoke, x509.load_der_x509_certificate(cert_der), reason)
