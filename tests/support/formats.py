"""What the format tests share: running the real peer programs (openssl, keytool) in a folder."""

from __future__ import annotations

import subprocess
from pathlib import Path


def run(*args: str | Path, cwd: Path) -> bytes:
    """Run a peer program in ``cwd``; its standard output, or CalledProcessError when it fails."""
    return subprocess.run([*map(str, args)], check=True, capture_output=True, cwd=cwd).stdout


def openssl(*args: str | Path, cwd: Path) -> bytes:
    return run("openssl", *args, cwd=cwd)
