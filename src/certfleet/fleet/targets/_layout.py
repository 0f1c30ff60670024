"""The PEM layouts web servers read (nginx, Apache, HAProxy, plain PEM), one versioned folder each."""

from __future__ import annotations

from typing import ClassVar

from certfleet import export
from certfleet.fleet.model import Material
from certfleet.fleet.targets._base import TargetFile, VersionedTarget

__all__ = ["LayoutTarget"]


class LayoutTarget(VersionedTarget):
    """Writes ``export.layout_files(layout, ...)`` into each version folder."""

    layout: ClassVar[export.OutputFormat]

    def file_names(self) -> dict[str, str]:
        """Layout file name -> the name written on the node (the same unless options rename it)."""
        return {}

    def render(self, material: Material) -> tuple[TargetFile, ...]:
        files = export.layout_files(self.layout, material.key, material.leaf, material.chain)
        private = export.private_files(self.layout)
        names = self.file_names()
        return tuple(TargetFile(names.get(name, name), data, secret=name in private) for name, data in files.items())
