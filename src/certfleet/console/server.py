"""``certfleet serve``: the console over HTTPS, with the store's certificates or a bootstrap one."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certfleet.certinfo import UNPARSABLE
from certfleet.clock import Clock, utc_now
from certfleet.console.app import create_app
from certfleet.console.connections import Connections, connection_limit, console_loop_factory, protocol_class
from certfleet.console.settings import ConsoleSettings
from certfleet.console.tls import BOOTSTRAP_LABEL, ServedCertificate, TLSContexts, bootstrap_certificate
from certfleet.errors import EnvError, InputError, StoreError
from certfleet.store import Store

__all__ = ["BootstrapStore", "ServeOptions", "StoreCertificates", "colon_hex", "run", "setup_url"]

CONSOLE_FOLDER = "console"
_BOOTSTRAP_AAD = b"certfleet/console-bootstrap/v1"
# renew the bootstrap certificate this long before it runs out
_BOOTSTRAP_MARGIN = dt.timedelta(days=14)


def colon_hex(fp: str) -> str:
    """``AB:CD:...``: how browsers show a SHA-256 fingerprint, for comparing by eye."""
    return ":".join(fp[i : i + 2] for i in range(0, len(fp), 2)).upper()


class BootstrapStore:
    """The self-signed certificate served while no lineage has one. Its key is sealed with the
    store's vault and kept 0600 in ``<home>/console/``."""

    def __init__(self, store: Store, *, clock: Clock = utc_now) -> None:
        self.store = store
        self.clock = clock
        self.folder = store.home / CONSOLE_FOLDER
        self.created = False
        self._loaded: ServedCertificate | None = None

    def _paths(self) -> tuple[Path, Path]:
        return self.folder / "bootstrap.crt", self.folder / "bootstrap.key.sealed"

    def due(self) -> bool:
        """Whether the certificate must be read, or made again because it runs out soon."""
        loaded = self._loaded
        return loaded is None or loaded.leaf.not_valid_after_utc - _BOOTSTRAP_MARGIN <= self.clock()

    def load_or_create(self) -> ServedCertificate:
        if not self.due() and self._loaded is not None:
            return self._loaded
        self._loaded = self._load_or_create()
        return self._loaded

    def _load_or_create(self) -> ServedCertificate:
        cert_path, key_path = self._paths()
        now = self.clock()
        if cert_path.is_file() and key_path.is_file():
            try:
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
                der = self.store.vault().open(key_path.read_bytes(), _BOOTSTRAP_AAD)
                key = serialization.load_der_private_key(der, password=None)
            except (*UNPARSABLE, OSError) as exc:
                raise StoreError(
                    f"cannot read the console's bootstrap certificate in {self.folder}: {exc}",
                    hint="remove the bootstrap.* files there; a new one is made at the next start",
                ) from exc
            if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
                raise StoreError("the console's bootstrap key is of an unexpected kind")
            if cert.not_valid_after_utc - _BOOTSTRAP_MARGIN > now:
                return ServedCertificate(BOOTSTRAP_LABEL, key, cert, (), bootstrap=True)
        new_key, new_cert = bootstrap_certificate(now=now)
        der = new_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        from certfleet.fsutil import atomic_write

        self.folder.mkdir(mode=0o700, exist_ok=True)
        atomic_write(key_path, self.store.vault().seal(der, _BOOTSTRAP_AAD), mode=0o600)
        atomic_write(cert_path, new_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        self.created = True
        return ServedCertificate(BOOTSTRAP_LABEL, new_key, new_cert, (), bootstrap=True)


class StoreCertificates:
    """The certificates to serve: the active version of every lineage (``default`` first), and the
    bootstrap certificate for the names none of them covers and for clients that send no name."""

    def __init__(self, store: Store, *, default: str | None = None, bootstrap: BootstrapStore) -> None:
        self.store = store
        self.default = default
        self.bootstrap = bootstrap

    def _active(self) -> list[tuple[str, str]]:
        active = list(self.store.active_fingerprints().items())
        if self.default is not None:
            active.sort(key=lambda item: item[0] != self.default)
        return active

    def generation(self) -> str:
        active = ";".join(f"{name}={fp}" for name, fp in self._active())
        return f"{active}|{BOOTSTRAP_LABEL}:{'due' if self.bootstrap.due() else 'ok'}"

    def certificates(self) -> Sequence[ServedCertificate]:
        out = []
        for name, _ in self._active():
            material = self.store.material(name)
            out.append(ServedCertificate(name, material.key, material.leaf, material.chain))
        return [*out, self.bootstrap.load_or_create()]


@dataclass(frozen=True, slots=True)
class ServeOptions:
    bind: str = "127.0.0.1"
    port: int = 8443
    lineage: str | None = None
    home: Path | None = None
    autopilot: dt.timedelta | None = dt.timedelta(minutes=15)  # between renewal passes; None: no autopilot


def _url_host(bind: str) -> str:
    if bind in ("0.0.0.0", "::", ""):  # noqa: S104 (naming the wildcard address, not binding it)
        return socket.gethostname() or "localhost"
    return f"[{bind}]" if ":" in bind else bind


def setup_url(bind: str, port: int, token: str) -> str:
    return f"https://{_url_host(bind)}:{port}/setup/{token}"


def _logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("certfleet", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    # uvicorn's own access log would write request paths, and deployment links carry their token
    # in the path: the console logs requests itself, with those paths redacted
    logging.getLogger("uvicorn.access").disabled = True


def run(options: ServeOptions, *, out: TextIO = sys.stdout, settings: ConsoleSettings | None = None) -> None:
    """Open (or create) the store, prepare TLS and the first account's setup link, and serve."""
    import uvicorn

    if not (1 <= options.port <= 65535):
        raise InputError(f"port {options.port} is out of range")
    _logging()
    store = Store.init(options.home)
    if options.lineage is not None:
        store.lineage(options.lineage)  # refuses an unknown lineage with its hint
    bootstrap = BootstrapStore(store)
    source = StoreCertificates(store, default=options.lineage, bootstrap=bootstrap)
    tls = TLSContexts(source)
    app = create_app(store, settings=settings, tls=tls)
    console = app.state.console

    for served in tls.served:
        if not served.bootstrap:
            print(f"serving lineage {served.label}: {', '.join(served.names())} ({served.fingerprint[:16]}…)", file=out)
    own = tls.bootstrap
    if own is not None:
        said = "created" if bootstrap.created else "using"
        names = [name for name, cert in tls.by_name() if cert is own]
        print(f"{said} a self-signed bootstrap certificate for {', '.join(names)}", file=out)
        print(f"  SHA-256 fingerprint: {colon_hex(own.fingerprint)}", file=out)
        print("  (compare it with what the browser shows before you trust the page)", file=out)
    if not console.accounts.has_accounts():
        token = console.accounts.new_setup_token()
        hours = console.settings.setup_ttl.total_seconds() / 3600
        print("no account yet: create the administrator with this one-time link", file=out)
        print(f"  (valid for {hours:g} hour, works once): {setup_url(options.bind, options.port, token)}", file=out)
    print(f"certfleet console on https://{_url_host(options.bind)}:{options.port}/", file=out, flush=True)

    # a cap on connections and on the time a request's headers may take (see connections.py)
    connections = Connections(connection_limit())
    config = uvicorn.Config(
        app,
        host=options.bind,
        port=options.port,
        http=protocol_class(connections),
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=5,  # an idle connection is closed after this
        limit_concurrency=connections.limit + 1,  # requests past it are answered 503 at once
        h11_max_incomplete_event_size=16 * 1024,  # request line and headers
        backlog=256,
    )
    config.load()
    # uvicorn builds its context from files; the console's context switches certificates by SNI
    # and picks up a newly activated version without a restart
    config.ssl = tls.context
    server = uvicorn.Server(config)
    pilot = None
    if options.autopilot is not None:
        from certfleet.autopilot.background import Autopilot

        pilot = Autopilot(store.home, interval=options.autopilot).start()
        print(f"autopilot: a renewal pass now, then every {options.autopilot.total_seconds() / 60:g} min", file=out)
    try:
        with asyncio.Runner(loop_factory=console_loop_factory(connections)) as runner:
            runner.run(server.serve())
    except OSError as exc:
        raise EnvError(
            f"cannot listen on {options.bind}:{options.port}: {exc.strerror or exc}",
            hint="choose another --port, or stop what uses it",
        ) from exc
    finally:
        if pilot is not None:
            pilot.stop()
        store.close()
