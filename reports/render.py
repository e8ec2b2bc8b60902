"""Entry point of the reports: after a pipeline ran, every output format of its result.

:func:`write_reports` is called by :func:`agent.results.execute` with the result's ``result.json`` content,
the input and the (staging) result folder. It writes

* ``report.html`` and ``report.pdf`` with ``figures/*.png``, and ``report.json``, the same content for
  machines without the patient's identity (every known pipeline);
* for results with patient/study context (DICOM inputs; slides whose accession mapping names patient and
  accession): ``sr.dcm`` (Comprehensive 3D SR, TID 1500), ``seg.dcm`` (MRI lesions), ``annotations.dcm``
  (every detection on a DICOM whole-slide image), ``overview.dcm`` (the overview of a slide that is not
  DICOM, as the SR's evidence), all at the top level where the daemon queues them for PACS;
* the fallbacks the outbox sends when a PACS refuses a SOP class: ``fallback/sr-comprehensive.dcm`` (the
  same content as Comprehensive SR) and ``fallback/report-pdf.dcm`` (the PDF as Encapsulated PDF).

While a model of the result is not validated at this site (``doc["validation_mark"]``, set by the daemon), the
reports' first line and the SRs' text say so (:mod:`reports.validation_mark`).

An optional piece that fails (a figure, the key slices) becomes a warning on the result. An output the input
calls for that could not be made (the SR, SEG, annotations or overview of a result with patient context, the
report and its PDF, the fallbacks) is returned as a :class:`~reports.outcome.MissingOutput`: the caller fails
the job's delivery with that reason. A slide without patient context keeps its reports locally and says so in
``unsent_reason``. Nothing here raises for ordinary trouble.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pydicom
from openslide import OpenSlideError
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pipelines.base import PipelineInput
from pipelines.errors import PipelineError
from reports import context as study_context
from reports import document, figures, sources
from reports.annotations import detection_annotations, level0_image
from reports.capture import slide_overview
from reports.context import StudyContext
from reports.encapsulated import encapsulated_pdf
from reports.errors import ReportError
from reports.findings import (
    INSPECT_PIPELINE,
    MRI_PIPELINE,
    WSI_PIPELINE,
    MriFindings,
    SlideFindings,
)
from reports.outcome import DicomOutput, MissingOutput, ReportOutcome
from reports.producer import Producer
from reports.seg import lesion_segmentation
from reports.sr import MAX_REGIONS, comprehensive_3d_sr, comprehensive_sr, mri_report, slide_report
from reports.validation_mark import mark_of, mark_report

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
REPORT_PDF = "report.pdf"
FIGURES_DIR = "figures"
SR_FILE = "sr.dcm"
SEG_FILE = "seg.dcm"
ANNOTATIONS_FILE = "annotations.dcm"
OVERVIEW_FILE = "overview.dcm"
FALLBACK_DIR = "fallback"
FALLBACK_SR_FILE = f"{FALLBACK_DIR}/sr-comprehensive.dcm"
FALLBACK_PDF_FILE = f"{FALLBACK_DIR}/report-pdf.dcm"
KNOWN_PIPELINES = (WSI_PIPELINE, MRI_PIPELINE, INSPECT_PIPELINE)
CROPS = 8
GAUGES = 6

# what the pipelines' readers, the reports themselves and the libraries raise for input they cannot use;
# anything else is a bug and propagates to the caller
RECOVERABLE = (
    PipelineError, ReportError, ValueError, TypeError, KeyError, IndexError, AttributeError, OSError, RuntimeError,
    InvalidDicomError, OpenSlideError,
)
T = TypeVar("T")


def write_reports(doc: dict[str, Any], inp: PipelineInput, out_dir: Path) -> ReportOutcome:
    """Every report of the result ``doc`` of ``inp`` into ``out_dir`` (see the module docstring)."""
    pipeline = str(doc.get("pipeline", ""))
    if pipeline not in KNOWN_PIPELINES:
        log.debug("no reports for pipeline %s", pipeline)
        return ReportOutcome((), ())
    run = _Run(doc, inp, out_dir)
    run.write()
    log.info("job %s: reports %s", inp.job_id, ", ".join(run.files) or "none")
    return ReportOutcome(tuple(run.files), tuple(run.warnings), tuple(run.dicom), tuple(run.missing),
                         run.unsent_reason)


class _Run:
    """One call of :func:`write_reports`: what has been written and what went wrong so far."""

    def __init__(self, doc: dict[str, Any], inp: PipelineInput, out_dir: Path) -> None:
        self.doc = doc
        self.inp = inp
        self.out_dir = out_dir
        self.pipeline = str(doc.get("pipeline", ""))
        self.files: list[str] = []
        self.warnings: list[str] = []
        self.figures: list[figures.Figure] = []
        self.objects: list[document.DicomObject] = []
        self.dicom: list[DicomOutput] = []  # top-level objects, for PACS
        self.missing: list[MissingOutput] = []
        self.unsent_reason: str | None = None
        self.producer = Producer.of_result(doc, inp.key, inp.study_uid, inp.series_uid, inp.fingerprint)
        self.headers: list[Dataset] = []
        self.context: StudyContext | None = None
        self.report_objects: tuple[Any, list[Dataset]] | None = None  # (MeasurementReport, evidence)

    # ---------------------------------------------------------------------------------- helpers

    def attempt(self, what: str, action: Callable[[], T]) -> T | None:
        """Run ``action``; a recoverable failure becomes the warning "<what> not produced: …"."""
        try:
            return action()
        except RECOVERABLE as exc:
            log.warning("job %s series %s: %s not produced: %s: %s", self.inp.job_id, self.inp.series_uid, what,
                        type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            self.warnings.append(f"{what} not produced: {type(exc).__name__}: {exc}")
            return None

    def require(self, what: str, action: Callable[[], T]) -> T | None:
        """Run ``action`` for an output the input calls for; a recoverable failure is a missing output."""
        try:
            return action()
        except RECOVERABLE as exc:
            log.error("job %s series %s: %s not produced: %s: %s", self.inp.job_id, self.inp.series_uid, what,
                      type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            self.missing.append(MissingOutput(what, f"{type(exc).__name__}: {exc}",
                                              transient=isinstance(exc, OSError)))
            return None

    def lack(self, what: str, reason: str) -> None:
        """An output the input calls for cannot be made at all."""
        self.missing.append(MissingOutput(what, reason))

    def save(self, dataset: Dataset, name: str, role: str) -> None:
        target = self.out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(target, enforce_file_format=True)
        self.files.append(name)
        sop_class = getattr(dataset.SOPClassUID, "name", str(dataset.SOPClassUID))
        self.objects.append(document.DicomObject(name, sop_class, str(dataset.SOPInstanceUID), role))
        if "/" not in name:  # fallbacks stay back: the outbox sends them only in place of a refused object
            self.dicom.append(DicomOutput(name, str(dataset.SOPClassUID), str(dataset.SOPInstanceUID)))

    def figure_path(self, name: str) -> Path:
        return self.out_dir / FIGURES_DIR / name

    def add_figure(self, figure: figures.Figure | None) -> None:
        if figure is not None:
            self.figures.append(figure)
            self.files.append(figure.file)

    # ---------------------------------------------------------------------------------- the run

    def write(self) -> None:
        self._context()
        if self.pipeline == WSI_PIPELINE:
            found = self.require("slide reports", lambda: SlideFindings.from_summary(self.doc["summary"]))
            if found is not None:
                self._slide(found)
        elif self.pipeline == MRI_PIPELINE:
            mri = self.require("MRI reports", lambda: MriFindings.from_summary(self.doc["summary"]))
            if mri is not None:
                self._mri(mri)
        else:
            self._inspect()
        pdf = self._documents()
        self._fallbacks(pdf)

    def _context(self) -> None:
        objects_wanted = self.pipeline in (WSI_PIPELINE, MRI_PIPELINE)
        if self.inp.kind == "dicom-series":
            self.headers, problems = study_context.read_headers(self.inp.paths)
            self.warnings += problems
            if self.headers:
                self.context = study_context.from_dataset(self.headers[0])
            elif objects_wanted:
                self.lack("DICOM objects", "no readable DICOM source instance among the series' files")
            return
        mapping = self.inp.attrs.get("context")
        problems = []
        if isinstance(mapping, dict) and mapping:
            self.context, problems = study_context.from_mapping(mapping, self.inp.attrs.get("context_source"))
            self.warnings += problems if objects_wanted else [p for p in problems if "ignored" in p]
        if objects_wanted and self.context is None:
            incomplete = [p for p in problems if p.startswith("no patient/study context")]
            self.unsent_reason = (f"no patient context: {incomplete[0]}" if incomplete else
                                  "no patient context: the slide's filename mapping and sidecar gave no patient "
                                  "and accession, so no DICOM objects were made for PACS")
            if not incomplete:
                self.warnings.append(self.unsent_reason)

    # ---------------------------------------------------------------------------------- slides

    def _slide(self, found: SlideFindings) -> None:
        view = self.attempt("slide figures", lambda: sources.read_slide_view(self.inp.paths, found.mpp_um))
        if view is not None:
            self.add_figure(self.attempt("slide overview figure", lambda: figures.slide_overview(
                self.figure_path("slide-overview.png"), self.out_dir, view, found.detections)))
            if found.detections:
                self.add_figure(self.attempt("CTC density figure", lambda: figures.density_heatmap(
                    self.figure_path("ctc-density.png"), self.out_dir, view, found.detections)))
        top = found.top_detections(CROPS)
        if top:
            crops = self.attempt("detection crops", lambda: sources.read_crops(self.inp.paths, top))
            if crops:
                self.add_figure(self.attempt("detection crops figure", lambda: figures.detection_crops(
                    self.figure_path("top-detections.png"), self.out_dir, crops)))
        self.add_figure(self.attempt("priority gauge", lambda: figures.probability_gauges(
            self.figure_path("priority.png"), self.out_dir,
            [("Triage priority", found.priority_score, found.priority.upper())],
            "Triage priority", "The triage score from 0 (nothing found) to 1; CTMs weigh three times a CTC.")))
        if self.context is None:
            return
        if self.headers:
            self._slide_dicom(found)
        elif view is not None:
            self._slide_mapped(found, view)
        else:
            self.lack("SR", "the slide could not be read for its overview, the SR's evidence")

    def _slide_dicom(self, found: SlideFindings) -> None:
        level0 = level0_image(self.headers)
        if level0 is None:
            self.warnings.append("no VL Whole Slide Microscopy VOLUME image among the sources: detections are "
                                 "not referenced as image regions and no bulk annotations were written")
        elif found.detections:
            ann = self.require("bulk annotations", lambda: detection_annotations(found.detections, level0,
                                                                                 self.producer))
            if ann is not None:
                self.save(ann, ANNOTATIONS_FILE, "every detection (Microscopy Bulk Simple Annotations)")
        if len(found.detections) > MAX_REGIONS and level0 is not None:
            self.warnings.append(f"{len(found.detections)} detections: the SR lists the {MAX_REGIONS} most confident "
                                 "as image regions; the bulk annotations hold all")

        def build() -> None:
            from highdicom.sr import SubjectContext

            subject = SubjectContext.from_image(level0) if level0 is not None else None
            report = slide_report(found, self.producer, level0, regions=True, subject=subject)
            self._sr(report, list(self.headers))

        self.require("SR", build)

    def _slide_mapped(self, found: SlideFindings, view: figures.SlideView) -> None:
        context = self.context
        assert context is not None
        container = context.container_identifier or Path(self.inp.key).stem
        spacing = None
        if found.mpp_um is not None:
            spacing = (found.mpp_um[1] * view.l0_per_px[1] / 1000, found.mpp_um[0] * view.l0_per_px[0] / 1000)
        overview = self.require("slide overview image", lambda: slide_overview(
            view.rgb, context, self.producer, container, spacing))
        if overview is None:
            return
        self.save(overview, OVERVIEW_FILE, "the analysed slide's overview (Secondary Capture), the SR's evidence")
        self.require("SR", lambda: self._sr(slide_report(found, self.producer, overview, regions=False),
                                            [overview]))

    # ---------------------------------------------------------------------------------- MRI

    def _mri(self, found: MriFindings) -> None:
        label_path = self.out_dir / found.label_map_file if found.label_map_file else None
        loaded = None
        objects_wanted = self.context is not None and bool(self.headers)
        if found.lesions:
            if label_path is None or not label_path.is_file():
                self.lack("SEG", "the label map is missing from the result")
            else:
                read = self.require if objects_wanted else self.attempt
                loaded = read("label map", lambda: sources.read_label_volume(label_path))
        if loaded is not None:
            label_image = loaded[1]
            slices = self.attempt("key slices", lambda: sources.key_slices(self.inp.paths, label_image,
                                                                           found.lesions))
            if slices:
                self.add_figure(self.attempt("key slice figure", lambda: figures.mri_key_slices(
                    self.figure_path("key-slices.png"), self.out_dir, slices)))
        if any(les.features for les in found.lesions):
            self.add_figure(self.attempt("radiomics chart", lambda: figures.radiomics_chart(
                self.figure_path("radiomics.png"), self.out_dir, found.lesions)))
        gauges = [(les.name, les.malignancy_probability, les.label or "")
                  for les in found.lesions if les.malignancy_probability is not None][:GAUGES]
        if gauges:
            self.add_figure(self.attempt("probability gauge", lambda: figures.probability_gauges(
                self.figure_path("malignancy.png"), self.out_dir, gauges, "Probability of malignancy",
                "The classifier's probability that each lesion is malignant, with the label it gave.")))
        if not objects_wanted:
            return
        seg = None
        if loaded is not None:
            label_volume = loaded[0]
            seg = self.require("SEG", lambda: lesion_segmentation(label_volume, found.lesions, self.headers,
                                                                  self.producer))
            if seg is not None:
                self.save(seg.dataset, SEG_FILE, "lesion outlines (Segmentation), one segment per lesion")
        segmentation = seg.dataset if seg is not None else None
        numbers = seg.segment_numbers if seg is not None else {}
        evidence = [*self.headers, *([segmentation] if segmentation is not None else [])]
        if found.lesions and seg is None:
            return  # the SR would lack the SEG it references; the job fails on the missing SEG
        self.require("SR", lambda: self._sr(mri_report(found, self.producer, segmentation, numbers), evidence))

    # ---------------------------------------------------------------------------------- inspect

    def _inspect(self) -> None:
        preview = self.out_dir / "preview.png"
        if preview.is_file():
            self.figures.append(figures.Figure("preview.png", "Preview", "The input as the inspection saw it."))

    # ---------------------------------------------------------------------------------- SR, documents

    def _sr(self, report: Any, evidence: list[Dataset]) -> None:
        mark_report(report, mark_of(self.doc))  # the fallback SR is built from the same, marked, report
        previous = self._previous_sr()
        sr = comprehensive_3d_sr(report, evidence, self.producer, previous)
        self.save(sr, SR_FILE, "findings (Comprehensive 3D SR, TID 1500)")
        self.report_objects = (report, evidence)

    def _previous_sr(self) -> Dataset | None:
        previous = self.inp.previous_result
        if previous is None or not (previous / SR_FILE).is_file():
            return None
        try:
            return pydicom.dcmread(previous / SR_FILE, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as exc:
            self.warnings.append(f"the superseded result's SR is unreadable ({exc}); no predecessor reference")
            return None

    def _documents(self) -> bytes | None:
        name = document.input_name(self.inp.kind, self.inp.key, self.headers)
        report = self.require("report", lambda: document.build_document(
            self.doc, self.context, name, self.figures, self.objects, self.warnings))
        if report is None:
            return None
        html = document.render_html(report)
        (self.out_dir / REPORT_HTML).write_text(html, encoding="utf-8")
        (self.out_dir / REPORT_JSON).write_text(json.dumps(document.machine_readable(report), indent=1),
                                                encoding="utf-8")
        self.files += [REPORT_HTML, REPORT_JSON]
        pdf_path = self.out_dir / REPORT_PDF
        if self.require("PDF report", lambda: document.write_pdf(html, self.out_dir, pdf_path)) is None:
            return None
        self.files.append(REPORT_PDF)
        return pdf_path.read_bytes()

    def _fallbacks(self, pdf: bytes | None) -> None:
        if self.report_objects is None or self.context is None:
            return
        report, evidence = self.report_objects
        previous = self._previous_sr()
        fallback_sr = self.require("Comprehensive SR fallback",
                                   lambda: comprehensive_sr(report, evidence, self.producer, previous))
        if fallback_sr is not None:
            self.save(fallback_sr, FALLBACK_SR_FILE, "fallback: the same findings as Comprehensive SR")
        if pdf is not None:
            context = self.context
            title = document.TITLES.get(self.pipeline, "OncoAgent report")
            encapsulated = self.require("Encapsulated PDF fallback", lambda: encapsulated_pdf(
                pdf, context, self.producer, f"OncoAgent: {title}", self.headers or evidence))
            if encapsulated is not None:
                self.save(encapsulated, FALLBACK_PDF_FILE, "fallback: the PDF report as Encapsulated PDF")
