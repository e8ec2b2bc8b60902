"""Real pipeline jobs in a test: inputs taken in by the daemon's own intake classes, jobs run the way the
executor runs them (queue, claim, run, record)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from agent.config import Settings
from agent.ingest.dicom_files import DicomFileIntake
from agent.ingest.knobs import IngestKnobs
from agent.ingest.slides import SlideIntake
from agent.job_outcomes import JobOutcomes
from agent.records import Input, Job, JobStatus
from agent.store import Store
from agent.worker import run_payload
from pipelines import registry


@contextmanager
def data_dir_store(data_dir: Path) -> Iterator[tuple[Settings, Store]]:
    """The default settings over ``data_dir`` (its folders made) and its store, open while the block runs."""
    settings = Settings.model_validate({"data_dir": str(data_dir)})
    settings.paths.create()
    store = Store.open(settings.database_url)
    try:
        yield settings, store
    finally:
        store.close()


def run_job(store: Store, settings: Settings, input_id: int, pipeline: str) -> Job:
    """Queue, claim, run and record a job as the executor does; the job once it succeeded."""
    queued, _ = store.enqueue(input_id, pipeline, registry.get(pipeline).version)
    outcomes = JobOutcomes(store, settings)
    job = outcomes.claim([])
    assert job is not None and job.id == queued.id
    outcome = run_payload(outcomes.payload(job, settings.paths.results / ".staging"), {})
    assert outcome["ok"], outcome.get("error")
    outcomes.record(job, outcome)
    done = store.get_job(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.result_path is not None
    return done


def take_mr_series(store: Store, settings: Settings, files: Sequence[Path], series_uid: str) -> Input:
    """Take a written MR series in through the daemon's DICOM file intake; its input."""
    intake = DicomFileIntake(store, settings.paths)
    for path in files:
        intake.take(path, consumed=False)
    found = store.find_input(series_uid)
    assert found is not None
    return found


def take_slide(store: Store, settings: Settings, path: Path) -> Input:
    """Take a slide file in through the daemon's slide intake (a sidecar beside it is read); its input."""
    key = SlideIntake(store, settings.paths).take(path, False, IngestKnobs.from_settings(settings.ingest), path.name)
    found = store.find_input(key)
    assert found is not None
    return found
