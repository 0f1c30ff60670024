"""Plain PEM files: ``cert.pem``, ``chain.pem``, ``fullchain.pem`` and ``privkey.pem`` under ``live/``.

Options ``cert``, ``chain``, ``fullchain`` and ``key`` rename the files (``key=server.key``).
"""

from __future__ import annotations

from typing import ClassVar

from certfleet import export
from certfleet.errors import InputError
from certfleet.fleet.model import TargetSpec
from certfleet.fleet.targets._base import VersionedTarget, check_filename
from certfleet.fleet.targets._layout import LayoutTarget

__all__ = ["PemTarget"]

_RENAMES = {"cert": "cert.pem", "chain": "chain.pem", "fullchain": "fullchain.pem", "key": "privkey.pem"}


class PemTarget(LayoutTarget):
    kind = "pem"
    layout = export.OutputFormat.PEM
    options_allowed: ClassVar[frozenset[str]] = VersionedTarget.options_allowed | frozenset(_RENAMES)

    def __init__(self, spec: TargetSpec) -> None:
        super().__init__(spec)
        self._names = {
            default: check_filename(self.options[option], f"the pem option {option}")
            for option, default in _RENAMES.items()
            if option in self.options
        }
        chosen = [self._names.get(default, default) for default in _RENAMES.values()]
        if len(set(chosen)) != len(chosen):
            raise InputError(f"two pem files would have the same name: {', '.join(chosen)}")

    def file_names(self) -> dict[str, str]:
        return self._names
