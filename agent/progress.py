"""How far a job is, as people read it: the share done and a linear estimate of the time left, from the progress
its pipeline reports (a :class:`~agent.records.Job`'s ``progress_*`` fields). ``oncoagent jobs`` and the web
worklist both show it this way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.records import Job, JobStatus


@dataclass(frozen=True)
class JobProgress:
    done: int
    total: int
    stage: str | None  # what is counted or done: "tiles", an MR series' stage
    at: float  # when the job reported it
    percent: int  # 0-100, rounded down: 100 only when done
    eta_s: float | None  # seconds left while the job runs (None before a first unit is done, or once it ended)

    def as_dict(self) -> dict[str, Any]:
        return {"done": self.done, "total": self.total, "stage": self.stage, "at": self.at, "percent": self.percent,
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1)}

    def text(self) -> str:
        """``45 % (tiles 450/1000), about 2 min 05 s left``."""
        what = f"{self.stage} " if self.stage else ""
        done = self.eta_s is None or self.done >= self.total  # the pipeline's part is done (its reports may not)
        left = "" if done else f", about {duration_text(self.eta_s or 0.0)} left"
        return f"{self.percent} % ({what}{self.done}/{self.total}){left}"


def duration_text(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``: an ETA or a wait as people read it."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def eta_s(started_at: float | None, at: float | None, done: int, total: int, now: float) -> float | None:
    """Seconds left, linearly: the time from the start to the last report per unit done, times the units left,
    less the time since that report (never below 0). None before a first unit is done."""
    if started_at is None or at is None or done <= 0 or total <= 0 or at < started_at:
        return None
    if done >= total:
        return 0.0
    return max(0.0, (at - started_at) * (total - done) / done - max(0.0, now - at))


def job_progress(job: Job, now: float) -> JobProgress | None:
    """The job's progress as of ``now``; None when it has reported none (not started yet, or it ran before
    progress was recorded). The estimate only while it runs."""
    if job.progress_done is None or job.progress_total is None or job.progress_at is None:
        return None
    done, total = job.progress_done, job.progress_total
    percent = 100 if total <= 0 else min(100, 100 * done // total)
    eta = eta_s(job.started_at, job.progress_at, done, total, now) if job.status is JobStatus.RUNNING else None
    return JobProgress(done, total, job.progress_stage, job.progress_at, percent, eta)
