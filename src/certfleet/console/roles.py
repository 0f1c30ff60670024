"""Who may do what in the console: roles, in order, and the lineages an account or token is kept to.

``viewer`` reads everything but secrets; ``operator`` also requests, imports, deploys, rolls back
and makes client links; ``admin`` also sets what runs on machines (a node's commands and
transport), trust anchors, issuers, accounts and key exports. ``metrics`` is for tokens only: it
reads ``/metrics`` and nothing else. A token never has more than its account, and never more
than the token that made it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from certfleet.errors import InputError

__all__ = ["ACCOUNT_ROLES", "Forbidden", "LineageScope", "Role", "narrower_scope", "parse_role", "scope_within"]

# the lineages an account or a token is kept to; None: every lineage
LineageScope = frozenset[str] | None


class Role(StrEnum):
    METRICS = "metrics"
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def covers(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may."""
        return self.rank >= needed.rank

    @staticmethod
    def narrower(a: Role, b: Role) -> Role:
        return a if a.rank <= b.rank else b


_RANK = {Role.METRICS: 0, Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}
ACCOUNT_ROLES = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)


class Forbidden(InputError):
    """The account or token may not do this (HTTP 403)."""


def parse_role(text: str, *, account: bool = False) -> Role:
    """A role by its name; an account's role is one of :data:`ACCOUNT_ROLES`."""
    allowed = ACCOUNT_ROLES if account else tuple(Role)
    try:
        role = Role(text.strip().lower())
    except ValueError:
        role = None
    if role is None or role not in allowed:
        raise InputError(f"unknown role {text[:20]!r}", hint=f"use one of {', '.join(r.value for r in allowed)}")
    return role


def scope_within(inner: LineageScope, outer: LineageScope) -> bool:
    """Whether ``inner`` asks for no lineage ``outer`` does not allow."""
    return outer is None or (inner is not None and inner <= outer)


def narrower_scope(a: LineageScope, b: LineageScope) -> LineageScope:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def scope_of(names: Iterable[str] | None) -> LineageScope:
    return None if names is None else frozenset(names)
