"""What the tests share: real servers on loopback, the console driven as a user would, deploy and
format helpers, and where the repository and the shared conformance data are."""

import fcntl
import signal
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_SUITE = Path("shared") / "conformance" / "x509-limbo.json.gz"
# the suite lives beside the checkout; a git worktree may sit a folder or two deeper
LIMBO = next((folder / _SUITE for folder in REPO.parents if (folder / _SUITE).is_file()), REPO.parent / _SUITE)

# whether the running test is marked ``peer``: set by conftest before its fixtures, read by every
# launcher of a real server, so that ``-m "not peer"`` never starts one
_running = {"peer": False}


def mark_running(peer: bool) -> None:
    _running["peer"] = peer


def require_peer(what: str) -> None:
    """Refuse to start ``what`` (a real server) from a test not marked ``peer``."""
    if not _running["peer"]:
        raise RuntimeError(f"this test starts {what}: mark it @pytest.mark.peer")


def stop_process(proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM, *, timeout: float = 60) -> None:
    """Ask ``proc`` to end with ``signum`` (if it still runs) and wait ``timeout`` seconds for it;
    then kill it."""
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def flock_held(path: Path) -> bool:
    """Whether some process holds an ``flock`` on ``path`` now (seen from outside certfleet)."""
    if not path.exists():
        return False
    with path.open("rb") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False
