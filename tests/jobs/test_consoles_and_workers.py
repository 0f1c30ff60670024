"""The whole of it, small: two ``certfleet serve`` and two ``certfleet worker`` on one PostgreSQL, a
deploy started on one console and followed on the other, one worker killed with SIGKILL half way
(``bench/consoles_workers.py``, which checks every node's result, every job, every node's
certificate and the takeover itself, and fails otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.peer

BENCH = Path(__file__).resolve().parents[2] / "bench" / "consoles_workers.py"


def test_two_consoles_and_two_workers_deploy_and_survive_a_killed_worker() -> None:
    argv = [sys.executable, str(BENCH), "--nodes", "48", "--batch", "4", "--lease", "2", "--reload", "sleep 0.3"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=os.environ.copy(), check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [figures] = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert figures["nodes"] == 48 and figures["max_attempts"] >= 2
    assert 0 < figures["done_at_kill"] < 48  # killed half way, not after the end
    assert sum(figures["jobs_ended_by_worker"]) >= 47  # a killed worker's last event may not be printed
