"""The executor backends behind one interface: ``executor.backend`` picks local worker processes
(:class:`agent.executor.Executor`) or a Dask cluster (:class:`agent.dask_executor.DaskExecutor`)."""

from __future__ import annotations

from typing import Protocol

from agent.config import Settings
from agent.job_outcomes import JobListener
from agent.store import Store


class JobExecutor(Protocol):
    """Claims queued jobs, runs them somewhere and records their outcomes, until stopped."""

    def start(self) -> None:
        """Prepare to run jobs; put back in the queue what this daemon left running and cannot resume."""

    def run(self) -> None:
        """The dispatch loop (on a thread of its own); returns after :meth:`stop`."""

    def wake(self) -> None:
        """New work may be queued (called from other threads)."""

    def stop(self) -> None:
        """End :meth:`run`: running jobs get ``executor.shutdown_grace_s``, then go back in the queue."""


def executor_for(store: Store, settings: Settings, on_finished: JobListener | None = None) -> JobExecutor:
    if settings.executor.backend == "dask":
        from agent.dask_executor import DaskExecutor  # dask only where it is configured

        return DaskExecutor(store, settings, on_finished)
    from agent.executor import Executor

    return Executor(store, settings, on_finished)
