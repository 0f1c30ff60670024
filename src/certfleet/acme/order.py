"""One ACME order, step by step, on a :class:`~certfleet.acme.connection.Connection`: place it,
turn its pending authorizations into :class:`~certfleet.acme.challenges.Task`, answer the
challenges once the solvers have put the proofs in place, wait until the CA has checked them all,
finalize, download the certificate and its alternate chains.

Each method blocks on the network; the issuing flow runs them in a worker thread and solves the
challenges in between, all at once. The order's state is polled rather than each authorization in
turn: one request per round tells when every name is valid, or that one failed.
"""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from acme import challenges as acme_challenges
from acme import messages
from cryptography import x509
from josepy.json_util import field
from requests.utils import parse_header_links

from certfleet.acme.challenges import Task
from certfleet.acme.connection import Connection
from certfleet.acme.errors import AcmeProblem, CAUnreachable, problem_code, problem_error
from certfleet.acme.model import ChallengeType
from certfleet.names import is_ip

__all__ = ["Downloaded", "Order", "choose_chain"]

ORDER_TIMEOUT = 300.0
WORKERS = 8  # connections that fetch authorizations and answer challenges side by side
T = TypeVar("T")
R = TypeVar("R")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,256}")


class _NewOrder(messages.NewOrder):
    """A new order that names the certificate it replaces (RFC 9773 §5), which the library's lacks."""

    replaces: str | None = field("replaces", omitempty=True)


@dataclass(frozen=True, slots=True)
class Downloaded:
    order_url: str
    fullchain_pem: str
    alternates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Pending:
    task: Task
    challb: messages.ChallengeBody
    authz_url: str


