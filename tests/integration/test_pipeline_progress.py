"""Progress of real pipelines: a wsi-ctc job in a real worker reports its tiles to the store (held mid-run by a
failpoint, ``oncoagent jobs show`` prints it), mri-tumour reports its stages, and ``oncoagent process`` draws a
bar per slide on a terminal."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import Settings
from agent.records import InputKind, Job, JobStatus
from pipelines.base import PipelineInput
from pipelines.mri.pipeline import STAGES, MriTumourPipeline
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from pipelines.synthetic.slides import SlideSpec, write_slide
from pipelines.wsi.pipeline import WsiCtcPipeline
from tests.conftest import REPO
from tests.integration.test_executor import Running
from tests.support.terminal import run_on_terminal
from tests.support.waiting import wait_for

HELD_AT = "results.before-reports"  # the pipeline has returned: every tile is reported, the job still runs


def stopped_children() -> list[int]:
    """This process's children stopped by a signal (a worker that reached an armed failpoint)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "T" and int(fields[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


def test_a_slide_job_reports_its_tiles_to_the_store_and_jobs_show_prints_them_while_it_runs(
        make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    slide = tmp_path / "gen" / "scan-5.tiff"
    write_slide(slide, SlideSpec(width=1536, height=1536, ctc=3, ctm=1, seed=7411))
    state = tmp_path / "failpoints"
    state.mkdir()
    monkeypatch.setenv("OA_FAILPOINTS", HELD_AT)  # read by the worker processes the executor spawns
    monkeypatch.setenv("OA_FAILPOINTS_STATE", str(state))
    settings = make_settings(executor={"workers": 1}, pipelines={"wsi-ctc": {"batch_size": 4}})
    running = Running(settings)
    try:
        inp, _ = running.store.upsert_file_input(InputKind.SLIDE, slide, slide.name, {})
        job, _ = running.store.enqueue(inp.id, "wsi-ctc", WsiCtcPipeline.version)
        running.executor.wake()
        wait_for((state / f"{HELD_AT}.fired").exists, 300, interval=0.2, what="the worker held after the pipeline")
        def all_tiles_reported() -> Job | None:
            j = running.store.get_job(job.id)
            return j if j.progress_done is not None and j.progress_done == j.progress_total else None

        held = wait_for(all_tiles_reported, 30, what="the last tiles reported")
        assert held is not None and held.status is JobStatus.RUNNING and held.progress_stage == "tiles"
        assert held.progress_total is not None and held.progress_total > 1
        assert held.progress_at is not None and held.started_at is not None
        assert held.progress_at >= held.started_at
        config = tmp_path / "oncoagent.yaml"
        config.write_text("ingest: {inbox: false}\n")
        capsys.readouterr()
        assert main(["--config", str(config), "--data-dir", str(settings.data_dir), "jobs", "show", str(job.id)]) == 0
        shown = capsys.readouterr().out
        total = held.progress_total
        assert f"progress: 100 % (tiles {total}/{total})" in shown, shown
        assert "status: running" in shown
        (worker,) = stopped_children()
        os.kill(worker, signal.SIGCONT)
        done = running.wait_done(job.id, 120)
    finally:
        running.stop()
    assert done.status is JobStatus.SUCCEEDED, done.last_error
    assert done.result_path is not None
    processing = json.loads((done.result_path / "result.json").read_text())["summary"]["processing"]
    assert done.progress_total == processing["tiles_processed"] == total  # kept once the job ended
    assert done.progress_done == done.progress_total


def test_the_mr_pipeline_reports_each_stage_in_order_and_its_end(tmp_path: Path) -> None:
    series = write_mr_series(tmp_path / "mr", MRSeriesSpec(rows=96, columns=96, slices=16, pixel_spacing_mm=3.0,
                                                           slice_thickness_mm=4.0, lesions=1, seed=900_417))
    heard: list[tuple[int, int, str]] = []
    inp = PipelineInput("dicom-series", series.series_uid, tuple(series.files), {}, series.study_uid,
                        series.series_uid, progress=lambda d, t, s: heard.append((d, t, s)))
    MriTumourPipeline().run(inp, tmp_path / "out")
    n = len(STAGES)
    assert heard == [*((i, n, stage) for i, stage in enumerate(STAGES)), (n, n, "done")]
    assert STAGES == ("reading series", "segmenting", "radiomics, classifying", "writing results")


def test_process_draws_a_bar_per_slide_on_a_terminal(tmp_path: Path) -> None:
    write_slide(tmp_path / "case-3.tiff", SlideSpec(width=1536, height=1536, ctc=2, ctm=0, seed=7412))
    config = tmp_path / "oncoagent.yaml"
    config.write_text("pipelines: {wsi-ctc: {batch_size: 4}}\n")
    shown = run_on_terminal(
        [sys.executable, "-m", "agent.cli", "--config", str(config), "--data-dir", str(tmp_path / "d"), "process",
         str(tmp_path / "case-3.tiff"), "--pipeline", "wsi-ctc", "--out", str(tmp_path / "out")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert shown.returncode == 0, shown.stdout + shown.screen
    assert "case-3 tiles" in shown.screen and "100%" in shown.screen, shown.screen  # the slide's bar, to its end
    assert "processing" in shown.screen  # the inputs' bar above it
    assert shown.stdout.splitlines()[-1].startswith("1 succeeded, 0 failed")  # stdout (not a terminal) stays plain
