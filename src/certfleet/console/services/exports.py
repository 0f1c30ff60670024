"""A version's key and chain as a download, for a server certfleet cannot reach: a PKCS#12 (PFX)
file, or the PEM files of a web server's layout in a zip.

The library's export writes the files (``fleet.lineage.export_lineage``, audited ``export``), into
a folder of its own under the store's home (0700) that lives for the request; the key in them is
always encrypted with the password given, and a clear key never leaves the console.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from certfleet.console.services.audit import Actor, Audit
from certfleet.errors import InputError
from certfleet.export import OutputFormat
from certfleet.fleet.lineage import export_lineage

__all__ = ["FORMATS", "Download", "Exports"]

# what the console offers, and how it names each; HAProxy's combined.pem needs the key in the clear
FORMATS = {
    OutputFormat.PKCS12: "PKCS#12 / PFX (Windows, Java, appliances)",
    OutputFormat.PEM: "PEM files: cert, chain, fullchain, key (zip)",
    OutputFormat.NGINX: "nginx: fullchain.pem, privkey.pem (zip)",
    OutputFormat.APACHE: "Apache: cert.pem, chain.pem, privkey.pem (zip)",
}
_FOLDER = "console"


@dataclass(frozen=True, slots=True)
class Download:
    filename: str
    media_type: str
    data: bytes

    def __repr__(self) -> str:  # the data holds a key, encrypted, but still nothing for a log
        return f"Download({self.filename!r}, {len(self.data)} bytes)"


class Exports:
    def __init__(self, audit: Audit) -> None:
        self._audit = audit

    def download(
        self, actor: Actor, lineage: str, *, version: int | None, fmt: str, password: str, legacy: bool = False
    ) -> Download:
        """The key and chain of ``version`` (the active one when None) in ``fmt``, the key encrypted
        with ``password``; ``legacy`` makes a PKCS#12 that Windows Server 2016 and old Java open."""
        try:
            kind = OutputFormat(fmt)
        except ValueError:
            kind = None
        if kind not in FORMATS:
            raise InputError(f"not a format the console exports: {fmt[:40]!r}", hint="choose PKCS#12 or PEM files")
        if not password:
            raise InputError(
                "type a password: the key leaves the store only encrypted",
                hint="the server that imports the file asks for it",
            )
        store = self._audit.store_for(actor)
        pfx = kind is OutputFormat.PKCS12
        work = store.home / _FOLDER
        work.mkdir(mode=0o700, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=work, prefix="export-") as folder:  # 0700, removed after
            out = Path(folder) / (f"{lineage}.pfx" if pfx else lineage)
            result = export_lineage(
                store, lineage, kind, out, password=password.encode(), legacy=legacy and pfx, version=version
            )
            base = f"{lineage}-v{result.version}"
            if pfx:
                return Download(f"{base}.pfx", "application/x-pkcs12", out.read_bytes())
            return Download(f"{base}-{kind.value}.zip", "application/zip", _zip(base, [Path(f) for f in result.files]))


def _zip(base: str, files: list[Path]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            info = zipfile.ZipInfo(f"{base}/{path.name}")
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (path.stat().st_mode & 0o777) << 16  # privkey.pem stays 0600 when unzipped
            archive.writestr(info, path.read_bytes())
    return buf.getvalue()