class Order:
    """An order for the names of ``csr_pem``; each name proven with the challenge ``kinds`` gives it."""

    def __init__(
        self,
        conn: Connection,
        csr_pem: bytes,
        kinds: Mapping[str, ChallengeType],
        *,
        profile: str | None = None,
        replaces: str | None = None,
        timeout: float = ORDER_TIMEOUT,
    ) -> None:
        self.conn = conn
        self.csr_pem = csr_pem
        self.kinds = kinds
        self.profile = profile
        self.replaces = replaces  # the ARI CertID of the certificate this order renews
        self.deadline = time.monotonic() + timeout
        self._orderr: messages.OrderResource | None = None
        self._pending: list[_Pending] = []
        self._pool: list[Connection] = [conn]
        self.reused: list[str] = []  # names whose authorization was valid already

    @property
    def url(self) -> str | None:
        return self._orderr.uri if self._orderr is not None else None

    def _resource(self) -> messages.OrderResource:
        if self._orderr is None:
            raise ValueError("the order is not placed")
        return self._orderr

    def _each(self, fn: Callable[[Connection, T], R], items: Sequence[T]) -> list[R]:
        """``fn(connection, item)`` for every item, side by side on up to WORKERS connections."""
        if len(items) <= 1:
            return [fn(self.conn, item) for item in items]
        while len(self._pool) < min(WORKERS, len(items)):
            self._pool.append(self.conn.sibling())
        free: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        for conn in self._pool:
            free.put(conn)

        def one(item: T) -> R:
            conn = free.get()
            try:
                return fn(conn, item)
            finally:
                free.put(conn)

        with ThreadPoolExecutor(len(self._pool), thread_name_prefix="certfleet-acme") as pool:
            return list(pool.map(one, items))

    def place(self) -> list[Task]:
        """Create the order; the names the CA wants proven, as tasks for the solvers.

        As ``ClientV2.new_order``, but the authorizations are fetched side by side."""
        conn = self.conn
        client = conn.client
        identifiers = [
            messages.Identifier(typ=messages.IDENTIFIER_IP if is_ip(n) else messages.IDENTIFIER_FQDN, value=n)
            for n in self.kinds
        ]
        fields: dict[str, Any] = {"identifiers": tuple(identifiers)}
        if self.profile:
            fields["profile"] = self.profile
        if self.replaces:
            fields["replaces"] = self.replaces

        def send() -> Any:
            order = _NewOrder(**fields)
            return conn.call(
                conn.net.post, client.directory["newOrder"], order, new_nonce_url=client.directory["newNonce"]
            )

        try:
            response = send()
        except AcmeProblem as exc:
            # the certificate was renewed already (another client of the account did it): order afresh
            if exc.problem != "alreadyReplaced" or "replaces" not in fields:
                raise
            self.replaces = None
            del fields["replaces"]
            response = send()
        body = messages.Order.from_json(response.json())

        def fetch(c: Connection, url: str) -> messages.AuthorizationResource:
            found = messages.Authorization.from_json(c.post_as_get(url).json())
            return messages.AuthorizationResource(body=found, uri=url)

        orderr = messages.OrderResource(
            body=body,
            uri=response.headers.get("Location"),
            authorizations=self._each(fetch, list(body.authorizations)),
            csr_pem=self.csr_pem,
        )
        self._orderr = orderr
        jwk = conn.jwk
        if jwk is None:
            raise ValueError("an order needs the account key")
        tasks = []
        for authzr in orderr.authorizations:
            body = authzr.body
            name = ("*." if body.wildcard else "") + body.identifier.value
            if body.status == messages.STATUS_VALID:
                self.reused.append(name)
                continue
            kind = self.kinds.get(name) or self.kinds.get(body.identifier.value)
            if kind is None:
                raise AcmeProblem(f"the CA asks to prove {name}, which certfleet did not ask for", source=conn.issuer)
            wanted = acme_challenges.HTTP01 if kind is ChallengeType.HTTP01 else acme_challenges.DNS01
            challb = next((c for c in body.challenges if isinstance(c.chall, wanted)), None)
            if challb is None:
                offered = ", ".join(c.chall.typ for c in body.challenges)
                raise AcmeProblem(
                    f"the CA offers no {kind.value} challenge for {name} (it offers {offered})",
                    source=conn.issuer,
                    hint="choose another solver for the name (--solver)",
                )
            chall = challb.chall
            if kind is ChallengeType.HTTP01:
                token = chall.encode("token")
                if not _TOKEN.fullmatch(token):
                    raise AcmeProblem(f"the CA sent a token that is no base64url text for {name}", source=conn.issuer)
                task = Task(name, kind, token=token, value=chall.validation(jwk))
            else:
                task = Task(name, kind, value=chall.validation(jwk))
            self._pending.append(_Pending(task, challb, authzr.uri))
            tasks.append(task)
        return tasks

    def answer(self) -> None:
        """Tell the CA that every proof is in place."""
        jwk = self.conn.jwk

        def one(c: Connection, pending: _Pending) -> None:
            c.call(c.client.answer_challenge, pending.challb, pending.challb.chall.response(jwk))

        self._each(one, self._pending)

    def _poll(self) -> tuple[messages.Order, float]:
        response = self.conn.post_as_get(self._resource().uri)
        body = messages.Order.from_json(response.json())
        retry = response.headers.get("Retry-After", "")
        return body, float(retry) if retry.strip().isdigit() else 0.0

    def _wait(self, done: Sequence[messages.Status]) -> messages.Order:
        pause = 0.05
        while True:
            body, retry = self._poll()
            if body.status in done or body.status == messages.STATUS_INVALID:
                return body
            if time.monotonic() > self.deadline:
                raise CAUnreachable(
                    f"the CA left the order {body.status.name} past the time allowed", source=self.conn.issuer
                )
            time.sleep(min(max(pause, retry), 5.0))
            pause = min(pause * 1.5, 1.0)

    def wait_valid_names(self) -> None:
        """Return once the CA has validated every name; the failing challenge's error otherwise."""
        body = self._wait((messages.STATUS_READY, messages.STATUS_VALID))
        if body.status == messages.STATUS_INVALID:
            raise self._failure(body)

    def _failure(self, body: messages.Order) -> AcmeProblem:
        conn = self.conn
        for pending in self._pending:
            authz = messages.Authorization.from_json(conn.post_as_get(pending.authz_url).json())
            for challb in authz.challenges:
                if challb.error is not None:
                    return problem_error(
                        problem_code(challb.error),
                        challb.error.detail,
                        issuer=conn.issuer,
                        identifier=pending.task.name,
                        challenge=challb.chall.typ,
                    )
        if body.error is not None:
            return problem_error(problem_code(body.error), body.error.detail, issuer=conn.issuer)
        return AcmeProblem("the CA marked the order invalid without saying why", source=conn.issuer)

    def finalize(self) -> Downloaded:
        """Send the CSR, wait for the certificate, download it and its alternate chains."""
        conn = self.conn
        orderr = self._resource()
        try:
            orderr = conn.call(conn.client.begin_finalization, orderr)
        except AcmeProblem as exc:
            if exc.problem != "orderNotReady":
                raise
        body = orderr.body
        if body.status != messages.STATUS_VALID or body.certificate is None:
            body = self._wait((messages.STATUS_VALID,))
        if body.status == messages.STATUS_INVALID or body.certificate is None:
            raise self._failure(body)
        response = conn.post_as_get(body.certificate)
        links = parse_header_links(response.headers.get("Link", "")) if "Link" in response.headers else []
        alternates = tuple(
            conn.post_as_get(link["url"]).text for link in links if link.get("rel") == "alternate" and link.get("url")
        )
        return Downloaded(orderr.uri, response.text, alternates)


def _cn(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else None
    return value if isinstance(value, str) else None


def choose_chain(default: str, alternates: Sequence[str], preferred: str | None) -> tuple[str, str | None, bool]:
    """The chain to keep: the first whose top certificate is issued by (or is) ``preferred``, by
    common name, as certbot's and lego's ``--preferred-chain``; else the CA's default. Returns the
    chain, the common name of its top certificate's issuer, and whether ``preferred`` matched."""
    chains = [default, *alternates]
    tops: list[x509.Certificate | None] = []
    for pem in chains:
        try:
            certs = x509.load_pem_x509_certificates(pem.encode("ascii"))
        except ValueError:
            certs = []
        tops.append(certs[-1] if certs else None)
    if preferred:
        for pem, top in zip(chains, tops, strict=True):
            if top is not None and preferred in (_cn(top.issuer), _cn(top.subject)):
                return pem, _cn(top.issuer), True
    first = tops[0]
    return default, _cn(first.issuer) if first is not None else None, False
