"""Progress with the Dask backend: a wsi-ctc task on a real ``dask worker`` reports its tiles as Dask events,
which the daemon's executor records in the store (the worker never opens the store)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import Settings
from agent.records import InputKind, JobStatus
from pipelines.synthetic.slides import SlideSpec, write_slide
from pipelines.wsi.pipeline import WsiCtcPipeline
from tests.integration.test_executor import Running
from tests.support.dask_cluster import DaskCluster

pytestmark = pytest.mark.slow  # a cluster takes seconds to start


def test_a_slide_task_on_a_dask_worker_reports_its_tiles_to_the_store(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    slide = tmp_path / "gen" / "scan-6.tiff"
    write_slide(slide, SlideSpec(width=1536, height=1536, ctc=3, ctm=1, seed=7413))
    (tmp_path / "dask").mkdir()
    cluster = DaskCluster(tmp_path / "dask")
    running: Running | None = None
    try:
        cluster.start(workers=1)
        running = Running(make_settings(
            executor={"backend": "dask", "dask": {"scheduler": cluster.address}, "shutdown_grace_s": 1.0},
            pipelines={"wsi-ctc": {"batch_size": 4}}))
        inp, _ = running.store.upsert_file_input(InputKind.SLIDE, slide, slide.name, {})
        job, _ = running.store.enqueue(inp.id, "wsi-ctc", WsiCtcPipeline.version)
        running.executor.wake()
        done = running.wait_done(job.id, 300)
    finally:
        if running is not None:
            running.stop()
        cluster.stop()
    assert done.status is JobStatus.SUCCEEDED, done.last_error
    assert done.result_path is not None
    doc = json.loads((done.result_path / "result.json").read_text())
    assert doc["dask_worker"]  # it ran on the cluster
    assert done.progress_stage == "tiles"
    assert done.progress_total == doc["summary"]["processing"]["tiles_processed"] > 1
    assert done.progress_done == done.progress_total
