"""Runs queued jobs in N local worker processes.

The executor claims jobs from the store, hands each to an idle worker over a pipe and records the outcome.
With ``executor.gpus``, worker i is pinned to ``gpus[i % len(gpus)]`` (see :mod:`agent.worker`), and so is the
worker that replaces it. A worker that dies (SIGKILL, segfault, out of memory) or overruns the job timeout is
replaced; its job is retried with capped exponential backoff like any transient failure. Jobs that raise an
``InputError`` or an unexpected exception fail at once with their reason. On shutdown, running jobs get a grace
period to finish and are then re-queued.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from agent import failpoints
from agent.config import Destination, Settings
from agent.errors import LeaseLost, OncoAgentError
from agent.records import Delivery, InputKind, Job, JobStatus
from agent.store import Store
from agent.worker import Failure, WorkerConfig, worker_main
from pipelines.durable import move_to_quarantine
from pipelines.retry import RetryStrategy

log = logging.getLogger(__name__)

_ctx = mp.get_context("spawn")

JobListener = Callable[[Job], None]


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
        self.paths = settings.paths
        cfg = settings.executor
        self.retry = RetryStrategy(cfg.max_attempts, cfg.backoff_base_s, cfg.backoff_max_s)
        self.on_finished = on_finished
        self._workers: list[_Worker] = []
        self._stop = threading.Event()
        self._claiming = threading.Event()
        self._claiming.set()
        self._wake_r, self._wake_w = _ctx.Pipe(duplex=False)
        self._unrecorded: dict[int, Callable[[], None]] = {}  # job id -> recording its outcome, to try again
        self._claim_failing = False
        self.node = node_name(settings)
        self._renew_at = 0.0  # monotonic time of the next lease renewal

    # ------------------------------------------------------------------------------------- public

    def start(self) -> None:
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
            self._record_again()
            self._renew_leases()
            self._dispatch()
            self._wait(self._next_wait())
            self._check_timeouts()
        self._shutdown()

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
            try:
                job = self.store.claim(owner=self.node, lease_s=self.settings.executor.lease_s)
            except OncoAgentError as exc:
                if not self._claim_failing:  # once per outage (a full disk), not once per loop
                    log.error("cannot claim a job (will keep trying): %s", exc)
                self._claim_failing = True
                return
            if self._claim_failing:
                log.info("claiming jobs works again")
                self._claim_failing = False
            if job is None:
                return
            try:
                payload = self._payload(job)
            except (OncoAgentError, OSError) as exc:
                self._record_failure(job, f"cannot prepare job: {exc}", retry=False)
                continue
            worker.job = job
            worker.started = time.monotonic()
            log.info("job %d (%s) -> worker %d", job.id, job.pipeline, worker.index)
            worker.conn.send(payload)

    def _payload(self, job: Job) -> dict[str, Any]:
        inp = self.store.get_input(job.input_id)
        if inp.kind is InputKind.DICOM_SERIES:
            paths = [str(p) for p in self.store.instance_paths(inp.id)]
        else:
            paths = [str(inp.path)]
        previous = self.store.latest_success(inp.id, job.pipeline, before_job_id=job.id)
        return {
            "job_id": job.id,
            "pipeline": job.pipeline,
            "kind": inp.kind.value,
            "key": inp.key,
            "paths": paths,
            "attrs": inp.attrs,
            "study_uid": inp.study_uid,
            "series_uid": inp.series_uid,
            "result_dir": str(self.result_dir(job.id)),
            "staging_dir": str(self.paths.tmp),
            "previous_result": str(previous.result_path) if previous and previous.result_path else None,
            "previous_job_id": previous.id if previous else None,
            "fingerprint": job.input_fingerprint,
        }

    def result_dir(self, job_id: int) -> Path:
        return self.paths.results / f"job-{job_id:06d}"

    def _renew_leases(self) -> None:
        """Keep the claims of running jobs (every third of the lease); a job this daemon no longer holds (its
        lease expired, another daemon claimed it) runs on, but its outcome will not be recorded."""
        if time.monotonic() < self._renew_at:
            return
        running = [w.job.id for w in self._workers if w.job is not None]
        lease_s = self.settings.executor.lease_s
        try:
            held = set(self.store.renew_leases(self.node, running, time.time() + lease_s))
        except OncoAgentError as exc:
            log.error("cannot renew the leases of running jobs (will keep trying): %s", exc)
            return
        for job_id in sorted(set(running) - held):
            log.error("job %d is no longer this daemon's (%s): its lease expired and it was claimed again",
                      job_id, self.node)
        self._renew_at = time.monotonic() + lease_s / 3

    def _next_wait(self) -> float:
        wait_s = min(self.settings.executor.poll_interval_s, max(0.0, self._renew_at - time.monotonic()))
        if self._claim_failing or self._unrecorded:
            return wait_s  # the store refuses writes: try again a poll interval later, not at once
        if any(w.job is None for w in self._workers):
            due = self.store.next_due()
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
                    outcome = worker.conn.recv()
                except (EOFError, OSError):
                    continue  # the sentinel reports the death
                self._record_outcome(worker, outcome)
        for sentinel, worker in sentinels.items():
            if sentinel in ready or not worker.process.is_alive():
                self._replace_dead(worker)

    def _replace_dead(self, worker: _Worker) -> None:
        if worker.conn.poll():  # the job finished just before the process ended
            with contextlib.suppress(EOFError, OSError):
                self._record_outcome(worker, worker.conn.recv())
        worker.process.join(timeout=1)
        code = worker.process.exitcode
        if worker.job is not None:
            reason = f"worker process died ({_describe_exit(code)}) while running the job"
            log.error("job %d: %s", worker.job.id, reason)
            self._record_failure(worker.job, reason, retry=True)
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
                self._record_failure(job, f"timed out after {limit:g} s", retry=True)
                worker.conn.close()
                self._workers[self._workers.index(worker)] = self._spawn(worker.index)

    # ------------------------------------------------------------------------------------- outcomes

    def _record_outcome(self, worker: _Worker, outcome: dict[str, Any]) -> None:
        job = worker.job
        worker.job = None
        if job is None or outcome.get("job_id") != job.id:
            log.error("worker %d sent an outcome for a job it was not running: %r", worker.index, outcome)
            return
        if outcome["ok"]:
            result_dir = Path(outcome["result_dir"])
            deliveries = deliveries_for(self.settings.destinations, result_dir, outcome.get("dicom_outputs") or [])
            self._recorded(job, "success", lambda: self._succeed(job, result_dir, outcome, deliveries))
        else:
            self._record_failure(job, outcome["error"], retry=outcome["kind"] == Failure.TRANSIENT)
            if outcome["kind"] == Failure.INPUT:
                self._quarantine(job, outcome["error"])

    def _succeed(self, job: Job, result_dir: Path, outcome: dict[str, Any], deliveries: list[Delivery]) -> None:
        done = self.store.succeed(job.id, result_dir, outcome["summary"], outcome["models"], deliveries,
                                  outcome.get("unsent_reason"), owner=self.node)
        failpoints.reached("executor.after-success")
        if deliveries:
            log.info("job %d succeeded; %d object(s) for %s", job.id, len(deliveries),
                     ", ".join(sorted({d.destination for d in deliveries})))
        else:
            log.info("job %d succeeded", job.id)
        if done.unsent_reason:
            log.warning("job %d: results not sent: %s", job.id, done.unsent_reason)
        self._notify(done)

    def _record_failure(self, job: Job, error: str, *, retry: bool) -> None:
        self._recorded(job, "failure", lambda: self._fail(job, error, retry=retry))

    def _recorded(self, job: Job, what: str, record: Callable[[], None]) -> None:
        """Record a job's outcome; when the store refuses (a full disk), keep it and try again each loop, so
        the job does not stay ``running`` while the daemon runs on."""
        try:
            record()
        except LeaseLost as exc:
            log.error("job %d: %s not recorded: %s", job.id, what, exc)
        except OncoAgentError as exc:
            log.error("job %d: cannot record %s, will try again: %s", job.id, what, exc)
            self._unrecorded[job.id] = record

    def _record_again(self) -> None:
        for job_id, record in list(self._unrecorded.items()):
            try:
                record()
            except LeaseLost as exc:
                log.error("job %d: outcome not recorded: %s", job_id, exc)
            except OncoAgentError as exc:
                try:
                    still_running = self.store.get_job(job_id).status is JobStatus.RUNNING
                except OncoAgentError:
                    continue
                if still_running:
                    continue
                log.error("job %d: outcome not recorded, the job is no longer running: %s", job_id, exc)
            else:
                log.info("job %d: outcome recorded", job_id)
            del self._unrecorded[job_id]

    def _fail(self, job: Job, error: str, *, retry: bool) -> None:
        retry_at = self.retry.retry_at(job.attempts, time.time()) if retry else None
        updated = self.store.fail(job.id, error, retry_at=retry_at, owner=self.node)
        if updated.status is JobStatus.QUEUED:
            log.warning(
                "job %d failed (attempt %d/%d), retry in %.0f s: %s",
                job.id, job.attempts, job.max_attempts, updated.not_before - time.time(), error,
            )
        else:
            log.error("job %d failed: %s", job.id, error)
            self._notify(updated)

    def _quarantine(self, job: Job, reason: str) -> None:
        """Move a slide the pipeline refused as bad input aside, with the reason; never delete it.

        Received DICOM stays in storage (it is already ours and the failed job names it)."""
        try:
            inp = self.store.get_input(job.input_id)
        except OncoAgentError as exc:
            log.error("job %d: cannot look up its input for quarantine: %s", job.id, exc)
            return
        if inp.kind is not InputKind.SLIDE or not inp.path.is_file():
            return
        try:
            target = move_to_quarantine(inp.path, self.paths.quarantine, f"job {job.id}: {reason}")
        except OSError as exc:
            log.error("job %d: could not move %s to quarantine: %s", job.id, inp.path, exc)
            return
        log.warning("job %d: %s moved to quarantine as %s", job.id, inp.path.name, target.name)

    def _notify(self, job: Job) -> None:
        if self.on_finished is None:
            return
        try:
            self.on_finished(job)
        except OncoAgentError as exc:
            log.error("job %d: after-finish hook failed: %s", job.id, exc)

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


def node_name(settings: Settings) -> str:
    """This daemon's name on its job claims: ``executor.node``, else ``<host name>:<data dir>``."""
    return settings.executor.node or f"{socket.gethostname()}:{settings.data_dir.resolve()}"


def deliveries_for(destinations: Iterable[Destination], result_dir: Path,
                   outputs: Iterable[Mapping[str, str]]) -> list[Delivery]:
    """The outbox entries of a result's DICOM objects (``dicom_outputs`` of its result.json): one per object
    and destination that takes results."""
    targets = [d.name for d in destinations if d.send_results]
    return [Delivery(name, result_dir / o["file"], o["sop_class_uid"], o["sop_instance_uid"])
            for o in outputs for name in targets]


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
