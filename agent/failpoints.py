"""Named points where a crash test can freeze a process, to kill it at an exact moment.

``OA_FAILPOINTS=name[,name…]`` arms points; ``OA_FAILPOINTS_STATE=DIR`` is where each firing
leaves a marker, so that a point fires once per test even across restarted processes. An armed point that
fires stops its process with SIGSTOP; the test sees the stopped process and kills it with SIGKILL. Unarmed
(the default, and in production) a point costs one dictionary lookup. The points:

* ``worker.after-result`` — a worker has renamed a job's result folder into place, before it reports the
  outcome (so before the daemon commits the job's success);
* ``executor.after-success`` — the daemon has committed a job's success and its outbox rows.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)

ENV_POINTS = "OA_FAILPOINTS"  # not ONCOAGENT_*: those are settings
ENV_STATE = "OA_FAILPOINTS_STATE"

_armed = frozenset(p.strip() for p in os.environ.get(ENV_POINTS, "").split(",") if p.strip())


def reached(name: str) -> None:
    """Stop this process here if ``name`` is armed and has not fired yet."""
    if name not in _armed:
        return
    state = os.environ.get(ENV_STATE)
    if state:
        try:
            fd = os.open(Path(state) / f"{name}.fired", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return
        os.close(fd)
    log.warning("failpoint %s reached: stopping process %d", name, os.getpid())
    os.kill(os.getpid(), signal.SIGSTOP)
