"""Fetching a missing issuer from a certificate's AIA caIssuers URL (what browsers do, phones do not)."""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import IO, Any, Protocol
from urllib.parse import urljoin, urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID

from certfleet import extensions
from certfleet.certinfo import UNPARSABLE, readable
from certfleet.errors import CertfleetError, FormatError, NetworkError

__all__ = ["Fetcher", "HttpFetcher", "ca_issuers_urls", "fetch_from_aia", "fetch_issuers", "parse_issuers"]

_SCHEMES = frozenset({"http", "https"})
_MAX_REDIRECTS = 3
# a certificate names one or two caIssuers URLs; more is noise or hostility
_MAX_URLS = 4
# a PKCS#7 bundle from a CA holds a handful of certificates
_MAX_CERTS_PER_URL = 16
_MAX_URL_LENGTH = 2048


class Fetcher(Protocol):
    """Returns the body at ``url`` or raises :class:`NetworkError`."""

    def __call__(self, url: str, /) -> bytes: ...


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = _MAX_REDIRECTS

    def http_error_302(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: http.client.HTTPMessage
    ) -> Any:
        # urllib itself would follow ftp: and report file: as a bare HTTP error; say what happened
        target = urljoin(req.full_url, headers.get("location") or headers.get("uri") or "")
        if urlsplit(target).scheme.lower() not in _SCHEMES:
            raise NetworkError(f"refused a redirect to {target[:200]}", source=req.full_url)
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(  # noqa: PLR0917 (urllib fixes this signature)
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        # a redirect to file: or ftp: would read local files or talk to other services on our behalf
        if urlsplit(newurl).scheme.lower() not in _SCHEMES:
            raise NetworkError(f"refused a redirect to {newurl[:200]}", source=req.full_url)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class HttpFetcher:
    """Fetch over http(s) with a timeout, a size cap and at most three same-scheme-family redirects."""

    def __init__(self, timeout: float = 10.0, max_bytes: int = 1024 * 1024) -> None:
        if timeout <= 0 or max_bytes <= 0:
            raise ValueError("timeout and max_bytes must be positive")
        self.timeout = timeout
        self.max_bytes = max_bytes
        # built by hand, not with build_opener(), so no file:, ftp: or data: handler exists at all
        self._opener = urllib.request.OpenerDirector()
        handlers: list[Any] = [
            urllib.request.ProxyHandler(),
            urllib.request.HTTPHandler(),
            urllib.request.HTTPSHandler(),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
            _Redirects(),
        ]
        for handler in handlers:
            self._opener.add_handler(handler)

    def __call__(self, url: str) -> bytes:
        if len(url) > _MAX_URL_LENGTH or urlsplit(url).scheme.lower() not in _SCHEMES:
            raise NetworkError("only http and https URLs are fetched", source=url[:200])
        deadline = time.monotonic() + self.timeout
        request = urllib.request.Request(url, headers={"User-Agent": "certfleet", "Accept": "*/*"})  # noqa: S310
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > self.max_bytes:
                    raise self._too_large(url)
                return self._read(response, url, deadline)
        except CertfleetError:
            raise
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:  # urllib gives up on a redirect chain with the last 3xx
                raise NetworkError(f"too many redirects (more than {_MAX_REDIRECTS})", source=url) from exc
            raise NetworkError(f"the server answered HTTP {exc.code}", source=url) from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise self._timed_out(url) from exc
            raise NetworkError(f"could not fetch: {reason}", source=url) from exc
        except TimeoutError as exc:
            raise self._timed_out(url) from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise NetworkError(f"could not fetch: {exc}", source=url) from exc

    def _read(self, response: Any, url: str, deadline: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        read1: Callable[[int], bytes] = response.read1
        while True:
            # the socket timeout bounds each read; the deadline bounds a server that trickles bytes
            if time.monotonic() > deadline:
                raise self._timed_out(url)
            chunk = read1(min(65536, self.max_bytes + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large(url)

    def _timed_out(self, url: str) -> NetworkError:
        return NetworkError(
            f"timed out after {self.timeout:g} s", hint="check the network, or use --no-fetch", source=url
        )

    def _too_large(self, url: str) -> NetworkError:
        return NetworkError(f"the answer is larger than {self.max_bytes} bytes: not a certificate", source=url)


def ca_issuers_urls(cert: x509.Certificate) -> list[str]:
    """The caIssuers URLs of ``cert``'s Authority Information Access extension, in order."""
    aia = extensions.get(cert, x509.AuthorityInformationAccess)
    if aia is None:
        return []  # absent, or too broken to follow
    urls = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]
    # a URL with spaces or control characters is no URL, and would break the messages that name it
    return [u for u in urls if u.isascii() and u.isprintable() and " " not in u][:_MAX_URLS]


def parse_issuers(data: bytes) -> list[x509.Certificate]:
    """Certificates from a caIssuers answer: DER or PEM certificate, or PKCS#7 (DER or PEM)."""
    loaders: tuple[Callable[[bytes], list[x509.Certificate]], ...] = (
        lambda d: [x509.load_der_x509_certificate(d)],
        pkcs7.load_der_pkcs7_certificates,
        x509.load_pem_x509_certificates,
        pkcs7.load_pem_pkcs7_certificates,
    )
    for loader in loaders:
        try:
            certs = loader(data)
        except (*UNPARSABLE, UnsupportedAlgorithm):
            continue
        usable = [c for c in certs[:_MAX_CERTS_PER_URL] if _readable(c)]
        if usable:
            return usable
    return []


def _readable(cert: x509.Certificate) -> bool:
    try:
        readable(cert)
    except FormatError:
        return False
    return True


def fetch_from_aia(
    cert: x509.Certificate, fetcher: Fetcher
) -> tuple[list[tuple[str, x509.Certificate]], list[NetworkError]]:
    """Every certificate fetched from ``cert``'s caIssuers URLs, with its URL, and the errors met.

    Each http(s) URL is tried (ldap: ones are common and skipped); a failure is collected, not raised.
    """
    found: list[tuple[str, x509.Certificate]] = []
    errors: list[NetworkError] = []
    for url in ca_issuers_urls(cert):
        if urlsplit(url).scheme.lower() not in _SCHEMES:
            continue
        try:
            certs = parse_issuers(fetcher(url))
        except NetworkError as exc:
            errors.append(exc)
            continue
        if not certs:
            errors.append(NetworkError("the answer is not a certificate or PKCS#7 bundle", source=url))
        found.extend((url, c) for c in certs)
    return found, errors


def fetch_issuers(cert: x509.Certificate, fetcher: Fetcher) -> list[x509.Certificate]:
    """Fetch the issuer candidates that ``cert`` points to; raises :class:`NetworkError` if none came."""
    found, errors = fetch_from_aia(cert, fetcher)
    if not found and errors:
        raise errors[0]
    return [c for _, c in found]
