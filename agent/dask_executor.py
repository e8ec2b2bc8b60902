"""Runs queued jobs as tasks on a dask.distributed cluster (``executor.backend: dask``).

The daemon stays the one that claims jobs and records outcomes; a job's pipeline runs on a Dask worker
(:func:`agent.dask_task.run_job`) that reads the input and writes the result folder on the file system they
share (staged under ``results/.staging``, renamed into place when complete). The daemon keeps as many jobs in
flight as the cluster has worker threads; a task's progress comes back as Dask events on this daemon's topic
(:func:`agent.dask_task.run_job` sends them), recorded as a local worker's are. Pipelines named in
``executor.dask.gpu_pipelines`` ask for one unit of ``executor.dask.gpu_resource`` when any worker declares it
(``dask worker --resources GPU=1``, one worker per GPU with ``CUDA_VISIBLE_DEVICES`` set), so they run on GPU
workers only.

What happens when something dies:
- A worker, mid-job: the scheduler runs the task again on another worker (Dask's own rescheduling; a task that
  killed ``distributed.scheduler.allowed-failures`` workers fails as ``KilledWorker``, retried like a crashed
  local worker). The cut-off run's staging folder is removed by the next run; the store records one outcome.
- The daemon (SIGKILL, a lost host): each task is published on the scheduler under a name that carries the
  daemon's node name, job id and attempt, so it runs on without a client. The restarted daemon reattaches to
  the tasks of jobs still claimed under its name, records their outcomes when they end (at once, if they ended
  meanwhile) and re-queues only the running jobs it has no task for: no job runs twice to completion.
- The daemon's stop (SIGTERM): running tasks get ``executor.shutdown_grace_s``, then they are cancelled and
  unpublished, their jobs re-queued: nothing of this daemon is left on the cluster.
- The scheduler: while it cannot be reached nothing is claimed, and the daemon keeps trying to connect; tasks
  it lost (a scheduler restart) are retried.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any

from distributed import Client, Future, KilledWorker

from agent.config import Settings
from agent.dask_task import run_job
from agent.errors import OncoAgentError
from agent.job_outcomes import JobListener, JobOutcomes
from agent.records import Job, JobStatus
from agent.store import Store

log = logging.getLogger(__name__)

CLUSTER_REFRESH_S = 2.0  # how often the cluster's worker threads and resources are looked up


@dataclass
class _Task:
    job: Job
    future: Future[dict[str, Any]]
    name: str  # its key, and the name it is published under
    started: float


class DaskExecutor:
    def __init__(self, store: Store, settings: Settings, on_finished: JobListener | None = None) -> None:
        self.store = store
        self.settings = settings
        self.cfg = settings.executor.dask
        self.outcomes = JobOutcomes(store, settings, on_finished)
        self.node = self.outcomes.node
        # Task names: "oncoagent-<node digest>-job<id>-a<attempt>" (a node name holds ':' and '/').
        self.prefix = f"oncoagent-{hashlib.sha256(self.node.encode()).hexdigest()[:12]}-"
        self._name = re.compile(re.escape(self.prefix) + r"job(\d+)-a(\d+)$")
        self.client: Client | None = None
        self.progress_topic = f"{self.prefix}progress"  # the Dask event topic its tasks report progress on
        # names of finished tasks, progress messages (agent.worker.progress_message), None: wake up
        self._events: queue.Queue[str | dict[str, Any] | None] = queue.Queue()
        self._stopping = False
        self._tasks: dict[int, _Task] = {}  # job id -> its task
        self._threads = 0  # worker threads in the cluster
        self._gpu_workers = 0  # workers declaring the GPU resource
        self._refresh_at = 0.0
        self._unreachable: str | None = None  # why the scheduler cannot be reached, while it cannot

    # ------------------------------------------------------------------------------------- public

    def start(self) -> None:
        self._connect()

    def wake(self) -> None:
        self._events.put(None)

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    @property
    def busy(self) -> int:
        return len(self._tasks)

    @property
    def unreachable(self) -> str | None:
        """Why the scheduler cannot be reached, while it cannot; None once connected."""
        return self._unreachable

    def run(self) -> None:
        while not self._stopping:
            self.outcomes.record_again()
            if self.client is None:
                self._connect()
            self.outcomes.renew(list(self._tasks))
            self._dispatch()
            self._wait(self._next_wait())
            self._check_timeouts()
        self._shutdown()

    # ------------------------------------------------------------------------------------- the cluster

    def _connect(self) -> None:
        """Connect to the scheduler; then take back this daemon's tasks still on it, and re-queue the jobs this
        daemon left running that have none."""
        try:
            client = Client(self.cfg.scheduler, timeout=self.cfg.connect_timeout_s, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            if self._unreachable is None:
                log.error("cannot reach the Dask scheduler at %s (will keep trying): %s", self.cfg.scheduler, reason)
            self._unreachable = reason
            return
        if self._unreachable is not None:
            log.info("the Dask scheduler at %s is reachable again", self.cfg.scheduler)
        self._unreachable = None
        self.client = client
        log.info("connected to the Dask scheduler at %s", self.cfg.scheduler)
        client.subscribe_topic(self.progress_topic, lambda event: self._events.put(event[1]))
        try:
            kept = self._reattach(client)
            requeued = self.store.requeue_running("daemon restarted after an unclean stop", owner=self.node,
                                                  keep=kept)
        except (OSError, TimeoutError, OncoAgentError) as exc:  # the scheduler went, or the store refuses
            log.error("cannot take back this daemon's tasks (will connect again): %s", exc)
            self._tasks.clear()
            self.client = None
            client.close(timeout=self.cfg.connect_timeout_s)
            return
        if requeued:
            log.warning("re-queued %d job(s) left running by an earlier unclean stop: %s", len(requeued), requeued)

    def _reattach(self, client: Client) -> list[int]:
        """Follow again the published tasks of jobs still running under this daemon's name; drop the others."""
        kept = []
        for name in client.list_datasets():
            match = self._name.match(str(name))
            if match is None:
                continue
            job_id, attempt = int(match.group(1)), int(match.group(2))
            future: Future[dict[str, Any]] = client.get_dataset(name)
            try:
                job = self.store.get_job(job_id)
            except OncoAgentError:
                job = None
            if (job is None or job.status is not JobStatus.RUNNING or job.claimed_by != self.node
                    or job.attempts != attempt or job_id in self._tasks):
                log.info("dropping Dask task %s: its job is no longer this daemon's to run", name)
                self._forget(name, future)
                continue
            log.info("job %d: reattached to its Dask task %s", job_id, name)
            self._follow(_Task(job, future, str(name), time.monotonic()))
            kept.append(job_id)
        return kept

    def _refresh_cluster(self, client: Client) -> None:
        if time.monotonic() < self._refresh_at:
            return
        self._refresh_at = time.monotonic() + CLUSTER_REFRESH_S
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
        threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
        gpus = sum(1 for w in workers.values() if (w.get("resources") or {}).get(self.cfg.gpu_resource))
        if threads != self._threads or gpus != self._gpu_workers:
            log.info("Dask cluster: %d worker(s), %d thread(s), %d with %s", len(workers), threads, gpus,
                     self.cfg.gpu_resource)
        self._threads, self._gpu_workers = threads, gpus

    # ------------------------------------------------------------------------------------- dispatch

    def _dispatch(self) -> None:
        client = self.client
        if client is None or self._stopping:
            return
        try:
            self._refresh_cluster(client)
        except (OSError, TimeoutError) as exc:
            log.error("cannot ask the Dask scheduler for its workers: %s", exc)
            return
        while len(self._tasks) < self._threads and not self._stopping:
            job = self.outcomes.claim([t.job for t in self._tasks.values()])
            if job is None:
                return
            self._submit(client, job)

    def _submit(self, client: Client, job: Job) -> None:
        try:
            payload = self.outcomes.payload(job, self.settings.paths.shared_staging)
            payload["progress_topic"] = self.progress_topic
        except (OncoAgentError, OSError) as exc:
            self.outcomes.record_failure(job, f"cannot prepare job: {exc}", retry=False)
            return
        name = f"{self.prefix}job{job.id}-a{job.attempts}"
        wants_gpu = job.pipeline in self.cfg.gpu_pipelines and self._gpu_workers > 0
        try:
            future: Future[dict[str, Any]] = client.submit(
                run_job, payload, self.settings.pipelines, list(self.settings.plugins),
                key=name, pure=False, resources={self.cfg.gpu_resource: 1} if wants_gpu else None,
            )
            client.publish_dataset(future, name=name, override=True)  # outlives this client: see the module note
        except (OSError, TimeoutError) as exc:  # the scheduler went away between the claim and the submission
            self.outcomes.record_failure(job, f"cannot submit to the Dask scheduler: {exc}", retry=True)
            return
        log.info("job %d (%s) -> Dask task %s%s", job.id, job.pipeline, name, " (GPU)" if wants_gpu else "")
        self._follow(_Task(job, future, name, time.monotonic()))

    def _follow(self, task: _Task) -> None:
        self._tasks[task.job.id] = task
        task.future.add_done_callback(lambda _: self._events.put(task.name))

    def _next_wait(self) -> float:
        wait_s = min(self.settings.executor.poll_interval_s,
                     max(0.0, self.outcomes.renew_at - time.monotonic()))
        if (self.outcomes.claim_failing or self.outcomes.has_unrecorded or self.client is None
                or len(self._tasks) >= self._threads):
            return wait_s
        due = self.outcomes.next_due([t.job for t in self._tasks.values()])
        return wait_s if due is None else min(wait_s, max(0.0, due - time.time()))

    def _wait(self, timeout: float) -> None:
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        finished = [item]
        while True:
            try:
                finished.append(self._events.get_nowait())
            except queue.Empty:
                break
        for item in finished:
            if isinstance(item, dict):
                self._progress(item)
            elif item is not None:
                self._finished(item)

    def _progress(self, message: dict[str, Any]) -> None:
        """A task's progress (:func:`agent.dask_task.run_job` sends it as a Dask event), for a job it runs."""
        job_id = message.get("job_id")
        if isinstance(job_id, int) and job_id in self._tasks:
            self.outcomes.progress(job_id, *message["progress"])

    # ------------------------------------------------------------------------------------- outcomes

    def _finished(self, name: str) -> None:
        task = next((t for t in self._tasks.values() if t.name == name), None)
        if task is None:  # recorded already (a timeout), or a wake-up from a task since dropped
            return
        del self._tasks[task.job.id]
        job, future = task.job, task.future
        if future.status == "finished":
            try:
                outcome = future.result(timeout=self.cfg.connect_timeout_s)
            except (OSError, TimeoutError, CancelledError) as exc:  # not fetched: its worker died just now
                self.outcomes.record_failure(job, f"the result of Dask task {name} was lost: {exc}", retry=True)
            else:
                if outcome.get("job_id") != job.id:
                    log.error("Dask task %s sent an outcome for another job: %r", name, outcome)
                else:
                    self.outcomes.record(job, outcome)
        elif future.status == "error":
            error = future.exception(timeout=self.cfg.connect_timeout_s)
            if isinstance(error, KilledWorker):
                reason = f"the Dask workers running the job died ({error})"
                log.error("job %d: %s", job.id, reason)
                self.outcomes.record_failure(job, reason, retry=True)
            else:
                self.outcomes.record_failure(job, f"the Dask task failed: {type(error).__name__}: {error}",
                                             retry=False)
        else:  # cancelled: the scheduler lost it (restarted) or dropped it
            self.outcomes.record_failure(job, f"the Dask cluster lost the task ({future.status})", retry=True)
        self._forget(name, future)

    def _forget(self, name: str, future: Future[Any]) -> None:
        """The task is done with: off the scheduler (cancelled where it still runs) and unpublished."""
        client = self.client
        if client is None:
            return
        try:
            if not future.done():
                client.cancel([future], force=True)
            client.unpublish_dataset(name)
        except (OSError, TimeoutError, KeyError) as exc:
            log.warning("could not remove Dask task %s from the scheduler: %s", name, exc)
        future.release()

    def _check_timeouts(self) -> None:
        limit = self.settings.executor.job_timeout_s
        for task in list(self._tasks.values()):
            if time.monotonic() - task.started > limit:
                del self._tasks[task.job.id]
                log.error("job %d exceeded the %g s timeout; cancelling Dask task %s", task.job.id, limit, task.name)
                self._forget(task.name, task.future)
                self.outcomes.record_failure(task.job, f"timed out after {limit:g} s", retry=True)

    # ------------------------------------------------------------------------------------- shutdown

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.settings.executor.shutdown_grace_s
        while self._tasks and time.monotonic() < deadline:
            self._wait(min(0.2, max(0.0, deadline - time.monotonic())))
        for task in list(self._tasks.values()):
            log.info("job %d still running at shutdown; cancelling Dask task %s, the job will be re-queued",
                     task.job.id, task.name)
            self._forget(task.name, task.future)
        self._tasks.clear()
        if self.client is None:  # never connected: what runs on the cluster is unknown, the next start looks
            return
        ids = self.store.requeue_running("daemon stopped while the job ran", owner=self.node)
        if ids:
            log.info("re-queued %d running job(s): %s", len(ids), ids)
        self.client.close(timeout=self.cfg.connect_timeout_s)
        self.client = None
