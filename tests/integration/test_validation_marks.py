"""The "model not validated at this site" mark end to end: generated MR series taken in by the daemon's intake and
run by the real mri-tumour pipeline as the executor runs jobs (tests/support/pipeline_jobs.py). Without a
site-validation record the result says so in result.json, the PDF's first line (pdftotext), the SR and its
fallback; ``oncoagent models`` (a subprocess) lists the models as not validated. Once the lab's records exist for
the weights the job used (written with pipelines.models.site_validation.write_record), a new result has no mark,
a sign-off of the old one has none either, the old files keep theirs, and ``oncoagent models`` names who
accepted each model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pydicom
import pytest

from agent.config import Settings
from agent.records import Job
from agent.signoff import SignOff, write_signoff
from agent.store import Store
from pipelines.base import ModelRef
from pipelines.models.site_validation import NOT_VALIDATED, SiteValidation, write_record
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from tests.conftest import REPO
from tests.support.pipeline_jobs import data_dir_store, run_job, take_mr_series
from tests.unit.test_reports_validation_mark import pdf_lines, sr_comments

SPEC = MRSeriesSpec(rows=96, columns=96, slices=16, pixel_spacing_mm=3.5, slice_thickness_mm=5.0, lesions=1,
                    seed=41)


@dataclass(frozen=True)
class Site:
    root: Path
    settings: Settings
    store: Store


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("marks")
    with data_dir_store(root / "data") as (settings, store):
        yield Site(root, settings, store)


def _analysed(site: Site, name: str, seed: int) -> Job:
    series = write_mr_series(site.root / name, replace(SPEC, seed=seed))
    inp = take_mr_series(site.store, site.settings, series.files, series.series_uid)
    return run_job(site.store, site.settings, inp.id, "mri-tumour")


def _doc(job: Job) -> dict[str, Any]:
    assert job.result_path is not None
    doc: dict[str, Any] = json.loads((job.result_path / "result.json").read_text())
    return doc


def _models_cli(site: Site) -> str:
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "--data-dir", str(site.settings.data_dir), "models"],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=120, check=True)
    return proc.stdout


def test_outputs_are_marked_until_the_lab_accepts_the_weights(site: Site) -> None:
    before = _analysed(site, "before", 41)
    assert before.result_path is not None
    mark = _doc(before)["validation_mark"]
    assert isinstance(mark, str) and mark.startswith(f"{NOT_VALIDATED}; trained on generated data")
    assert "mri-lesion-unet" in mark and "mri-lesion-svm" in mark
    assert pdf_lines(before.result_path / "report.pdf")[0].startswith(NOT_VALIDATED)
    for name in ("sr.dcm", "fallback/sr-comprehensive.dcm"):
        assert sr_comments(pydicom.dcmread(before.result_path / name)) == [mark]
    listed = _models_cli(site)
    assert listed.count(f"    {NOT_VALIDATED}") == 3, listed  # the two MR models and the slide detector

    for model in before.models:  # the lab accepts exactly the weights the job used
        ref = ModelRef(**model)
        write_record(site.settings.data_dir, SiteValidation(
            model=ref.name, version=ref.version, sha256=ref.sha256, accepted_by="dr-lab",
            accepted_at="2026-12-07T23:00:00Z", report="/srv/evaluations/mri.html", cases=32))

    after = _analysed(site, "after", 43)
    assert after.result_path is not None and after.models == before.models
    assert _doc(after)["validation_mark"] is None
    assert "not validated" not in pdf_lines(after.result_path / "report.pdf")[0]
    assert sr_comments(pydicom.dcmread(after.result_path / "sr.dcm")) == []
    listed = _models_cli(site)
    assert listed.count("    validated at this site by dr-lab on 2026-12-07T23:00:00Z") == 2, listed
    assert listed.count(f"    {NOT_VALIDATED}") == 1  # the slide detector still is not

    # a sign-off is written as things stand when it is signed; the AI's files keep the mark they were written with
    lesions = [{**lesion, "accepted": True} for lesion in _doc(before)["summary"]["lesions"]]
    signed = write_signoff(site.store, site.settings, SignOff(before.id, 1, "Rad^Rita", "radiologist",
                                                              1_796_000_000.0, None, {"lesions": lesions}, None))
    assert signed.pdf is not None and "not validated" not in pdf_lines(signed.pdf)[0]
    assert sr_comments(pydicom.dcmread(signed.folder / "sr.dcm")) == []
    assert pdf_lines(before.result_path / "report.pdf")[0].startswith(NOT_VALIDATED)
