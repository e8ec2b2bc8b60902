"""Sign-off (agent.signoff.write_signoff) of real results: a generated MR series run through the real
mri-tumour pipeline, and generated slides run through the real wsi-ctc pipeline, one with a sidecar giving
its patient and accession, one without. The inputs are taken in by the daemon's own intake classes, the jobs
claimed, run (agent.worker.run_payload) and recorded as the executor does. The verified SRs are read back
with pydicom, the PDFs with pdftotext, and one goes through the outbox sender to a real Orthanc."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from agent.config import Destination, OutboxSettings, Settings
from agent.dicom_wiring import outbox_sender
from agent.records import Job, OutboxStatus
from agent.signoff import SignOff, SignOffError, SignOffOutputs, write_signoff
from agent.store import Store
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from pipelines.synthetic.slides import SlideSpec, write_slide
from tests.support.orthanc import Orthanc
from tests.support.pipeline_jobs import run_job as _run  # queue, claim, run, record as the executor does
from tests.support.pipeline_jobs import take_mr_series, take_slide
from tests.support.waiting import wait_for

MR_SPEC = MRSeriesSpec(rows=96, columns=96, slices=16, pixel_spacing_mm=3.5, slice_thickness_mm=5.0, lesions=2,
                       seed=31, labels=("malignant", "benign"))
SLIDE_SPEC = SlideSpec(width=1536, height=1536, ctc=4, ctm=1, seed=11, tissue_fraction=0.5)
SIGNED_AT = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC; version N is signed N seconds later


@dataclass(frozen=True)
class Cases:
    settings: Settings
    store: Store
    mri: Job
    slide: Job
    bare_slide: Job


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cases]:
    root = tmp_path_factory.mktemp("signoff")
    settings = Settings.model_validate({
        "data_dir": str(root / "data"),
        "destinations": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 1}],
    })
    settings.paths.create()
    store = Store.open(settings.database_url)
    series = write_mr_series(root / "mr", MR_SPEC)
    mr_input = take_mr_series(store, settings, series.files, series.series_uid)
    inputs = {}
    for name, context in (("with-context", {"patient_id": "PAT-7", "accession_number": "ACC-7",
                                            "patient_name": "Doe^Jane"}), ("bare", None)):
        folder = root / name
        folder.mkdir()
        path = folder / "slide.tiff"
        write_slide(path, SLIDE_SPEC)
        if context is not None:
            (folder / "slide.tiff.json").write_text(json.dumps(context))
        inputs[name] = take_slide(store, settings, path)
    try:
        yield Cases(settings, store, _run(store, settings, mr_input.id, "mri-tumour"),
                    _run(store, settings, inputs["with-context"].id, "wsi-ctc"),
                    _run(store, settings, inputs["bare"].id, "wsi-ctc"))
    finally:
        store.close()


def _doc(job: Job) -> dict[str, Any]:
    assert job.result_path is not None
    return json.loads((job.result_path / "result.json").read_text())


def _ai_sr(job: Job) -> Dataset:
    assert job.result_path is not None
    return pydicom.dcmread(job.result_path / "sr.dcm")


def _signoff(job: Job, version: int, corrected: dict[str, Any], previous: str | None = None,
             reviewer: str = "Rad^Rita", role: str = "radiologist") -> SignOff:
    return SignOff(job.id, version, reviewer, role, SIGNED_AT + version, "looked twice", corrected, previous)


def _mri_corrections(job: Job) -> dict[str, Any]:
    """The first lesion accepted with its label turned over, every other one rejected."""
    lesions = [dict(les) for les in _doc(job)["summary"]["lesions"]]
    assert len(lesions) >= 2, "the generated series should give two lesions"
    first = lesions[0]
    lesions[0] = {**first, "accepted": True, "label": "benign" if first["label"] == "malignant" else "malignant"}
    for lesion in lesions[1:]:
        lesion["accepted"] = False
    return {"lesions": lesions}


def _items(ds: Dataset) -> Iterator[Dataset]:
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _numbers(ds: Dataset) -> dict[str, float]:
    return {item.ConceptNameCodeSequence[0].CodeMeaning: float(item.MeasuredValueSequence[0].NumericValue)
            for item in _items(ds) if item.ValueType == "NUM" and item.get("MeasuredValueSequence")}


def _texts(ds: Dataset) -> list[str]:
    out = []
    for item in _items(ds):
        if item.ValueType in ("TEXT", "PNAME", "UIDREF"):
            out.append(str(item.get("TextValue") or item.get("PersonName") or item.get("UID") or ""))
        if item.ValueType == "CODE":
            out.append(item.ConceptCodeSequence[0].CodeMeaning)
    return out


def _pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True).stdout


def _verified(outputs: SignOffOutputs) -> Dataset:
    assert outputs.sr_sop_instance_uid is not None
    sr = pydicom.dcmread(outputs.folder / "sr.dcm")
    assert sr.SOPInstanceUID == outputs.sr_sop_instance_uid
    return sr


def _valid(*paths: Path) -> None:
    """dciodvfy (dicom3tools, installed by make test) finds no error in the objects."""
    if shutil.which("dciodvfy") is None:
        return
    for path in paths:
        proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120, check=False)
        assert [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")] == [], path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ MRI


def test_mr_signoff_is_a_verified_sr_of_the_accepted_lesions_superseding_the_ai_sr(cases: Cases) -> None:
    job = cases.mri
    assert job.result_path is not None
    ai_pdf = _digest(job.result_path / "report.pdf")
    corrected = _mri_corrections(job)
    outputs = write_signoff(cases.store, cases.settings, _signoff(job, 1, corrected))
    assert outputs.folder == job.result_path / "reviewed" / "v1" and outputs.unsent_reason is None
    sr, ai = _verified(outputs), _ai_sr(job)
    assert sr.VerificationFlag == "VERIFIED" and sr.PreliminaryFlag == "FINAL" and sr.CompletionFlag == "COMPLETE"
    (observer,) = sr.VerifyingObserverSequence
    assert str(observer.VerifyingObserverName) == "Rad^Rita" and observer.VerifyingOrganization == "ONCOAGENT"
    assert observer.VerificationDateTime == "20261130005321+0000"
    (predecessor,) = sr.PredecessorDocumentsSequence
    assert predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
        ai.SOPInstanceUID
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "AccessionNumber"):
        assert sr.get(keyword) == ai.get(keyword), keyword
    assert sr.SeriesInstanceUID != ai.SeriesInstanceUID and sr.InstanceNumber == 1
    # the content: one lesion, its label as the reviewer set it, still pointing at its SEG segment
    accepted = corrected["lesions"][0]
    assert _numbers(sr)["Number of lesions (observable entity)"] == 1
    assert _numbers(sr)["Number of lesions classified malignant"] == (accepted["label"] == "malignant")
    texts = _texts(sr)
    assert f"Lesion {accepted['index']}" in texts and accepted["label"].capitalize() in texts
    assert f"Lesion {corrected['lesions'][1]['index']}" not in texts
    segments = [item for item in _items(sr) if item.ValueType == "IMAGE" and
                item.ReferencedSOPSequence[0].get("ReferencedSegmentNumber") is not None]
    seg = pydicom.dcmread(job.result_path / "seg.dcm", stop_before_pixels=True)
    assert [s.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for s in segments] == [seg.SOPInstanceUID]
    # the person who verified, beside the device
    assert "Rad^Rita" in texts and "Verifying" in texts
    # the report, the fallback, the outbox; the AI's report untouched
    assert outputs.pdf is not None and "Reviewed and signed by Rad^Rita (radiologist)" in _pdf_text(outputs.pdf)
    assert "looked twice" in _pdf_text(outputs.pdf)
    assert pydicom.dcmread(outputs.folder / "fallback" / "sr-comprehensive.dcm").VerificationFlag == "VERIFIED"
    _valid(outputs.folder / "sr.dcm", outputs.folder / "fallback" / "sr-comprehensive.dcm")
    assert outputs.queued == 1
    queued = [i for i in cases.store.outbox_list() if i.sop_instance_uid == sr.SOPInstanceUID]
    assert [(i.destination, i.path, i.status) for i in queued] == [
        ("pacs", outputs.folder / "sr.dcm", OutboxStatus.PENDING)]
    assert _digest(job.result_path / "report.pdf") == ai_pdf


def test_signing_a_version_again_changes_nothing_and_other_content_is_refused(cases: Cases) -> None:
    job = cases.mri
    signoff = _signoff(job, 1, _mri_corrections(job))
    first = write_signoff(cases.store, cases.settings, signoff)
    sr_bytes = (first.folder / "sr.dcm").read_bytes()
    again = write_signoff(cases.store, cases.settings, signoff)
    assert again == replace(first, queued=0)
    assert (again.folder / "sr.dcm").read_bytes() == sr_bytes
    with pytest.raises(SignOffError, match="signed already"):
        write_signoff(cases.store, cases.settings, replace(signoff, note="another note"))
    assert not list(first.folder.parent.glob(".*partial"))


def test_a_reopened_case_signs_a_new_version_that_supersedes_the_previous_one(cases: Cases) -> None:
    job = cases.mri
    v1 = write_signoff(cases.store, cases.settings, _signoff(job, 1, _mri_corrections(job)))
    v1_files = {p: p.read_bytes() for p in v1.folder.rglob("*") if p.is_file()}
    lesions = [{**les, "accepted": True} for les in _doc(job)["summary"]["lesions"]]
    v2 = write_signoff(cases.store, cases.settings,
                       _signoff(job, 2, {"lesions": lesions}, previous=v1.sr_sop_instance_uid))
    sr1, sr2 = _verified(v1), _verified(v2)
    assert sr2.SOPInstanceUID != sr1.SOPInstanceUID and sr2.SeriesInstanceUID == sr1.SeriesInstanceUID
    assert sr2.InstanceNumber == 2 and v2.queued == 1
    (predecessor,) = sr2.PredecessorDocumentsSequence
    assert predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
        sr1.SOPInstanceUID
    assert _numbers(sr2)["Number of lesions (observable entity)"] == len(lesions)
    assert {p: p.read_bytes() for p in v1.folder.rglob("*") if p.is_file()} == v1_files  # v1 stays as it was
    with pytest.raises(SignOffError, match="no signed version"):
        write_signoff(cases.store, cases.settings, _signoff(job, 3, {"lesions": lesions}, previous="1.2.3"))


# ------------------------------------------------------------------------------------------ slides


def test_slide_signoff_carries_the_confirmed_counts_in_the_sidecars_patient_study(cases: Cases) -> None:
    job = cases.slide
    assert job.result_path is not None and job.unsent_reason is None
    detections = _doc(job)["summary"]["detections"]
    kept = [{**d, "source": "ai"} for d in detections[1:]]
    added = {"class": "CTC", "confidence": None, "l0_box": [100, 100, 130, 130], "source": "added"}
    ctc = sum(1 for d in kept if d["class"] == "CTC") + 1
    ctm = sum(1 for d in kept if d["class"] == "CTM")
    corrected = {"counts": {"CTC": ctc, "CTM": ctm}, "detections": [*kept, added]}
    outputs = write_signoff(cases.store, cases.settings,
                            _signoff(job, 1, corrected, reviewer="Path^Paula", role="pathologist"))
    sr, ai = _verified(outputs), _ai_sr(job)
    assert sr.VerificationFlag == "VERIFIED"
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Path^Paula"
    assert sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0] \
        .ReferencedSOPInstanceUID == ai.SOPInstanceUID
    assert sr.PatientID == "PAT-7" and sr.AccessionNumber == "ACC-7" and sr.StudyInstanceUID == ai.StudyInstanceUID
    numbers = _numbers(sr)
    assert numbers["Circulating tumour cell count"] == ctc and numbers["Circulating tumour microemboli count"] == ctm
    assert "Triage priority score" not in numbers  # the AI's triage is not the reviewed result
    assert numbers["Detections listed as image regions"] == 0  # a slide file: counts only, as the AI's SR
    assert "Physician" in _texts(sr)
    _valid(outputs.folder / "sr.dcm")
    assert outputs.pdf is not None
    text = _pdf_text(outputs.pdf)
    assert "Reviewed and signed by Path^Paula (pathologist)" in text and f"{ctc} CTC and {ctm} CTM confirmed" in text
    assert outputs.queued == 1


def test_a_slide_without_patient_context_is_signed_without_an_sr(cases: Cases) -> None:
    job = cases.bare_slide
    assert job.unsent_reason
    summary = _doc(job)["summary"]
    corrected = {"counts": {"CTC": summary["ctc_count"], "CTM": summary["ctm_count"]},
                 "detections": [{**d, "source": "ai"} for d in summary["detections"]]}
    outputs = write_signoff(cases.store, cases.settings, _signoff(job, 1, corrected))
    assert outputs.sr_sop_instance_uid is None and outputs.queued == 0
    assert outputs.unsent_reason == job.unsent_reason
    assert not (outputs.folder / "sr.dcm").exists()
    assert outputs.pdf is not None and "Reviewed and signed by" in _pdf_text(outputs.pdf)


def test_bad_signoffs_are_refused_and_leave_no_folder(cases: Cases) -> None:
    with pytest.raises(SignOffError, match="version 0"):
        write_signoff(cases.store, cases.settings, _signoff(cases.mri, 0, {"lesions": []}))
    with pytest.raises(SignOffError, match="corrected findings"):
        write_signoff(cases.store, cases.settings, _signoff(cases.slide, 9, {"lesions": []}))
    assert not (cases.slide.result_path / "reviewed" / "v9").exists()  # type: ignore[operator]


# ------------------------------------------------------------------------------------------ PACS


def test_the_outbox_sender_delivers_the_verified_sr_to_orthanc(cases: Cases, tmp_path: Path) -> None:
    orthanc = Orthanc(tmp_path / "orthanc")
    orthanc.start()
    try:
        destination = Destination(name="orthanc", ae_title=orthanc.ae_title, host="127.0.0.1",
                                  port=orthanc.dicom_port)
        settings = cases.settings.model_copy(update={"destinations": [destination]})
        job = cases.mri
        lesions = [{**les, "accepted": True} for les in _doc(job)["summary"]["lesions"]]
        outputs = write_signoff(cases.store, settings, _signoff(job, 4, {"lesions": lesions},
                                                                reviewer="Rad^Rita"))
        assert outputs.queued == 1
        sender = outbox_sender(cases.store, [destination], OutboxSettings(), "ONCOAGENT")  # first try: at once

        def delivered() -> bool:
            sender.send_due()
            return any(i.status is OutboxStatus.SENT and i.sop_instance_uid == outputs.sr_sop_instance_uid
                       for i in cases.store.outbox_list())

        wait_for(delivered, 60, interval=0.2, what="the verified SR to be delivered")
        found = orthanc.post("/tools/find", {"Level": "Instance",
                                             "Query": {"SOPInstanceUID": outputs.sr_sop_instance_uid}})
        (instance_id,) = found
        tags = orthanc.get(f"/instances/{instance_id}/simplified-tags")
        assert tags["VerificationFlag"] == "VERIFIED" and tags["Modality"] == "SR"
        assert tags["VerifyingObserverSequence"][0]["VerifyingObserverName"] == "Rad^Rita"
        assert tags["StudyInstanceUID"] == _ai_sr(job).StudyInstanceUID
    finally:
        orthanc.stop()
