"""Challenge solvers: http-01 through a node's webroot, dns-01 through RFC 2136, dns-lexicon or a
hook command; one registry (:data:`SOLVERS`)."""

from certfleet.acme.challenges._base import (
    SOLVERS,
    Check,
    DnsSolver,
    Solver,
    SolverContext,
    Task,
    gather_cleanups,
    make_solver,
    solver_key,
)

__all__ = [
    "SOLVERS",
    "Check",
    "DnsSolver",
    "Solver",
    "SolverContext",
    "Task",
    "gather_cleanups",
    "make_solver",
    "solver_key",
]
