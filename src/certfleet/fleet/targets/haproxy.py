"""HAProxy: ``live/combined.pem`` (leaf, chain, then the key), which ``bind ... ssl crt`` names."""

from __future__ import annotations

from certfleet import export
from certfleet.fleet.targets._layout import LayoutTarget

__all__ = ["HAProxyTarget"]


class HAProxyTarget(LayoutTarget):
    kind = "haproxy"
    layout = export.OutputFormat.HAPROXY
