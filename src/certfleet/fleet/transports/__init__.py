"""How certfleet reaches a node: ``local`` or ``ssh://user@host[:port]``."""

from certfleet.fleet.transports._base import (
    TRANSPORTS,
    CommandResult,
    Transport,
    open_transport,
    scheme_of,
)

__all__ = ["TRANSPORTS", "CommandResult", "Transport", "open_transport", "scheme_of"]
