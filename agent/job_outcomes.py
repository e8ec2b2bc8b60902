"""What every executor backend does around running a job: describe it to the process that runs it, keep its
claim, and record what came back.

A backend (local worker processes in :mod:`agent.executor`, a Dask cluster in :mod:`agent.dask_executor`)
claims a job, sends :meth:`JobOutcomes.payload` to wherever it runs (:func:`agent.worker.run_payload` turns it
into an outcome there), and hands the outcome to :meth:`JobOutcomes.record`. Recording succeeds once per job:
an outcome for a job whose lease this daemon lost is refused (:class:`~agent.errors.LeaseLost`), and one the
store refused (a full disk) is kept and tried again each loop (:meth:`JobOutcomes.record_again`).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from agent import failpoints
from agent.batch_gate import BatchGate
from agent.batch_summary import summarise_after
from agent.batch_verdicts import judge
from agent.config import Destination, Priority, Settings
from agent.errors import LeaseLost, OncoAgentError
from agent.records import Delivery, InputKind, Job, JobStatus
from agent.store import Store
from agent.worker import Failure
from pipelines.durable import move_to_quarantine
from pipelines.retry import RetryStrategy

log = logging.getLogger(__name__)

JobListener = Callable[[Job], None]


class JobOutcomes:
    def __init__(self, store: Store, settings: Settings, on_finished: JobListener | None = None) -> None:
        self.store = store
        self.settings = settings
        self.paths = settings.paths
        cfg = settings.executor
        self.retry = RetryStrategy(cfg.max_attempts, cfg.backoff_base_s, cfg.backoff_max_s)
        self.on_finished = on_finished
        self.node = node_name(settings)
        self._unrecorded: dict[int, Callable[[], None]] = {}  # job id -> recording its outcome, to try again
        self._renew_at = 0.0  # monotonic time of the next lease renewal
        self.claim_failing = False  # the store refuses claims (a full disk): the loop waits a poll interval
        self.batch = BatchGate.of(cfg)

    # ------------------------------------------------------------------------------------- before

    def claim(self, running: Iterable[Job]) -> Job | None:
        """The next job to run, claimed under this daemon's name; None when there is none, or when the store
        refuses (logged once per outage, not once per loop). A batch job only while fewer than
        ``executor.batch_workers`` of the ``running`` jobs are batch jobs, inside ``executor.batch_window``."""
        try:
            job = self.store.claim(owner=self.node, lease_s=self.settings.executor.lease_s,
                                   max_priority=self._max_priority(running))
        except OncoAgentError as exc:
            if not self.claim_failing:
                log.error("cannot claim a job (will keep trying): %s", exc)
            self.claim_failing = True
            return None
        if self.claim_failing:
            log.info("claiming jobs works again")
            self.claim_failing = False
        return job

    def next_due(self, running: Iterable[Job]) -> float | None:
        """When the next job this daemon may claim (see :meth:`claim`) becomes runnable."""
        return self.store.next_due(self._max_priority(running))

    def _max_priority(self, running: Iterable[Job]) -> Priority:
        return self.batch.max_priority(sum(1 for j in running if j.priority is Priority.BATCH), time.time())

    def payload(self, job: Job, staging_dir: Path) -> dict[str, Any]:
        """The job as the process that runs it needs it (plain data: it crosses a pipe or the network)."""
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
            "staging_dir": str(staging_dir),
            "previous_result": str(previous.result_path) if previous and previous.result_path else None,
            "previous_job_id": previous.id if previous else None,
            "fingerprint": job.input_fingerprint,
            "data_dir": str(self.settings.data_dir),  # its site-validation records decide the outputs' mark
        }

    def result_dir(self, job_id: int) -> Path:
        return self.paths.results / f"job-{job_id:06d}"

    # ------------------------------------------------------------------------------------- during

    @property
    def renew_at(self) -> float:
        """The monotonic time of the next lease renewal (a backend's loop wakes up for it)."""
        return self._renew_at

    def renew(self, running: Collection[int]) -> None:
        """Keep the claims of running jobs (every third of the lease; a call before then does nothing); a job
        this daemon no longer holds (its lease expired, another daemon claimed it) runs on, but its outcome
        will not be recorded."""
        if time.monotonic() < self._renew_at:
            return
        lease_s = self.settings.executor.lease_s
        try:
            held = set(self.store.renew_leases(self.node, sorted(running), time.time() + lease_s))
        except OncoAgentError as exc:
            log.error("cannot renew the leases of running jobs (will keep trying): %s", exc)
            return
        for job_id in sorted(set(running) - held):
            log.error("job %d is no longer this daemon's (%s): its lease expired and it was claimed again",
                      job_id, self.node)
        self._renew_at = time.monotonic() + lease_s / 3

    def progress(self, job_id: int, done: int, total: int, stage: str) -> None:
        """Record how far a running job is (its process sends it at most about once a second). A write the store
        refuses is dropped: progress must never hold up or fail the job."""
        try:
            self.store.report_progress(job_id, done, total, stage, time.time())
        except OncoAgentError as exc:
            log.debug("job %d: progress not recorded: %s", job_id, exc)

    # ------------------------------------------------------------------------------------- after

    @property
    def has_unrecorded(self) -> bool:
        return bool(self._unrecorded)

    def record(self, job: Job, outcome: Mapping[str, Any]) -> None:
        """Record the outcome a worker sent for ``job`` (see :func:`agent.worker.run_payload`)."""
        if outcome["ok"]:
            result_dir = Path(outcome["result_dir"])
            deliveries = deliveries_for(self.settings.destinations, result_dir, outcome.get("dicom_outputs") or [])
            self._recorded(job, "success", lambda: self._succeed(job, result_dir, outcome, deliveries))
        else:
            self.record_failure(job, outcome["error"], retry=outcome["kind"] == Failure.TRANSIENT)
            if outcome["kind"] == Failure.INPUT:
                self._quarantine(job, outcome["error"])

    def record_failure(self, job: Job, error: str, *, retry: bool) -> None:
        self._recorded(job, "failure", lambda: self._fail(job, error, retry=retry))

    def record_again(self) -> None:
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

    def _succeed(self, job: Job, result_dir: Path, outcome: Mapping[str, Any], deliveries: list[Delivery]) -> None:
        judged = judge(self.store, job, outcome, deliveries)
        done = self.store.succeed(job.id, result_dir, outcome["summary"], outcome["models"], judged.deliveries,
                                  outcome.get("unsent_reason"), owner=self.node,
                                  review=judged.review)
        failpoints.reached("executor.after-success")
        if judged.deliveries:
            log.info("job %d succeeded; %d object(s) for %s", job.id, len(judged.deliveries),
                     ", ".join(sorted({d.destination for d in judged.deliveries})))
        else:
            log.info("job %d succeeded", job.id)
        if done.unsent_reason:
            log.warning("job %d: results not sent: %s", job.id, done.unsent_reason)
        self._notify(done)

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
        summarise_after(self.store, self.settings, job)  # the run's summary, when this was its last job
        if self.on_finished is None:
            return
        try:
            self.on_finished(job)
        except OncoAgentError as exc:
            log.error("job %d: after-finish hook failed: %s", job.id, exc)


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
