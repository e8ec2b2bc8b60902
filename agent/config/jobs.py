"""The ``executor`` section: local worker processes or a Dask cluster, their GPUs, retries, leases, and how
much of it batch work may hold (the batches themselves: :mod:`agent.config.batches`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt, field_validator, model_validator

from agent.config.section import Section


class DaskSettings(Section):
    scheduler: str = Field(
        default="", max_length=500,
        description="address of the dask.distributed scheduler, e.g. tcp://10.0.0.5:8786 (executor.backend: dask)",
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, le=300,
                                     description="how long one attempt to reach the scheduler may take")
    gpu_pipelines: list[str] = Field(
        default_factory=lambda: ["wsi-ctc"],  # the MRI pipeline runs on the CPU
        description="pipelines whose tasks ask for one unit of gpu_resource, where any worker declares it",
    )
    gpu_resource: str = Field(default="GPU", pattern=r"^[A-Za-z0-9_.-]+$",
                              description="the resource GPU workers declare (dask worker --resources GPU=1)")


class ExecutorSettings(Section):
    backend: Literal["local", "dask"] = Field(
        default="local",
        description="local: worker processes of this daemon; dask: tasks on a dask.distributed cluster",
    )
    dask: DaskSettings = Field(default_factory=DaskSettings)
    workers: int = Field(default=2, ge=1, le=64,
                         description="local worker processes (backend local); unused with backend dask")
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
    batch_workers: int | None = Field(
        default=None, ge=1, le=64,
        description="how many workers (or Dask tasks) batch jobs may hold at once; the rest stay free for new "
                    "work. Empty: all",
    )
    batch_window: str | None = Field(
        default=None,
        description="local hours in which batch jobs start, HH:MM-HH:MM (20:00-06:00 spans midnight); outside it "
                    "queued batch jobs wait. Empty: any time",
    )
    gpus: list[Annotated[StrictInt, Field(ge=0)]] = Field(
        default_factory=list,
        description="GPU indices (as nvidia-smi numbers them); worker i is pinned to gpus[i % len(gpus)] with "
                    "CUDA_VISIBLE_DEVICES. Empty: no pinning",
    )

    @model_validator(mode="after")
    def _dask_needs_a_scheduler(self) -> ExecutorSettings:
        if self.backend == "dask" and not self.dask.scheduler:
            raise ValueError("executor.backend dask needs executor.dask.scheduler (the scheduler's address)")
        return self

    @field_validator("batch_window")
    @classmethod
    def _valid_window(cls, value: str | None) -> str | None:
        if value:
            from agent.batch_gate import window_minutes

            window_minutes(value)
        return value or None

    @field_validator("gpus")
    @classmethod
    def _distinct_gpu_indices(cls, value: list[int]) -> list[int]:
        repeated = sorted({g for g in value if value.count(g) > 1})
        if repeated:
            raise ValueError(f"each GPU once (repeated: {', '.join(map(str, repeated))})")
        return value
