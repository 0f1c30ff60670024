"""``certfleet serve``: the web console over HTTPS."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from certfleet.cli._common import app
from certfleet.errors import EnvError


@app.command(rich_help_panel="Console", epilog="Example: certfleet serve --port 8443")
def serve(
    bind: Annotated[str, typer.Option("--bind", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTPS port.", min=1, max=65535)] = 8443,
    lineage: Annotated[
        str | None,
        typer.Option("--lineage", help="Serve this lineage's active version by default (SNI picks among all)."),
    ] = None,
    renew_every: Annotated[
        float, typer.Option("--renew-every", help="Minutes between the autopilot's renewal passes.", min=1, max=1440)
    ] = 15.0,
    autopilot: Annotated[
        bool,
        typer.Option(
            "--autopilot/--no-autopilot",
            help="Renew, deploy and alert on a schedule (PostgreSQL: each pass a renew job, run here or by a worker).",
        ),
    ] = True,
) -> None:
    """Serve the web console and its API over HTTPS (TLS 1.2 and 1.3 only); on a fresh machine,
    with a bootstrap certificate and a one-time link that creates the administrator. The
    autopilot runs in the same process (`certfleet renew`, every 15 minutes) unless told not to."""
    import datetime as dt

    _can_listen(bind, port)  # before a URL is printed that would not answer
    from certfleet.console.server import ServeOptions, run

    every = dt.timedelta(minutes=renew_every) if autopilot else None
    run(ServeOptions(bind=bind, port=port, lineage=lineage, autopilot=every))


def _can_listen(bind: str, port: int) -> None:
    """Refuse at once, in one line, an address the console could not listen on."""
    try:
        infos = socket.getaddrinfo(bind or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        hint = "give an address of this machine"
        raise EnvError(f"cannot listen on {bind}:{port}: {exc.strerror}", hint=hint) from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # as the server will: a port whose old connections linger in TIME_WAIT is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise EnvError(
                f"cannot listen on {bind}:{port}: {exc.strerror or exc}",
                hint="choose another --port, or stop what uses it",
            ) from exc
