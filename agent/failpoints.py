"""Named points where a crash test can freeze a process, to kill it at an exact moment.

``OA_FAILPOINTS=name[,name…]`` arms points; ``OA_FAILPOINTS_STATE=DIR`` is where each firing
leaves a marker, so that a point fires once per test even across restarted processes. An armed point that
fires stops its process with SIGSTOP; the test sees the stopped process and kills it with SIGKILL.
``OA_FAILPOINTS_TRACE=FILE`` appends a line ``<epoch seconds> <pid> <name>`` to FILE at every point reached,
armed or not, so that a test killing at a random moment can tell afterwards which phases were in progress.
Unarmed and untraced (the default, and in production) a point costs one dictionary lookup. The points:

* ``results.before-pipeline`` — a worker starts the pipeline on a job's input (processing);
* ``results.before-reports`` — the pipeline has returned; the reports and the DICOM objects for PACS are to be
  written into the staging folder, then ``result.json``, then the folder renamed into place (report writing);
* ``worker.after-result`` — a worker has renamed a job's result folder into place, before it reports the
  outcome (so before the daemon commits the job's success);
* ``worker.after-outcome`` — a worker has handed a job's outcome (success or failure) to the daemon;
* ``executor.after-success`` — the daemon has committed a job's success and its outbox rows;
* ``outbox.round-start`` — the outbox sender took the due entries of a round, before any C-STORE;
* ``outbox.before-sent`` — a destination acknowledged an entry, before the daemon commits it as sent (the one
  window where a crash makes an object reach PACS twice: at-least-once delivery);
* ``outbox.after-sent`` — an entry's sent state is committed;
* ``outbox.round-end`` — every entry of the round is sent, failed or substituted.
* ``batch.after-queued`` — a batch run has recorded an input it took and the job it queued for it, before it
  takes the next input (a crash here leaves a run to resume).

The ``outbox.*`` points are reached through :func:`outbox`, the store wrapped for the sender (the DICOM node
never imports the daemon); it wraps only when points are armed or traced.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from dicom_node.records import Outbox, OutboxEntry

log = logging.getLogger(__name__)

ENV_POINTS = "OA_FAILPOINTS"  # not ONCOAGENT_*: those are settings
ENV_STATE = "OA_FAILPOINTS_STATE"
ENV_TRACE = "OA_FAILPOINTS_TRACE"

_armed = frozenset(p.strip() for p in os.environ.get(ENV_POINTS, "").split(",") if p.strip())
_trace = os.environ.get(ENV_TRACE) or None


def active() -> bool:
    """Whether any point is armed or traced in this process."""
    return bool(_armed) or _trace is not None


def reached(name: str) -> None:
    """Stop this process here if ``name`` is armed and has not fired yet (and trace it when tracing)."""
    if _trace is not None:
        _append_trace(_trace, name)
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


def _append_trace(path: str, name: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{time.time():.6f} {os.getpid()} {name}\n".encode())  # one write: lines never interleave
    finally:
        os.close(fd)


def outbox(store: Outbox) -> Outbox:
    """``store`` as the outbox sender's collaborator: wrapped to reach the ``outbox.*`` points when active."""
    return _OutboxPoints(store) if active() else store


class _OutboxPoints:
    """The outbox with the ``outbox.*`` points around the sender's calls; a round is the entries of one
    :meth:`outbox_claim` until each is resolved (sent, failed or substituted)."""

    def __init__(self, store: Outbox) -> None:
        self._store = store
        self._open = 0

    def outbox_claim(self) -> Sequence[OutboxEntry]:
        due = self._store.outbox_claim()
        self._open = len(due)
        if due:
            reached("outbox.round-start")
        return due

    def outbox_next_due(self) -> float | None:
        return self._store.outbox_next_due()

    def outbox_sent(self, item_id: int, status: int, /) -> object:
        reached("outbox.before-sent")
        done = self._store.outbox_sent(item_id, status)
        reached("outbox.after-sent")
        self._resolved()
        return done

    def outbox_failed(self, item_id: int, error: str, /, *, status: int | None = None,
                      retry_at: float | None = None) -> object:
        done = self._store.outbox_failed(item_id, error, status=status, retry_at=retry_at)
        self._resolved()
        return done

    def outbox_substitute(self, item_id: int, path: Path, sop_class_uid: str, sop_instance_uid: str, note: str, /,
                          ) -> object:
        done = self._store.outbox_substitute(item_id, path, sop_class_uid, sop_instance_uid, note)
        self._resolved()
        return done

    def _resolved(self) -> None:
        self._open -= 1
        if self._open == 0:
            reached("outbox.round-end")
