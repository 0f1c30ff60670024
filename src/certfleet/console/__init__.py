"""The certfleet console: an HTTPS panel and JSON API over the store, and client deployment links."""

from certfleet.console.app import ConsoleSettings, create_app
from certfleet.console.server import ServeOptions, run

__all__ = ["ConsoleSettings", "ServeOptions", "create_app", "run"]
