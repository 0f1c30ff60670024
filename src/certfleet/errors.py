"""The one exception tree of certfleet.

Every error a user can meet is a :class:`CertfleetError`. Its ``str()`` is the one line the CLI
prints; ``hint`` says what to do next; ``exit_code`` is what the process returns. Third-party
errors are mapped to these at the boundary that calls the third party (``raise X(...) from exc``).

    CertfleetError                   (exit 2 unless a subclass says otherwise)
    ├── InputError                   bad input: a file we cannot read, a bad option value (exit 2)
    │   ├── FormatError              bytes that are not a certificate, key, CSR or package
    │   ├── PasswordError            a password is needed, or the one given is wrong
    │   ├── LimitError               an input over a size, count or depth limit (zip bombs too)
    │   ├── NotFoundError            what the input names does not exist (a node, a lineage, an id)
    │   └── ConflictError            a change made on a stale view: someone changed it meanwhile
    ├── EnvError                     the environment failed us (exit 3)
    │   ├── NetworkError             a fetch or connection that could not be made
    │   └── StoreError               the store is missing, locked or unreadable
    │       └── StoreBusyError       another certfleet holds the store for too long
    └── OperationFailed              a command ran and found that the job failed (exit 1)

The ACME CA's refusals are ``OperationFailed`` subclasses and an unreachable CA a ``NetworkError``,
drawn in :mod:`certfleet.acme.errors`.

``ValueError`` and ``TypeError`` remain for programmer misuse of the library API.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar

__all__ = [
    "CertfleetError",
    "ConflictError",
    "EnvError",
    "ExitCode",
    "FormatError",
    "InputError",
    "LimitError",
    "NetworkError",
    "NotFoundError",
    "OperationFailed",
    "PasswordError",
    "StoreBusyError",
    "StoreError",
]


class ExitCode(IntEnum):
    """Process exit codes, the same for every command."""

    OK = 0
    PROBLEMS = 1  # the check ran and found problems (invalid chain, failing endpoint)
    BAD_INPUT = 2  # unreadable file, wrong password, bad usage
    ENVIRONMENT = 3  # store locked, network unreachable


class CertfleetError(Exception):
    """Root of every error certfleet raises on purpose."""

    exit_code: ClassVar[ExitCode] = ExitCode.BAD_INPUT

    def __init__(self, message: str, *, hint: str | None = None, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # the file or endpoint the error is about; printed first so the user sees which one
        self.source = source

    def __str__(self) -> str:
        return f"{self.source}: {self.message}" if self.source else self.message

    def with_source(self, source: str) -> CertfleetError:
        """Attach the file name once it is known (readers work on bytes and do not know it)."""
        if self.source is None:
            self.source = source
        return self


class InputError(CertfleetError):
    exit_code = ExitCode.BAD_INPUT


class FormatError(InputError):
    pass


class PasswordError(InputError):
    pass


class LimitError(InputError):
    pass


class NotFoundError(InputError):
    pass


class ConflictError(InputError):
    pass


class EnvError(CertfleetError):
    exit_code = ExitCode.ENVIRONMENT


class NetworkError(EnvError):
    pass


class StoreError(EnvError):
    pass


class StoreBusyError(StoreError):
    pass


class OperationFailed(CertfleetError):
    exit_code = ExitCode.PROBLEMS
