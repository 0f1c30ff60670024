"""Apache httpd: ``live/cert.pem``, ``live/chain.pem`` and ``live/privkey.pem``.

SSLCertificateFile      PATH/live/cert.pem
SSLCertificateChainFile PATH/live/chain.pem
SSLCertificateKeyFile   PATH/live/privkey.pem
"""

from __future__ import annotations

from certfleet import export
from certfleet.fleet.targets._layout import LayoutTarget

__all__ = ["ApacheTarget"]


class ApacheTarget(LayoutTarget):
    kind = "apache"
    layout = export.OutputFormat.APACHE
