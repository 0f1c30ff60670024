"""nginx: ``live/fullchain.pem`` (leaf then chain) and ``live/privkey.pem``.

ssl_certificate     PATH/live/fullchain.pem;
ssl_certificate_key PATH/live/privkey.pem;
"""

from __future__ import annotations

from certfleet import export
from certfleet.fleet.targets._layout import LayoutTarget

__all__ = ["NginxTarget"]


class NginxTarget(LayoutTarget):
    kind = "nginx"
    layout = export.OutputFormat.NGINX
