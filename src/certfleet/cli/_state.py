"""What one run of the command line remembers: ``--debug``, whether a batch ran, and whether a
``--json`` result was printed.

A module of its own, so that the package (:func:`certfleet.cli.main`) and the Typer app
(``_common``) share it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["state"]


@dataclass
class _State:
    debug: bool = False
    # a batch ran (verify --each): nothing is left to clean up but memory (see certfleet.cli.run)
    batch: bool = False
    # a command that closed all it opened (its store, its event loop) and wrote its output: like a
    # batch, the process may end once that output is flushed (see certfleet.cli.run)
    closed: bool = False
    # a command printed its --json result: an error after it must not print a second object
    wrote_json: bool = False


state = _State()
