"""Runs queued jobs in N local worker processes.

The executor claims jobs from the store, hands each to an idle worker over a pipe and records the outcome.
With ``executor.gpus``, worker i is pinned to ``gpus[i % len(gpus)]`` (see :mod:`agent.worker`), and so is the
worker that replaces it. A worker that dies (SIGKILL, segfault, out of memory) or overruns the job timeout is
replaced; its job is retried with capped exponential backoff like any transient failure. Jobs that raise an
``InputError`` or an unexpected exception fail at once with their reason. On shutdown, running jobs get a grace
period to finish and are then re-queued. What any backend does around a job (its payload, its lease, recording
its outcome) is :mod:`agent.job_outcomes`; :mod:`agent.dask_executor` is the other backend.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from agent.config import Settings
from agent.errors import OncoAgentError
from agent.job_outcomes import JobListener, JobOutcomes
from agent.records import Job
from agent.store import Store
from agent.worker import WorkerConfig, worker_main

log = logging.getLogger(__name__)

_ctx = mp.get_context("spawn")

@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection
    job: Job | None = None
    started: float = 0.0


class Executor:
    def __init__(self, store: Store, settings: Settings, on_finished: JobListener | None = None) -> None:
        self.store = store
        self.settings = settings
        self.outcomes = JobOutcomes(store, settings, on_finished)
        self.node = self.outcomes.node
        self._workers: list[_Worker] = []
        self._stop = threading.Event()
        self._wake_r, self._wake_w = _ctx.Pipe(duplex=False)

    # ------------------------------------------------------------------------------------- public

    def start(self) -> None:
        requeued = self.store.requeue_running("daemon restarted after an unclean stop", owner=self.node)
        if requeued:
            log.warning("re-queued %d job(s) left running by an earlier unclean stop: %s", len(requeued), requeued)
        self._workers = [self._spawn(i) for i in range(self.settings.executor.workers)]

    def wake(self) -> None:
        """Tell the loop that new work may be queued (called from other threads)."""
        self._wake_w.send(None)

    def stop(self) -> None:
        self._stop.set()
        self.wake()

    def run(self) -> None:
        """The dispatch loop; returns after :meth:`stop`, once running jobs finished or were re-queued."""
        while not self._stop.is_set():
            self.outcomes.record_again()
            self.outcomes.renew([job.id for job in self._running()])
            self._dispatch()
            self._wait(self._next_wait())
            self._check_timeouts()
        self._shutdown()

    def _running(self) -> list[Job]:
        return [w.job for w in self._workers if w.job is not None]

    @property
    def busy(self) -> int:
        return sum(1 for w in self._workers if w.job is not None)

    # ------------------------------------------------------------------------------------- workers

    def _spawn(self, index: int) -> _Worker:
        """Start worker ``index`` (again, after a death or timeout: the same index, so the same GPU)."""
        parent, child = _ctx.Pipe(duplex=True)
        gpus = self.settings.executor.gpus
        gpu = gpus[index % len(gpus)] if gpus else None
        config = WorkerConfig(
            index=index,
            log_level=self.settings.log.level,
            log_format=self.settings.log.format,
            plugins=tuple(self.settings.plugins),
            parent_pid=os.getpid(),
            pipeline_options=self.settings.pipelines,
            gpu=gpu,
        )
        process = _ctx.Process(target=worker_main, args=(child, config), name=f"oncoagent-worker-{index}")
        process.daemon = True
        process.start()
        child.close()
        log.debug("worker %d started (pid %s%s)", index, process.pid, "" if gpu is None else f", GPU {gpu}")
        return _Worker(index, process, parent)

    def _dispatch(self) -> None:
        for worker in self._workers:
            if worker.job is not None or self._stop.is_set():
                continue
            job = self.outcomes.claim(self._running())
            if job is None:
                return
            try:
                payload = self.outcomes.payload(job, self.settings.paths.staging)
            except (OncoAgentError, OSError) as exc:
                self.outcomes.record_failure(job, f"cannot prepare job: {exc}", retry=False)
                continue
            worker.job = job
            worker.started = time.monotonic()
            log.info("job %d (%s) -> worker %d", job.id, job.pipeline, worker.index)
            worker.conn.send(payload)

    def _next_wait(self) -> float:
        wait_s = min(self.settings.executor.poll_interval_s, max(0.0, self.outcomes.renew_at - time.monotonic()))
        if self.outcomes.claim_failing or self.outcomes.has_unrecorded:
            return wait_s  # the store refuses writes: try again a poll interval later, not at once
        if any(w.job is None for w in self._workers):
            due = self.outcomes.next_due(self._running())
            if due is not None:
                wait_s = min(wait_s, max(0.0, due - time.time()))
        return wait_s

    def _wait(self, timeout: float) -> None:
        busy = {w.conn: w for w in self._workers if w.job is not None}
        sentinels = {w.process.sentinel: w for w in self._workers}
        ready = wait([self._wake_r, *busy, *sentinels], timeout)
        for item in ready:
            if item is self._wake_r:
                while self._wake_r.poll():
                    self._wake_r.recv()
            elif item in busy:
                worker = busy[item]
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    continue  # the sentinel reports the death
                self._received(worker, message)
        for sentinel, worker in sentinels.items():
            if sentinel in ready or not worker.process.is_alive():
                self._replace_dead(worker)

    def _replace_dead(self, worker: _Worker) -> None:
        with contextlib.suppress(EOFError, OSError):
            while worker.job is not None and worker.conn.poll():  # it may have finished just before it ended
                self._received(worker, worker.conn.recv())
        worker.process.join(timeout=1)
        code = worker.process.exitcode
        if worker.job is not None:
            reason = f"worker process died ({_describe_exit(code)}) while running the job"
            log.error("job %d: %s", worker.job.id, reason)
            self.outcomes.record_failure(worker.job, reason, retry=True)
        else:
            log.warning("idle worker %d exited (%s)", worker.index, _describe_exit(code))
        worker.conn.close()
        if not self._stop.is_set():
            self._workers[self._workers.index(worker)] = self._spawn(worker.index)

    def _check_timeouts(self) -> None:
        limit = self.settings.executor.job_timeout_s
        for worker in self._workers:
            if worker.job is not None and time.monotonic() - worker.started > limit:
                job = worker.job
                log.error("job %d exceeded the %g s timeout; killing worker %d", job.id, limit, worker.index)
                worker.process.kill()
                worker.process.join(timeout=5)
                worker.job = None
                self.outcomes.record_failure(job, f"timed out after {limit:g} s", retry=True)
                worker.conn.close()
                self._workers[self._workers.index(worker)] = self._spawn(worker.index)

    def _received(self, worker: _Worker, message: dict[str, Any]) -> None:
        """A worker's message: its job's progress (see :func:`agent.worker.progress_message`), or its outcome."""
        if "progress" not in message:
            self._record_outcome(worker, message)
        elif worker.job is not None and message.get("job_id") == worker.job.id:
            self.outcomes.progress(worker.job.id, *message["progress"])

    def _record_outcome(self, worker: _Worker, outcome: dict[str, Any]) -> None:
        job = worker.job
        worker.job = None
        if job is None or outcome.get("job_id") != job.id:
            log.error("worker %d sent an outcome for a job it was not running: %r", worker.index, outcome)
            return
        self.outcomes.record(job, outcome)

    # ------------------------------------------------------------------------------------- shutdown

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.settings.executor.shutdown_grace_s
        while self.busy and time.monotonic() < deadline:
            self._wait(min(0.2, max(0.0, deadline - time.monotonic())))
        for worker in self._workers:
            if worker.job is not None:
                log.info("job %d still running at shutdown; it will be re-queued", worker.job.id)
                worker.process.kill()
            else:
                try:
                    worker.conn.send(None)
                except (OSError, ValueError):
                    worker.process.kill()
        for worker in self._workers:
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=2)
        ids = self.store.requeue_running("daemon stopped while the job ran", owner=self.node)
        if ids:
            log.info("re-queued %d running job(s): %s", len(ids), ids)
        self._workers = []


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
