"""What ``oncoagent batch`` shows while it runs by hand: a bar over the files it reads and the inputs it queues
(:class:`ShownRun`, on a terminal), and with ``--wait`` its run's jobs followed until every one has ended
(:func:`wait_for_run`): a bar of jobs done with the run's ETA on a terminal, a line every ten seconds otherwise,
then the failures with their reasons. The jobs are the daemon's: stopping the wait (Ctrl-C, ``--wait-timeout``)
leaves them running."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TextIO

from agent.batch import HeldRun
from agent.config import Settings
from agent.errors import EXIT_FAILED
from agent.ingest import files_under
from agent.progress import duration_text
from agent.records import BatchRun, BatchRunProgress, JobStatus
from agent.store import Store

POLL_S = 1.0  # how often the run's progress is read from the store
LINE_EVERY_S = 10.0  # how often a progress line is written where there is no terminal to draw a bar on
INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C


class ShownRun(HeldRun):
    """A held run that draws on ``out`` how far it has read its paths (one tick per file, over the files under
    them, counted first) and how many inputs it has queued. It sees the run's steps through the calls
    :func:`agent.batch.enqueue_paths` makes on the run it holds: ``keep`` before each file it reads, ``take``
    for each input it routes, ``queued`` for each job it queued. :meth:`close` ends the bars."""

    def __init__(self, store: Store, run: BatchRun, owner: str, lease_s: float, out: TextIO) -> None:
        from tqdm import tqdm

        super().__init__(store, run, owner, lease_s)
        self._out = out
        self._logs = _logs_above_bars()
        files = sum(1 for root in run.paths if root.exists()
                    for _ in ([root] if root.is_file() else files_under(root)))
        self._reading: Any = tqdm(total=files, desc="reading", unit="file", file=out)
        self._queueing: Any = None

    def keep(self) -> None:
        self._reading.update()
        super().keep()

    def take(self, input_id: int) -> bool:
        if self._queueing is None:
            from tqdm import tqdm

            self._reading.close()
            self._queueing = tqdm(desc="queueing", unit="input", file=self._out)
        return super().take(input_id)

    def queued(self, input_id: int, job_id: int) -> None:
        super().queued(input_id, job_id)
        self._queueing.update()

    def close(self) -> None:
        self._reading.close()
        if self._queueing is not None:
            self._queueing.close()
        self._logs.close()


@dataclass(frozen=True)
class Followed:
    progress: BatchRunProgress
    waited_s: float
    timed_out: bool


def follow(store: Store, run_id: int, workers: int, *, out: TextIO, tty: bool, timeout_s: float | None,
           poll_s: float = POLL_S, line_every_s: float = LINE_EVERY_S,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Followed:
    """Read the run's progress every ``poll_s`` until all its jobs have ended, or ``timeout_s`` has passed;
    show it on ``out`` as a bar (``tty``) or as a line every ``line_every_s``."""
    began = clock()
    progress = store.batch_run_progress(run_id)
    bar = _JobsBar(run_id, progress.total, out) if tty else None
    next_line = began
    try:
        while True:
            now = clock()
            eta = progress.eta_s(workers)
            if bar is not None:
                bar.show(progress, eta)
            elif now >= next_line:
                print(f"batch run {run_id}: {_counts(progress)}, ETA {_eta(eta, progress)}", file=out, flush=True)
                next_line = now + line_every_s
            if progress.finished:
                return Followed(progress, now - began, False)
            if timeout_s is not None and now - began >= timeout_s:
                return Followed(progress, now - began, True)
            sleep(poll_s)
            progress = store.batch_run_progress(run_id)
    finally:
        if bar is not None:
            bar.close()


class _JobsBar:
    def __init__(self, run_id: int, total: int, out: TextIO) -> None:
        from tqdm import tqdm

        self._logs = _logs_above_bars()
        self._bar: Any = tqdm(total=total, desc=f"batch run {run_id}", unit="job", file=out,
                              bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} jobs [{elapsed}{postfix}]")

    def show(self, progress: BatchRunProgress, eta: float | None) -> None:
        self._bar.n = progress.done
        self._bar.set_postfix_str(f"{progress.failed} failed, ETA {_eta(eta, progress)}", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()
        self._logs.close()


def _logs_above_bars() -> ExitStack:
    """Send the log records the console handler would write through tqdm, above the bars, until closed."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    stack = ExitStack()
    stack.enter_context(logging_redirect_tqdm())
    return stack


def wait_for_run(settings: Settings, run_id: int, timeout_s: float | None) -> int:
    """``oncoagent batch --wait``: follow the run until its jobs have ended; print how they ended and each
    failure with its reason. 0 when every job succeeded, EXIT_FAILED otherwise or when ``timeout_s`` passed
    first, 130 when stopped by Ctrl-C (the jobs go on in the daemon either way)."""
    store = Store.open(settings.database_url)
    try:
        followed = follow(store, run_id, settings.executor.workers, out=sys.stderr, tty=sys.stderr.isatty(),
                          timeout_s=timeout_s)
    except KeyboardInterrupt:
        print(f"\noncoagent: stopped waiting; the jobs go on in the daemon (oncoagent batch show {run_id})",
              file=sys.stderr)
        return INTERRUPTED
    finally:
        store.close()
    progress = followed.progress
    if followed.timed_out:
        print(f"oncoagent: gave up waiting after {duration_text(followed.waited_s)} (--wait-timeout): "
              f"{_counts(progress)}; the rest go on in the daemon (oncoagent batch show {run_id})", file=sys.stderr)
        return EXIT_FAILED
    print(f"batch run {run_id}: {_counts(progress)} after {duration_text(followed.waited_s)}")
    for failure in progress.failures:
        print(f"FAILED  job {failure.job_id}  {failure.input_path}: {failure.error or 'no reason recorded'}")
    return 0 if progress.jobs.get(JobStatus.SUCCEEDED, 0) == progress.total else EXIT_FAILED


def _counts(progress: BatchRunProgress) -> str:
    ended = ", ".join(f"{progress.jobs[status]} {status.value}" for status in JobStatus
                      if status.finished and progress.jobs.get(status))
    return f"{progress.done}/{progress.total} job(s) done" + (f" ({ended})" if ended else "")


def _eta(eta: float | None, progress: BatchRunProgress) -> str:
    if progress.done == progress.total:
        return "-"
    return "unknown" if eta is None else duration_text(eta)
