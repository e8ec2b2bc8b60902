"""Frozen records the store hands out: inputs (series, slides), jobs and outbox entries.

:class:`Instance` (a received DICOM instance) is the DICOM node's record, defined in :mod:`dicom_node.records`
and re-exported here; the store records it. :class:`Input` and :class:`OutboxItem` satisfy the DICOM node's
protocols (:class:`dicom_node.assembly.SeriesProgress`, :class:`dicom_node.records.OutboxEntry`) structurally.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from agent.config import Priority
from dicom_node import assembly
from dicom_node.records import Instance

__all__ = [
    "BatchRun",
    "BatchRunFailure",
    "BatchRunProgress",
    "BatchRunStatus",
    "Delivery",
    "Input",
    "InputKind",
    "InputState",
    "Instance",
    "Job",
    "JobStatus",
    "OutboxItem",
    "OutboxStatus",
]


class InputKind(StrEnum):
    DICOM_SERIES = assembly.DICOM_SERIES  # "dicom-series": the DICOM node judges when such an input is complete
    SLIDE = "slide"


class InputState(StrEnum):
    RECEIVING = "receiving"  # instances still arriving / file still settling
    ROUTED = "routed"  # a job was queued for it
    IGNORED = "ignored"  # no routing rule matched; reason says why


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class Input:
    """One unit of work as the router sees it: a DICOM series or a slide file."""

    id: int
    kind: InputKind
    key: str  # series instance UID, or the slide's resolved path
    path: Path  # series folder under storage/, or the slide file
    fingerprint: str  # changes when the content changes (new instance, rewritten file)
    attrs: dict[str, Any]  # DICOM keywords of the first instance, or file facts
    instance_count: int
    state: InputState
    reason: str | None
    created_at: float
    updated_at: float
    study_uid: str | None = None
    series_uid: str | None = None

    @property
    def uids(self) -> dict[str, str]:
        out = {}
        if self.study_uid:
            out["study_uid"] = self.study_uid
        if self.series_uid:
            out["series_uid"] = self.series_uid
        return out


@dataclass(frozen=True)
class Job:
    id: int
    input_id: int
    pipeline: str
    pipeline_version: str
    input_fingerprint: str
    status: JobStatus
    priority: Priority
    attempts: int
    max_attempts: int
    last_error: str | None
    created_at: float
    updated_at: float
    not_before: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    rule: str | None = None
    result_path: Path | None = None
    models: list[dict[str, str]] = field(default_factory=list)
    unsent_reason: str | None = None  # succeeded, but its findings were not made for PACS (no patient context)
    claimed_by: str | None = None  # the daemon (executor.node) running it, or that ran it last
    lease_until: float | None = None  # while running: the claim holds until then unless renewed
    # How far its latest attempt got (agent.progress reads them): units done of total (a slide's tiles, an MR
    # series' stages), what it was doing, and when it said so. Cleared by a claim, kept when the job ends.
    progress_done: int | None = None
    progress_total: int | None = None
    progress_stage: str | None = None
    progress_at: float | None = None

    @property
    def ready(self) -> bool:
        return self.status is JobStatus.QUEUED and self.not_before <= time.time()


@dataclass(frozen=True)
class Delivery:
    """A DICOM object of a job's result for one destination: becomes an outbox entry with the job's success."""

    destination: str
    path: Path
    sop_class_uid: str
    sop_instance_uid: str


class OutboxStatus(StrEnum):
    PENDING = "pending"  # waiting to be sent (or for its next attempt)
    SENT = "sent"  # the destination answered success
    FAILED = "failed"  # refused for good (SOP class not accepted, failure status) or out of attempts
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class OutboxItem:
    id: int
    job_id: int | None
    destination: str
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    status: OutboxStatus
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: float
    created_at: float
    updated_at: float
    sent_at: float | None
    note: str | None = None
    claimed_by: str | None = None  # the daemon whose sender took it for a round, until lease_until
    lease_until: float | None = None


class BatchRunStatus(StrEnum):
    RUNNING = "running"  # its holder is taking its inputs and queueing their jobs
    DONE = "done"  # every input under its paths was taken (its jobs may still run: see BatchRunProgress)
    FAILED = "failed"  # it stopped with an error (a path missing or unreadable)
    INTERRUPTED = "interrupted"  # its holder stopped or died before it was done: the next holder resumes it


MANUAL_BATCH = "(manual)"
"""The batch name of runs started by hand (``oncoagent batch PATHS``); configured names cannot hold brackets."""


@dataclass(frozen=True)
class BatchRun:
    """One run of a batch for one scheduled slot (a hand-run batch: the time it started)."""

    id: int
    batch: str
    slot: float
    status: BatchRunStatus
    paths: tuple[Path, ...]
    reprocess: bool
    owner: str | None
    lease_until: float | None
    started_at: float
    finished_at: float | None
    resumed: int
    error: str | None
    options: dict[str, Any] = field(default_factory=dict)  # sources, send_results, compare (BatchSettings.options)


class Verdict(StrEnum):
    """How a batch's result for an input compares with the input's previous result."""

    NEW = "new"  # the input had no previous result
    CONCORDANT = "concordant"  # the same findings: it supersedes the previous result quietly
    CHANGED = "changed"  # findings moved, within the batch's thresholds: concordant too, with what moved
    DISCORDANT = "discordant"  # a finding changed beyond them: listed for review, with the reasons

    @property
    def concordant(self) -> bool:
        return self in (Verdict.CONCORDANT, Verdict.CHANGED)


@dataclass(frozen=True)
class BatchReview:
    """What a batch job's success is compared with: the run that queued it and the input's previous result."""

    run_id: int
    input_id: int
    batch: str
    options: dict[str, Any]
    previous: dict[str, Any] | None  # the figures of the previous result (agent.comparison.figures), or None


@dataclass(frozen=True)
class BatchVerdict:
    """A batch job's result compared: recorded with the job's success."""

    review: BatchReview
    verdict: Verdict
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchComparison:
    """A result a run compared: its verdict and, when discordant, why."""

    input_id: int
    job_id: int
    input_path: Path
    verdict: Verdict
    reasons: tuple[str, ...]
    sent: bool  # its DICOM objects went to the outbox (send_results)


@dataclass(frozen=True)
class BatchRunFailure:
    job_id: int
    input_id: int
    input_path: Path
    error: str | None


@dataclass(frozen=True)
class BatchRunProgress:
    """A run and how far its jobs are, read from the jobs table: ``inputs`` taken, ``jobs`` by status."""

    run: BatchRun
    inputs: int
    jobs: dict[JobStatus, int]
    mean_job_s: float | None  # the mean duration of its finished jobs (None before the first)
    failures: tuple[BatchRunFailure, ...] = ()
    verdicts: dict[Verdict, int] = field(default_factory=dict)  # results compared so far, by verdict
    discordant: tuple[BatchComparison, ...] = ()  # with progress(): each discordant result and its reasons

    @property
    def total(self) -> int:
        return sum(self.jobs.values())

    @property
    def done(self) -> int:
        return sum(n for status, n in self.jobs.items() if status.finished)

    @property
    def failed(self) -> int:
        return self.jobs.get(JobStatus.FAILED, 0)

    @property
    def changed(self) -> int:
        """Results whose findings moved from the previous result's: within the thresholds or beyond them."""
        return self.verdicts.get(Verdict.CHANGED, 0) + self.verdicts.get(Verdict.DISCORDANT, 0)

    @property
    def finished(self) -> bool:
        """Every input taken and every job of it ended."""
        return self.run.status is not BatchRunStatus.RUNNING and self.done == self.total

    def eta_s(self, workers: int) -> float | None:
        """Seconds until its queued and running jobs are done, from the mean duration of those that finished,
        with ``workers`` of them at a time (None while none has finished)."""
        if self.mean_job_s is None:
            return None
        return (self.total - self.done) * self.mean_job_s / max(1, workers)
