"""A worker pins its GPU (CUDA_VISIBLE_DEVICES) first thing in agent.worker.worker_main: what a spawned worker
imports before that — the daemon's main module (the ``oncoagent`` script: agent.cli) and agent.worker itself —
must not load torch."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_the_daemon_and_worker_modules_do_not_load_torch() -> None:
    code = "import sys, agent.cli, agent.worker; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=True)
    assert out.stdout.strip() == "[]"
