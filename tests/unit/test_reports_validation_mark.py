"""The site-validation mark (reports.validation_mark) in every output the reports write: the first line of the
HTML and PDF report (read back with pdftotext), a comment in the SR and its fallback (read back with pydicom),
the reviewed SR and report; and none of it without a mark."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from pipelines.base import PipelineInput
from reports.context import read_headers
from reports.document import build_document, machine_readable, render_html, write_pdf
from reports.producer import Producer
from reports.render import write_reports
from reports.validation_mark import MARK_KEY
from reports.verified import Sources, corrected_doc, reviewed_document, verified_srs
from tests.conftest import shared
from tests.unit.test_reports_verified import DETECTIONS, REVIEW, _slide_doc

MARK = "model not validated at this site; trained on generated data (wsi-ctc-yolo11n 1.0)"


def _doc(inp: PipelineInput, mark: str | None) -> dict[str, Any]:
    return {**_slide_doc(inp), MARK_KEY: mark}


def _dicom_slide() -> PipelineInput:
    wsi = shared("wsi/highdicom_sm_image.dcm")
    header = pydicom.dcmread(wsi, stop_before_pixels=True)
    return PipelineInput(kind="dicom-series", key=header.SeriesInstanceUID, paths=(wsi,),
                         study_uid=header.StudyInstanceUID, series_uid=header.SeriesInstanceUID, job_id=1,
                         fingerprint="sm-1")


def sr_comments(sr: Dataset) -> list[str]:
    """The comments of the SR's document-level Qualitative Evaluations (TID 1500), as a viewer lists them."""
    return [str(item.TextValue) for container in sr.ContentSequence if container.ValueType == "CONTAINER"
            and container.ConceptNameCodeSequence[0].CodeValue == "C0034375"
            for item in container.ContentSequence
            if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeMeaning == "Comment"]


def pdf_lines(path: Path) -> list[str]:
    text = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True).stdout
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("mark", [MARK, None])
def test_the_report_opens_with_the_mark_and_only_with_one(mark: str | None, tmp_path: Path) -> None:
    inp = _dicom_slide()
    report = build_document(_doc(inp, mark), None, "slide", [])
    html = render_html(report)
    body = html[html.index("<body>"):]
    assert machine_readable(report)[MARK_KEY] == mark
    if mark is None:
        assert "validation-mark" not in body and "not validated" not in html
    else:
        assert body.index('class="validation-mark"') < body.index('class="banner"')
    pdf = write_pdf(html, tmp_path, tmp_path / "report.pdf")
    first = pdf_lines(pdf)[0]
    if mark is None:
        assert "not validated" not in first and first.startswith("OncoAgent")
    else:
        assert first.startswith("model not validated at this site; trained on generated data")


def test_the_srs_carry_the_mark_as_a_comment(tmp_path: Path) -> None:
    inp = _dicom_slide()
    marked, plain = tmp_path / "marked", tmp_path / "plain"
    assert not write_reports(_doc(inp, MARK), inp, marked).missing
    assert not write_reports(_doc(inp, None), inp, plain).missing
    for name in ("sr.dcm", "fallback/sr-comprehensive.dcm"):
        assert sr_comments(pydicom.dcmread(marked / name)) == [MARK]
        assert sr_comments(pydicom.dcmread(plain / name)) == []
    if shutil.which("dciodvfy") is not None:
        proc = subprocess.run(["dciodvfy", str(marked / "sr.dcm")], capture_output=True, text=True, timeout=120,
                              check=False)
        assert [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")] == []


def test_the_reviewed_sr_and_report_carry_the_mark_they_are_given(tmp_path: Path) -> None:
    inp = _dicom_slide()
    doc = _doc(inp, None)
    assert not write_reports(doc, inp, tmp_path).missing
    ai = pydicom.dcmread(tmp_path / "sr.dcm")
    headers, _ = read_headers(list(inp.paths))
    producer = Producer.of_result(doc, inp.key, inp.study_uid, inp.series_uid, inp.fingerprint)
    fixed = corrected_doc(doc, {"counts": {"CTC": 2, "CTM": 1}, "detections": DETECTIONS})
    for mark in (MARK, None):
        sr, fallback = verified_srs({**fixed, MARK_KEY: mark}, producer, Sources(ai, ai, headers), REVIEW)
        assert sr_comments(sr) == sr_comments(fallback) == ([MARK] if mark else [])
        report = reviewed_document({**fixed, MARK_KEY: mark}, None, "slide", REVIEW)
        assert report.validation_mark == mark and report.signed
