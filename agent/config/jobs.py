"""The ``executor`` section (local worker processes, their GPUs, retries) and the ``scheduler`` section (cron
batches)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, StrictInt, field_validator

from agent.config.section import Section


class ExecutorSettings(Section):
    workers: int = Field(default=2, ge=1, le=64)
    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff_base_s: float = Field(default=5.0, gt=0)
    backoff_max_s: float = Field(default=600.0, gt=0)
    job_timeout_s: float = Field(default=3600.0, gt=0)
    shutdown_grace_s: float = Field(default=5.0, ge=0, le=8, description="wait for running jobs on SIGTERM")
    poll_interval_s: float = Field(default=0.5, gt=0, le=10)
    node: str = Field(
        default="", max_length=200,
        description="this daemon's name among daemons sharing one store (its job claims carry it); unique per "
                    "daemon. Empty: <host name>:<data dir>",
    )
    lease_s: float = Field(
        default=60.0, ge=5, le=3600,
        description="a claimed job stays this daemon's this long unless renewed (every third of it while it runs);"
                    " a daemon that died loses its running jobs to the others once their leases expire",
    )
    gpus: list[Annotated[StrictInt, Field(ge=0)]] = Field(
        default_factory=list,
        description="GPU indices (as nvidia-smi numbers them); worker i is pinned to gpus[i % len(gpus)] with "
                    "CUDA_VISIBLE_DEVICES. Empty: no pinning",
    )

    @field_validator("gpus")
    @classmethod
    def _distinct_gpu_indices(cls, value: list[int]) -> list[int]:
        repeated = sorted({g for g in value if value.count(g) > 1})
        if repeated:
            raise ValueError(f"each GPU once (repeated: {', '.join(map(str, repeated))})")
        return value


class BatchSettings(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    cron: str = Field(description="crontab expression, e.g. '0 2 * * *' for 02:00 nightly")
    paths: list[Path]
    reprocess: bool = Field(default=False, description="run again even where a result exists")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from agent.crontab import crontab_trigger  # apscheduler only where a batch is configured

        try:
            crontab_trigger(value)
        except ValueError as exc:
            raise ValueError(f"a crontab expression with five fields ({exc})") from exc
        return value


class SchedulerSettings(Section):
    batches: list[BatchSettings] = Field(default_factory=list)
