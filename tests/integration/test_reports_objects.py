"""Reports of whole results (reports.render.write_reports) checked by other tools: dicom3tools' dciodvfy,
dcmtk's dsrdump, poppler's pdftoppm/pdfimages, highdicom, Orthanc as a real PACS and a PACS that refuses SR.

The inputs are generated (an MR series with ground-truth lesions and its label map; a synthetic slide with
ground-truth cells) or real DICOM whole-slide test files, with summaries that follow the pipelines' schemas,
so nothing here depends on trained models. Each case is rendered once per module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.sr.codedict import codes
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, evt

from agent.config import Destination, OutboxSettings
from agent.dicom_wiring import outbox_sender
from agent.records import Delivery, InputKind, OutboxStatus
from agent.store import Store
from pipelines.base import PipelineInput
from pipelines.synthetic.mri_series import MRSeries, MRSeriesSpec, volume_geometry, write_mr_series
from pipelines.synthetic.slides import SlideSpec, write_slide
from reports.render import ReportOutcome, write_reports
from tests.conftest import shared
from tests.support.net import free_port
from tests.support.orthanc import Orthanc

MR_SPEC = MRSeriesSpec(rows=64, columns=64, slices=12, lesions=2, seed=21, labels=("malignant", "benign"))
SLIDE_SPEC = SlideSpec(width=2048, height=2048, ctc=8, ctm=2, seed=5)
WSI_MODEL = [{"name": "wsi-ctc-yolo11n", "version": "1.0", "sha256": "c" * 64}]
MRI_MODELS = [{"name": "mri-lesion-unet", "version": "1.0", "sha256": "a" * 64},
              {"name": "mri-lesion-svm", "version": "1.0", "sha256": "b" * 64}]
FAST = OutboxSettings(backoff_base_s=0.2, backoff_max_s=0.5, max_attempts=4, timeout_s=10, scan_interval_s=0.2)


@dataclass(frozen=True)
class Case:
    name: str
    out: Path
    outcome: ReportOutcome
    inp: PipelineInput
    doc: dict[str, Any]


def _doc(pipeline: str, inp: PipelineInput, summary: dict[str, Any], models: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "pipeline": pipeline, "pipeline_version": "1.0.0",
        "input": {"kind": inp.kind, "key": inp.key, "study_uid": inp.study_uid, "series_uid": inp.series_uid,
                  "files": len(inp.paths)},
        "summary": summary, "files": [], "models": models, "warnings": [], "started_at": "2026-01-01T00:00:00Z",
        "seconds": 4.2, "job_id": inp.job_id, "supersedes_job_id": None,
    }


def _render(root: Path, name: str, pipeline: str, inp: PipelineInput, summary: dict[str, Any],
            models: list[dict[str, str]], prepare: Any = None) -> Case:
    out = root / name
    out.mkdir()
    if prepare is not None:
        prepare(out)
    doc = _doc(pipeline, inp, summary, models)
    return Case(name, out, write_reports(doc, inp, out), inp, doc)


# ------------------------------------------------------------------------------------------ inputs


def _mri_summary(series: MRSeries, with_lesions: bool) -> dict[str, Any]:
    voxel_ml = float(np.prod(series.spacing_mm)) / 1000
    lesions = [
        {"index": t.index, "mask_file": f"lesion-{t.index:02d}.nii.gz", "volume_ml": round(t.voxels * voxel_ml, 3),
         "longest_diameter_mm": round(2 * t.radius_mm, 2), "centroid_lps_mm": [0.0, 0.0, 0.0], "voxels": t.voxels,
         "malignancy_probability": 0.91 if t.label == "malignant" else 0.08, "label": t.label,
         "features": {"original_glcm_Contrast": 12.5 * t.index, "original_shape_Sphericity": 0.7,
                      "wavelet-LLH_firstorder_Mean": -3.2},
         "radiomics_params_sha256": "d" * 64}
        for t in series.lesions
    ] if with_lesions else []
    malignant = sum(1 for les in lesions if les["label"] == "malignant")
    return {
        "series_uid": series.series_uid, "study_uid": series.study_uid, "lesion_count": len(lesions),
        "lesions": lesions, "label_map_file": "lesions.nii.gz",
        "series_summary": {"finding": f"{malignant} lesion(s) classified malignant" if lesions else "no lesion found",
                           "lesions": len(lesions), "malignant": malignant},
        "volume": {"slices": MR_SPEC.slices}, "stage_seconds": {"volume": 0.2, "segmentation": 1.1, "radiomics": 0.7},
    }


def _label_map(series: MRSeries, mask: np.ndarray) -> Any:
    def write(out: Path) -> None:
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        origin, direction = volume_geometry(MR_SPEC)
        image.SetOrigin(origin)
        image.SetDirection(direction)
        image.SetSpacing(series.spacing_mm)
        sitk.WriteImage(image, str(out / "lesions.nii.gz"), useCompression=True)
    return write


def _slide_summary(detections: list[dict[str, Any]], area: float, size: tuple[int, int], mpp: float
                   ) -> dict[str, Any]:
    ctc = sum(1 for d in detections if d["class"] == "CTC")
    ctm = len(detections) - ctc
    return {
        "ctc_count": ctc, "ctm_count": ctm, "counts": {"CTC": ctc, "CTM": ctm}, "tissue_area_mm2": area,
        "density_per_mm2": {"CTC": round(ctc / area, 4), "CTM": round(ctm / area, 4)},
        "priority_score": 0.93 if detections else 0.0, "priority": "high" if ctm else "medium" if ctc else "low",
        "detections": detections,
        "slide": {"file": "slide", "format": "generic-tiff", "vendor": None, "width_px": size[0], "height_px": size[1],
                  "mpp_um": [mpp, mpp], "mpp_source": "file", "levels": 3, "modality": "brightfield"},
        "processing": {"mpp_um": 0.5, "tiles_total": 16, "tiles_processed": 12, "tiles_per_s": 8.0,
                       "open_and_mask_s": 0.3, "tiles_s": 1.5, "total_s": 1.9},
        "coordinates": "level-0 pixels",
    }


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    root = tmp_path_factory.mktemp("reports")
    data = tmp_path_factory.mktemp("inputs")
    found: dict[str, Case] = {}

    series = write_mr_series(data / "mr", MR_SPEC)
    mr = PipelineInput(kind="dicom-series", key=series.series_uid, paths=tuple(series.files),
                       study_uid=series.study_uid, series_uid=series.series_uid, job_id=1, fingerprint="mr-1")
    found["mri"] = _render(root, "mri", "mri-tumour", mr, _mri_summary(series, True), MRI_MODELS,
                           _label_map(series, series.lesion_mask))
    found["mri-empty"] = _render(root, "mri-empty", "mri-tumour", mr, _mri_summary(series, False), MRI_MODELS,
                                 _label_map(series, np.zeros_like(series.lesion_mask)))

    wsi = shared("wsi/highdicom_sm_image.dcm")
    header = pydicom.dcmread(wsi, stop_before_pixels=True)
    dicom_slide = PipelineInput(kind="dicom-series", key=header.SeriesInstanceUID, paths=(wsi,),
                                study_uid=header.StudyInstanceUID, series_uid=header.SeriesInstanceUID, job_id=2,
                                fingerprint="sm-1")
    detections = [
        {"class": "CTC", "confidence": 0.91, "l0_box": [5, 5, 12, 12]},
        {"class": "CTM", "confidence": 0.88, "l0_box": [20, 20, 40, 35], "members": 4, "source": "grouping"},
        {"class": "CTC", "confidence": 0.52, "l0_box": [30, 2, 38, 9]},
    ]
    found["wsi-dicom"] = _render(root, "wsi-dicom", "wsi-ctc", dicom_slide,
                                 _slide_summary(detections, 0.0006, (50, 50), 0.499), WSI_MODEL)

    boxes = (shared("wsi/dicom-boxes/boxes_0.dcm"), shared("wsi/dicom-boxes/boxes_1.dcm"))
    box_header = pydicom.dcmread(boxes[0], stop_before_pixels=True)
    found["wsi-dicom-empty"] = _render(
        root, "wsi-dicom-empty", "wsi-ctc",
        PipelineInput(kind="dicom-series", key=box_header.SeriesInstanceUID, paths=boxes,
                      study_uid=box_header.StudyInstanceUID, series_uid=box_header.SeriesInstanceUID, job_id=3,
                      fingerprint="boxes"),
        _slide_summary([], 0.0001, (16, 16), 0.499), WSI_MODEL)

    slide = data / "ACC-77_P1234.tiff"
    truth = write_slide(slide, SLIDE_SPEC)
    slide_detections = [
        {"class": ("CTC", "CTM")[c], "confidence": round(0.55 + 0.04 * (n % 10), 3), "l0_box": [x0, y0, x1, y1],
         **({"members": 3, "source": "model"} if c == 1 else {})}
        for n, (c, x0, y0, x1, y1) in enumerate(truth.boxes)
    ]
    slide_summary = _slide_summary(slide_detections, 0.8, (SLIDE_SPEC.width, SLIDE_SPEC.height), SLIDE_SPEC.mpp)
    mapped = PipelineInput(kind="slide", key=str(slide), paths=(slide,), job_id=4, fingerprint="slide-1",
                           attrs={"file_name": slide.name, "context": {"accession": "ACC-77", "patient_id": "1234",
                                                                       "stain": "Pap"},
                                  "context_source": "filename"})
    found["wsi-mapped"] = _render(root, "wsi-mapped", "wsi-ctc", mapped, slide_summary, WSI_MODEL)
    local = PipelineInput(kind="slide", key=str(slide), paths=(slide,), job_id=5, fingerprint="slide-1",
                          attrs={"file_name": slide.name})
    found["wsi-local"] = _render(root, "wsi-local", "wsi-ctc", local, slide_summary, WSI_MODEL)
    return found


def _dicom_files(case: Case) -> list[Path]:
    return sorted(case.out.rglob("*.dcm"))


# ------------------------------------------------------------------------------------------ what is written


DOCUMENTS = {"report.html", "report.json", "report.pdf"}
FALLBACKS = {"fallback/sr-comprehensive.dcm", "fallback/report-pdf.dcm"}
SLIDE_FIGURES = {"figures/slide-overview.png", "figures/ctc-density.png", "figures/top-detections.png",
                 "figures/priority.png"}
EXPECTED = {
    "mri": {"sr.dcm", "seg.dcm", *FALLBACKS, *DOCUMENTS, "figures/key-slices.png", "figures/radiomics.png",
            "figures/malignancy.png"},
    "mri-empty": {"sr.dcm", *FALLBACKS, *DOCUMENTS},
    "wsi-dicom": {"sr.dcm", "annotations.dcm", *FALLBACKS, *DOCUMENTS, *SLIDE_FIGURES},
    "wsi-dicom-empty": {"sr.dcm", *FALLBACKS, *DOCUMENTS, "figures/slide-overview.png", "figures/priority.png"},
    "wsi-mapped": {"sr.dcm", "overview.dcm", *FALLBACKS, *DOCUMENTS, *SLIDE_FIGURES},
    "wsi-local": {*DOCUMENTS, *SLIDE_FIGURES},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_case_writes_its_files_and_lists_them(cases: dict[str, Case], name: str) -> None:
    case = cases[name]
    assert set(case.outcome.files) == EXPECTED[name]
    assert all((case.out / f).is_file() for f in case.outcome.files)
    assert case.outcome.missing == ()
    # the objects for PACS are the top-level DICOM files; fallbacks stay back for refusals
    assert sorted(o.file for o in case.outcome.dicom) == sorted(f for f in EXPECTED[name] if "/" not in f
                                                                and f.endswith(".dcm"))
    for output in case.outcome.dicom:
        header = pydicom.dcmread(case.out / output.file, stop_before_pixels=True)
        assert (header.SOPClassUID, header.SOPInstanceUID) == (output.sop_class_uid, output.sop_instance_uid)
    if name == "wsi-local":
        reason = ("no patient context: the slide's filename mapping and sidecar gave no patient and accession, "
                  "so no DICOM objects were made for PACS")
        assert case.outcome.unsent_reason == reason and case.outcome.warnings == (reason,)
        assert not _dicom_files(case)
    else:
        assert case.outcome.warnings == () and case.outcome.unsent_reason is None


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"wsi-local"}))
def test_every_dicom_object_passes_dciodvfy(cases: dict[str, Case], name: str) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dicom3tools is not installed (make test installs it)")
    files = _dicom_files(cases[name])
    assert files
    for path in files:
        proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120, check=False)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{name}/{path.relative_to(cases[name].out)}: {errors}"


@pytest.mark.parametrize("name", ["mri", "wsi-dicom", "wsi-mapped", "mri-empty"])
def test_dsrdump_reads_both_srs(cases: dict[str, Case], name: str) -> None:
    if shutil.which("dsrdump") is None:
        pytest.skip("dcmtk is not installed")
    for path in (cases[name].out / "sr.dcm", cases[name].out / "fallback" / "sr-comprehensive.dcm"):
        proc = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "Imaging Measurement Report" in proc.stdout and "Device Observer Name" in proc.stdout
        if name == "mri":
            assert 'NUM:(,,"Probability of cancer")="0.91"' in proc.stdout
            assert "Referenced Segment" in proc.stdout
        if name.startswith("wsi"):
            assert 'NUM:(,,"Circulating tumour cell count")' in proc.stdout


def test_highdicom_reads_back_the_mri_objects(cases: dict[str, Case]) -> None:
    case = cases["mri"]
    sr = hd.sr.srread(case.out / "sr.dcm")
    seg = hd.seg.segread(case.out / "seg.dcm")
    lesions = sr.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_uid for g in lesions] == [s.TrackingUID for s in seg.SegmentSequence]
    probabilities = [g.get_measurements(name=codes.DCM.ProbabilityOfCancer)[0].value for g in lesions]
    assert probabilities == [les["malignancy_probability"] for les in case.doc["summary"]["lesions"]]
    labels = [g.get_qualitative_evaluations(name=codes.SCT.Classification)[0].value for g in lesions]
    assert labels == [codes.SCT.Malignant, codes.SCT.Benign]
    evidence = {uid[2] for uid in sr.get_evidence()}
    assert seg.SOPInstanceUID in evidence and len(evidence) == MR_SPEC.slices + 1


def test_empty_results_are_valid_objects_that_say_so(cases: dict[str, Case]) -> None:
    mri = hd.sr.srread(cases["mri-empty"].out / "sr.dcm")
    (group,) = mri.content.get_image_measurement_groups()
    assert group.get_qualitative_evaluations()[0].value == codes.SCT.Absent
    assert "No lesion found." in (cases["mri-empty"].out / "report.html").read_text()
    slide = hd.sr.srread(cases["wsi-dicom-empty"].out / "sr.dcm")
    (group,) = slide.content.get_image_measurement_groups()
    counts = {m.name.meaning: m.value for m in group.get_measurements()}
    assert counts["Circulating tumour cell count"] == 0 and counts["Circulating tumour microemboli count"] == 0
    assert "No circulating tumour cells (CTC) or clusters (CTM) detected" in (
        cases["wsi-dicom-empty"].out / "report.html").read_text()


def test_a_mapped_slide_gets_a_study_of_its_own_with_its_overview_as_evidence(cases: dict[str, Case]) -> None:
    out = cases["wsi-mapped"].out
    overview = pydicom.dcmread(out / "overview.dcm")
    sr = hd.sr.srread(out / "sr.dcm")
    assert (sr.PatientID, sr.AccessionNumber) == ("1234", "ACC-77")
    assert sr.StudyInstanceUID == overview.StudyInstanceUID
    assert [uid[2] for uid in sr.get_evidence()] == [overview.SOPInstanceUID]
    assert overview.Rows > 100 and overview.ContainerIdentifier == "ACC-77_P1234"


# ------------------------------------------------------------------------------------------ the PDF


@pytest.mark.parametrize("name", ["mri", "wsi-mapped", "mri-empty"])
def test_pdf_pages_are_not_blank_and_hold_the_figures(cases: dict[str, Case], name: str, tmp_path: Path) -> None:
    if shutil.which("pdftoppm") is None:
        pytest.skip("poppler-utils is not installed (make test installs it)")
    case = cases[name]
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(case.out / "report.pdf"), str(tmp_path / "page")],
                   check=True, timeout=120)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert pages
    for page in pages:
        grey = np.asarray(Image.open(page).convert("L"), dtype=np.float32)
        body = grey[: int(grey.shape[0] * 0.92)]  # without the running footer ("page n of m")
        assert (body < 200).mean() > 0.002, f"{page.name} is blank"
    listing = subprocess.run(["pdfimages", "-list", str(case.out / "report.pdf")], capture_output=True, text=True,
                             check=True, timeout=60).stdout.splitlines()[2:]
    figures = [f for f in case.outcome.files if f.startswith("figures/")]
    assert len([line for line in listing if line.split()[2] == "image"]) == len(figures)
    encapsulated = pydicom.dcmread(case.out / "fallback" / "report-pdf.dcm")
    pdf = (case.out / "report.pdf").read_bytes()
    assert bytes(encapsulated.EncapsulatedDocument)[: len(pdf)] == pdf


# ------------------------------------------------------------------------------------------ superseding, retries


def test_a_retry_replaces_and_new_content_supersedes(cases: dict[str, Case], tmp_path: Path) -> None:
    case = cases["mri-empty"]
    retry_out, newer_out = tmp_path / "retry", tmp_path / "newer"
    retry_out.mkdir()
    newer_out.mkdir()
    retry = PipelineInput(**{**case.inp.__dict__, "previous_result": case.out})
    write_reports(case.doc, retry, retry_out)
    newer = PipelineInput(**{**case.inp.__dict__, "previous_result": case.out, "fingerprint": "mr-2"})
    write_reports(case.doc, newer, newer_out)
    first = pydicom.dcmread(case.out / "sr.dcm")
    again = pydicom.dcmread(retry_out / "sr.dcm")
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (first.SOPInstanceUID, first.SeriesInstanceUID)
    assert "PredecessorDocumentsSequence" not in again
    superseding = pydicom.dcmread(newer_out / "sr.dcm")
    assert superseding.SOPInstanceUID != first.SOPInstanceUID
    predecessor = superseding.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == first.SOPInstanceUID
    fallback = pydicom.dcmread(newer_out / "fallback" / "sr-comprehensive.dcm")
    assert fallback.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0] \
        .ReferencedSOPInstanceUID == first.SOPInstanceUID


class _GroundTruthMri:
    """Stands in for the mri-tumour pipeline: the ground truth as its result (no trained model needed)."""

    name: ClassVar[str] = "mri-tumour"
    version: ClassVar[str] = "1.0.0"

    def __init__(self, series: MRSeries) -> None:
        self.series = series

    def run(self, inp: PipelineInput, out_dir: Path) -> Any:
        from pipelines.base import ModelRef, PipelineResult

        _label_map(self.series, self.series.lesion_mask)(out_dir)
        return PipelineResult(summary=_mri_summary(self.series, True), files=("lesions.nii.gz",),
                              models=tuple(ModelRef(**m) for m in MRI_MODELS))


def test_agent_results_execute_records_the_reports_in_result_json(cases: dict[str, Case], tmp_path: Path) -> None:
    from agent.results import execute

    series = write_mr_series(tmp_path / "mr", MR_SPEC)
    inp = PipelineInput(kind="dicom-series", key=series.series_uid, paths=tuple(series.files),
                        study_uid=series.study_uid, series_uid=series.series_uid, job_id=42, fingerprint="mr-1")
    target = tmp_path / "results" / "job-000042"
    target.parent.mkdir()
    doc = execute(_GroundTruthMri(series), inp, target, tmp_path / "staging", extra={"job_id": 42},
                  data_dir=tmp_path / "data")
    assert set(doc["reports"]) == EXPECTED["mri"]
    assert json.loads((target / "result.json").read_text())["reports"] == doc["reports"]
    # the same input, content and version as the "mri" case: the same objects, whichever folder holds them
    for name in ("sr.dcm", "seg.dcm", "fallback/sr-comprehensive.dcm"):
        assert pydicom.dcmread(target / name).SOPInstanceUID == pydicom.dcmread(cases["mri"].out / name).SOPInstanceUID
    assert sorted(p.name for p in target.glob("*.dcm")) == ["seg.dcm", "sr.dcm"]  # what the daemon queues


def test_unknown_pipelines_get_no_reports(tmp_path: Path) -> None:
    inp = PipelineInput(kind="slide", key="x", paths=(tmp_path / "x.svs",))
    assert write_reports(_doc("test-scripted", inp, {}, []), inp, tmp_path) == ReportOutcome((), ())
    assert list(tmp_path.iterdir()) == []


def test_inspect_gets_documents_only(tmp_path: Path) -> None:
    Image.new("RGB", (64, 48), (120, 30, 90)).save(tmp_path / "preview.png")
    inp = PipelineInput(kind="slide", key="s.svs", paths=(tmp_path / "s.svs",))
    outcome = write_reports(_doc("inspect", inp, {"format": "aperio", "width_px": 64, "levels": [{"width": 64}]},
                                 []), inp, tmp_path)
    assert outcome == ReportOutcome(("report.html", "report.json", "report.pdf"), ())
    assert "aperio" in (tmp_path / "report.html").read_text()


# ------------------------------------------------------------------------------------------ PACS


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'out.db'}")
    yield s
    s.close()


def _send(store: Store, destination: Destination, result: Path, outcome: ReportOutcome, job: str = "first",
          rounds: int = 3) -> None:
    """Commit a job's success with its objects' outbox entries, as the executor does, and let the outbox send."""
    inp, _ = store.upsert_file_input(InputKind.SLIDE, result / job, result.name, {})
    store.enqueue(inp.id, "reports", "1")
    claimed = store.claim()
    assert claimed is not None and outcome.dicom
    deliveries = [Delivery(destination.name, result / o.file, o.sop_class_uid, o.sop_instance_uid)
                  for o in outcome.dicom]
    store.succeed(claimed.id, result, {}, [], deliveries)
    sender = outbox_sender(store, [destination], FAST, "ONCOAGENT")
    for _ in range(rounds):
        sender.send_due()


def test_orthanc_receives_sr_seg_and_annotations_in_the_source_study(cases: dict[str, Case], store: Store,
                                                                      tmp_path: Path) -> None:
    orthanc = Orthanc(tmp_path / "orthanc")
    orthanc.start()
    try:
        sources = [*cases["mri"].inp.paths, shared("wsi/highdicom_sm_image.dcm")]
        ids = [orthanc.upload(p) for p in sources]
        destination = Destination(name="pacs", ae_title=orthanc.ae_title, host="127.0.0.1", port=orthanc.dicom_port)
        for name in ("mri", "wsi-dicom"):
            _send(store, destination, cases[name].out, cases[name].outcome)
        assert {i.status for i in store.outbox_list()} == {OutboxStatus.SENT}
        for name, source_id, expected in (("mri", ids[0], {"MR", "SEG", "SR"}),
                                          ("wsi-dicom", ids[-1], {"SM", "ANN", "SR"})):
            study = orthanc.get(f"/instances/{source_id}/study")
            modalities = {orthanc.get(f"/series/{s}")["MainDicomTags"]["Modality"] for s in study["Series"]}
            assert modalities == expected, name
            received = {orthanc.get(f"/instances/{i}/simplified-tags")["SOPInstanceUID"]
                        for s in study["Series"] for i in orthanc.get(f"/series/{s}")["Instances"]}
            for path in cases[name].out.glob("*.dcm"):
                assert pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID in received
        # a retry renders the same result again into its own folder: its objects replace the first ones
        before = len(orthanc.get("/instances"))
        retry = tmp_path / "retry"
        shutil.copytree(cases["mri"].out, retry, ignore=shutil.ignore_patterns("*.dcm", "fallback", "report.*"))
        _send(store, destination, retry, write_reports(cases["mri"].doc, cases["mri"].inp, retry), job="retry")
        assert {i.status for i in store.outbox_list()} == {OutboxStatus.SENT}
        assert len(orthanc.get("/instances")) == before
    finally:
        orthanc.discard()


def test_a_pacs_that_refuses_3d_sr_gets_the_comprehensive_sr(cases: dict[str, Case], store: Store) -> None:
    received: list[str] = []
    ae = AE(ae_title="PICKY")
    for sop_class in (ComprehensiveSRStorage, EncapsulatedPDFStorage):
        ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])

    def handle(event: evt.Event) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0

    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)])
    try:
        destination = Destination(name="picky", ae_title="PICKY", host="127.0.0.1", port=port)
        _send(store, destination, cases["mri-empty"].out, cases["mri-empty"].outcome)
        (item,) = store.outbox_list()
        assert item.status is OutboxStatus.SENT and item.sop_class_uid == ComprehensiveSRStorage
        fallback = pydicom.dcmread(cases["mri-empty"].out / "fallback" / "sr-comprehensive.dcm")
        assert received == [fallback.SOPInstanceUID]
        assert pydicom.dcmread(cases["mri-empty"].out / "sr.dcm").SOPClassUID == Comprehensive3DSRStorage
    finally:
        server.shutdown()

