"""The connections ``certfleet serve`` holds: few enough to leave file descriptors for its own work,
and none held open by a client that is slow to say what it wants.

* A connection must send its request's headers within :data:`HEADER_TIMEOUT` seconds of
  arriving or of its previous answer (slowloris), and one with nothing to do is closed after
  uvicorn's keep-alive timeout.
* At most :func:`connection_limit` connections are open (a share of ``RLIMIT_NOFILE``): past
  it, the oldest connection still waiting for its headers is closed to make room.
* Running out of file descriptors anyway (TLS handshakes in progress count too) closes such
  waiting connections as well, and is logged once a minute, never once per failed ``accept``.
* A TLS handshake has :data:`HANDSHAKE_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "HEADER_TIMEOUT",
    "Connections",
    "connection_limit",
    "console_loop_factory",
    "protocol_class",
]

log = logging.getLogger("certfleet.console")

HEADER_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
LOG_EVERY = 60.0  # seconds between two reports of the same trouble
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def connection_limit(soft_limit: int | None = None) -> int:
    """How many connections to hold: the descriptors the process may open, less a reserve for the
    store, logs, probes and deploys (a quarter, at least 96), between 16 and 1000."""
    if soft_limit is None:
        soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft_limit == resource.RLIM_INFINITY:
            soft_limit = 1 << 20
    return max(16, min(soft_limit - max(96, soft_limit // 4), 1000))


class Connections:
    """The open connections of one server, oldest first; which ones to let go when room is short."""

    def __init__(self, limit: int, *, header_timeout: float = HEADER_TIMEOUT) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self._open: dict[ConsoleProtocol, None] = {}
        self.shed_total = 0
        self._said: dict[str, float] = {}
        self._last_shed = 0.0

    def __len__(self) -> int:
        return len(self._open)

    def add(self, connection: ConsoleProtocol) -> None:
        self._open[connection] = None
        if len(self._open) > self.limit:
            self.shed(len(self._open) - self.limit, keep=connection)

    def discard(self, connection: ConsoleProtocol) -> None:
        self._open.pop(connection, None)

    def shed(self, count: int, *, keep: ConsoleProtocol | None = None) -> int:
        """Close up to ``count`` of the oldest connections that have not sent a request yet."""
        victims = [c for c in self._open if c is not keep and c.waiting][:count]
        for victim in victims:
            victim.abort()
        self.shed_total += len(victims)
        if victims:
            self.say(
                "shed",
                "closed %d connection(s) that sent no request while %d were open (limit %d); %d so far",
                len(victims),
                len(self._open),
                self.limit,
                self.shed_total,
            )
        return len(victims)

    def out_of_descriptors(self, exc: OSError) -> None:
        """``accept`` failed for want of descriptors: free some, and say so once in a while."""
        now = time.monotonic()
        freed = 0
        if now - self._last_shed > 0.2:  # the accept loop reports the same failure many times at once
            self._last_shed = now
            freed = self.shed(max(8, self.limit // 8))
        self.say(
            "descriptors",
            "out of file descriptors (%s) with %d connections open: new connections wait (freed %d); "
            "this is said at most once a minute",
            exc.strerror or exc,
            len(self._open),
            freed,
        )

    def say(self, what: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._said.get(what, -LOG_EVERY) >= LOG_EVERY:
            self._said[what] = now
            log.warning(message, *args)


class ConsoleProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline for each request's headers and a place in
    :class:`Connections`."""

    held: Connections  # this server's (uvicorn's own ``connections`` is a plain set)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> bool:
        """No request under way: the connection waits for (the rest of) a request's headers."""
        return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

    def abort(self) -> None:
        self._cancel_header_timer()
        self.transport.abort()  # at once: a polite TLS close would wait for the slow client
        # no longer one of uvicorn's connections either (its limit_concurrency counts them), even
        # before the loop gets to connection_lost: the request of the connection that took its
        # place may be read in the same turn
        self.connections.discard(self)
        self.held.discard(self)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()
        self.held.add(self)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._cancel_header_timer()  # the next request's headers get their own time
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self.held.discard(self)
        super().connection_lost(exc)

    def _watch(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            if self._header_timer is None:  # never extended by a trickle of bytes
                self._header_timer = self.loop.call_later(self.held.header_timeout, self._too_slow)
        else:
            self._cancel_header_timer()

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.waiting:
            self.abort()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None


def protocol_class(connections: Connections) -> type[ConsoleProtocol]:
    """The protocol class uvicorn is given (``http=``), bound to this server's connections."""
    return type("BoundConsoleProtocol", (ConsoleProtocol,), {"held": connections})


class _ConsoleLoop(asyncio.SelectorEventLoop):
    """An event loop whose TLS servers give a handshake :data:`HANDSHAKE_TIMEOUT` seconds."""

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", HANDSHAKE_TIMEOUT)
        return await super().create_server(*args, **kwargs)


def console_loop_factory(connections: Connections) -> Callable[[], asyncio.AbstractEventLoop]:
    """Loops for ``asyncio.Runner``: short TLS handshakes, and running out of descriptors handled
    by :meth:`Connections.out_of_descriptors` instead of a traceback per failed ``accept``."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_DESCRIPTORS:
            connections.out_of_descriptors(exc)
            return
        loop.default_exception_handler(context)

    def make() -> asyncio.AbstractEventLoop:
        loop = _ConsoleLoop()
        loop.set_exception_handler(handler)
        return loop

    return make
