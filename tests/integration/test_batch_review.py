"""Batch results compared with the previous ones (issue 11): each reprocessed result is judged concordant or
discordant (with the reasons), ``send_results`` decides which go to the outbox, and a store source with
``older_models`` (the model-version trigger) reprocesses exactly what an older model version produced.

Real worker processes run the jobs: the scripted pipeline, whose findings a test sets through ``findings.json``
in its ledger folder, and the real MRI pipeline with a copy of the shipped models under a new version."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.batch import HeldRun, run_held
from agent.batch_summary import summary_path
from agent.cli import main
from agent.config import Settings
from agent.records import BatchRunStatus, JobStatus, Verdict
from pipelines.models.registry import MODELS_DIR
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.conftest import SCRIPTED_RULES
from tests.integration.test_executor import Running
from tests.support.net import free_port
from tests.support.waiting import wait_for

OWNER = "test-node"


def batch_run(running: Running, paths: list[Path], options: dict[str, Any], *, reprocess: bool = True,
              slot: float | None = None) -> tuple[int, list[int]]:
    """Run a batch over ``paths`` (and the sources in ``options``) as the scheduler does; its id and jobs."""
    now = time.time()
    run = running.store.batch_run_begin("nightly", slot or now, paths, reprocess, owner=OWNER, lease_s=60, now=now,
                                        options=options)
    assert run is not None
    report = run_held(running.store, running.settings, HeldRun(running.store, run, OWNER, 60))
    running.executor.wake()
    return run.id, report.queued


def wait_all(running: Running, jobs: list[int]) -> None:
    for job in jobs:
        assert running.wait_done(job, timeout=180).status is JobStatus.SUCCEEDED, running.store.get_job(job)


def set_findings(ledger: Path, table: dict[str, dict[str, Any]]) -> None:
    ledger.with_name("findings.json").write_text(json.dumps(table))


@pytest.fixture
def scripted(make_settings: Callable[..., Settings], ledger: Path) -> Iterator[Running]:
    running = Running(make_settings(
        routing={"rules": SCRIPTED_RULES},
        destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}],
    ))
    yield running
    running.stop()


def slides(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"slide " + name.encode())
    return folder


def test_reprocessed_results_are_judged_and_only_changed_ones_go_to_pacs(
        scripted: Running, ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = slides(tmp_path / "archive", ["same-dicomout.tiff", "more-dicomout.tiff", "flip-dicomout.tiff"])
    set_findings(ledger, {"same-dicomout.tiff": {"ctc_count": 3, "ctm_count": 0, "priority": "medium"},
                          "more-dicomout.tiff": {"ctc_count": 10, "ctm_count": 1, "priority": "high"},
                          "flip-dicomout.tiff": {"ctc_count": 4, "ctm_count": 0, "priority": "medium"}})
    first, jobs = batch_run(scripted, [archive], {"send_results": "on_change"}, reprocess=False)
    wait_all(scripted, jobs)
    compared = {c.input_path.name: c for c in scripted.store.batch_run_compared(first)}
    assert {n: (c.verdict, c.sent) for n, c in compared.items()} == {
        n: (Verdict.NEW, True) for n in ("same-dicomout.tiff", "more-dicomout.tiff", "flip-dicomout.tiff")}

    set_findings(ledger, {"same-dicomout.tiff": {"ctc_count": 4, "ctm_count": 0, "priority": "medium"},  # +1: within
                          "more-dicomout.tiff": {"ctc_count": 14, "ctm_count": 1, "priority": "high"},
                          "flip-dicomout.tiff": {"ctc_count": 5, "ctm_count": 0, "priority": "high"}})
    second, jobs = batch_run(scripted, [archive], {"send_results": "on_change", "compare": {"count_abs": 2}})
    assert sorted(jobs) == sorted(c.job_id for c in compared.values())  # the same inputs, reprocessed
    wait_all(scripted, jobs)
    compared = {c.input_path.name: c for c in scripted.store.batch_run_compared(second)}
    assert compared["same-dicomout.tiff"].verdict is Verdict.CHANGED  # within the thresholds
    assert compared["same-dicomout.tiff"].reasons == ("CTC count 3 → 4 (+1)",)
    assert compared["same-dicomout.tiff"].sent is False  # concordant: supersedes quietly, nothing to PACS
    assert compared["more-dicomout.tiff"].verdict is Verdict.DISCORDANT
    assert compared["more-dicomout.tiff"].reasons == ("CTC count 10 → 14 (+4)",)
    assert compared["more-dicomout.tiff"].sent is True
    assert compared["flip-dicomout.tiff"].reasons == ("priority medium → high",)

    progress = scripted.store.batch_run_progress(second)
    assert progress.verdicts == {Verdict.CHANGED: 1, Verdict.DISCORDANT: 2}
    assert {c.input_path.name for c in progress.discordant} == {"flip-dicomout.tiff", "more-dicomout.tiff"}
    assert scripted.store.batch_review_pending(compared["more-dicomout.tiff"].job_id) is None  # compared once

    summary = wait_for(lambda: (p := summary_path(scripted.settings, second)).exists() and p, 30,
                       what="the run's HTML summary, written when its last job ended")
    page = summary.read_text()
    assert re.search(r"<b>2</b>\s*discordant", page) and re.search(r"<b>3</b>\s*changed", page)
    assert "CTC count 10 → 14 (+4)" in page and "priority medium → high" in page
    assert "CTC count 3 → 4" not in page  # within the thresholds: not listed for review
    capsys.readouterr()
    assert main(["--data-dir", str(scripted.settings.data_dir), "batch", "show", str(second)]) == 0
    shown = capsys.readouterr().out
    assert "compared    new 0, concordant 0, changed 1, discordant 2   (send_results on_change)" in shown
    assert f"summary     {summary}" in shown
    assert re.search(r"^DISCORDANT  job \d+  \S*more-dicomout.tiff: CTC count 10 → 14 \(\+4\)$", shown, re.M)


def test_send_results_never_keeps_every_result_from_pacs(scripted: Running, ledger: Path, tmp_path: Path) -> None:
    archive = slides(tmp_path / "archive", ["one-dicomout.tiff", "two-dicomout.tiff"])
    run_id, jobs = batch_run(scripted, [archive], {"send_results": "never"}, reprocess=False)
    wait_all(scripted, jobs)
    compared = scripted.store.batch_run_compared(run_id)
    assert [(c.verdict, c.sent) for c in compared] == [(Verdict.NEW, False)] * 2
    assert scripted.store.outbox_list() == []


def test_a_result_from_outside_any_batch_is_not_judged(scripted: Running) -> None:
    job = scripted.wait_done(scripted.submit("routine-dicomout.tiff"))
    assert job.status is JobStatus.SUCCEEDED
    assert len(scripted.store.outbox_list()) == 1  # sent as always


def new_model_version(folder: Path, version: str) -> Path:
    """A copy of the shipped MRI manifest naming the same weights (absolute paths) under a new U-Net version."""
    shipped = MODELS_DIR / "mri" / "manifest.json"
    entries = json.loads(shipped.read_text())
    for entry in entries.values():
        entry["file"] = str(shipped.parent / entry["file"])
    entries["mri-lesion-unet"]["version"] = version
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps(entries))
    return manifest


@pytest.mark.slow
def test_a_new_model_version_reprocesses_exactly_what_the_old_one_produced(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    manifest = new_model_version(tmp_path / "models", "1.0.0")
    spec = {"rows": 96, "columns": 96, "slices": 12, "pixel_spacing_mm": 3.5, "slice_thickness_mm": 5.0}
    archive = tmp_path / "archive"
    for n in range(3):
        write_mr_series(archive / f"s{n}", MRSeriesSpec(seed=9100 + n, **spec))
    running = Running(make_settings(pipelines={"mri-tumour": {"manifest": str(manifest)}}))
    try:
        _, first = batch_run(running, [archive / "s0", archive / "s1"], {}, reprocess=False)
        wait_all(running, first)
        old = {j: running.store.get_job(j) for j in first}
        assert all({"name": "mri-lesion-unet", "version": "1.0.0"}.items() <= m.items()
                   for j in old.values() for m in j.models if m["name"] == "mri-lesion-unet")

        new_model_version(tmp_path / "models", "1.1.0-site")  # the new version is installed
        _, later = batch_run(running, [archive / "s2"], {}, reprocess=False)  # a series the new one produced
        wait_all(running, later)

        source = {"store": {"older_models": True, "days": 30}, "send_results": "never"}
        run_id, jobs = batch_run(running, [], source)
        assert sorted(jobs) == sorted(first)  # exactly the old version's results
        wait_all(running, jobs)
        for job in map(running.store.get_job, jobs):
            unet = next(m for m in job.models if m["name"] == "mri-lesion-unet")
            assert unet["version"] == "1.1.0-site"
        progress = running.store.batch_run_progress(run_id)
        assert progress.run.status is BatchRunStatus.DONE and progress.inputs == 2
        assert progress.verdicts == {Verdict.CONCORDANT: 2}  # same weights: the same findings

        again, nothing = batch_run(running, [], source)  # the next night: nothing is older any more
        assert nothing == [] and running.store.batch_run_progress(again).inputs == 0
    finally:
        running.stop()


@pytest.mark.slow
def test_a_series_whose_lesion_changed_between_runs_is_discordant(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    write_mr_series(archive, MRSeriesSpec(lesions=1, seed=8801, labels=("malignant",)))
    running = Running(make_settings())
    try:
        first, jobs = batch_run(running, [archive], {"send_results": "on_change"}, reprocess=False)
        wait_all(running, jobs)
        [before] = running.store.batch_run_compared(first)
        assert before.verdict is Verdict.NEW
        assert running.store.job_summary(before.job_id)["lesion_count"] == 1  # type: ignore[index]

        # the same series (same UIDs) rewritten in the archive without its lesion: new content, processed anew
        write_mr_series(archive, MRSeriesSpec(lesions=0, seed=8801))
        second, jobs = batch_run(running, [archive], {"send_results": "on_change"}, reprocess=False)
        assert len(jobs) == 1 and jobs[0] != before.job_id  # a job of its own for the new content
        wait_all(running, jobs)
        [after] = running.store.batch_run_compared(second)
        assert after.verdict is Verdict.DISCORDANT, after
        assert after.reasons[0].startswith("lesion lost at") and after.reasons[0].endswith("(malignant)")
        assert after.reasons[1:] == ("series finding: malignant lesion → none malignant",)
    finally:
        running.stop()
