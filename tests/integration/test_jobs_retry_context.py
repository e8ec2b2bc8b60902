"""``oncoagent jobs retry`` of a slide job kept for lack of context, run as a user runs it on a data directory:
a sidecar written since gives the slide its context; without one, the context stored meanwhile (attached on the
admin page) stays instead of being wiped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agent.records import InputKind, JobStatus
from agent.store import Store
from tests.conftest import REPO


def retry(data_dir: Path, job_id: int) -> None:
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "--data-dir", str(data_dir), "jobs", "retry",
                           str(job_id)], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 0 and f"job {job_id} queued again" in proc.stdout, proc.stderr


def kept_without_context(store: Store, input_id: int) -> int:
    job = store.enqueue(input_id, "wsi-ctc", "1", force=True)[0].id
    claimed = store.claim()
    assert claimed is not None and claimed.id == job
    store.succeed(job, Path("/results") / str(job), {}, [], unsent_reason="no patient context")
    return job


def test_a_retry_takes_a_sidecars_context_and_keeps_the_webs_without_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    slide = tmp_path / "S-3.tiff"
    slide.write_bytes(b"not read by a retry")
    store = Store.open(f"sqlite:///{data_dir / 'oncoagent.db'}")
    try:
        inp, _ = store.upsert_file_input(InputKind.SLIDE, slide, "f", {"file_name": slide.name})
        job = kept_without_context(store, inp.id)
        store.set_context(inp.id, {"patient_id": "P-3", "accession_number": "ACC-3"}, "web")
        retry(data_dir, job)
        assert store.get_job(job).status is JobStatus.QUEUED
        kept = store.get_input(inp.id).attrs
        assert (kept["context"], kept["context_source"]) == ({"patient_id": "P-3", "accession_number": "ACC-3"},
                                                             "web")

        job = kept_without_context(store, inp.id)
        slide.with_name(slide.name + ".json").write_text(json.dumps({"patient_id": "P-4", "accession": "ACC-4"}))
        retry(data_dir, job)
        taken = store.get_input(inp.id).attrs
        assert (taken["context"], taken["context_source"]) == ({"patient_id": "P-4", "accession": "ACC-4"},
                                                               "sidecar")
    finally:
        store.close()
