"""A reviewer's sign-off of a result: the corrected findings as a verified SR and a re-rendered report.

The agent (:mod:`agent.signoff`) hands over the result (``result.json``'s content), the reviewer's corrections
and the objects the AI's SR was built on (the input's DICOM headers, the AI's SEG or overview, the SR it
supersedes). Built here, from those alone:

* the verified SR: the same TID 1500 content as the AI's (:mod:`reports.sr`) with the corrected figures
  (slides: the confirmed counts and densities, per-detection regions where the AI's SR had them, i.e. on a
  DICOM whole-slide image; MRI: the accepted lesions only, with the reviewer's label, each still referencing
  its SEG segment). The observation context names the reviewer (TID 1003, role in procedure "Verifying")
  beside the pipeline as device; ``VerificationFlag`` VERIFIED with the reviewer as verifying observer,
  ``PreliminaryFlag`` FINAL, and the predecessor (the previous signed version, else the AI's SR) in the
  Predecessor Documents Sequence. Every signed version of one result goes into one series of its own
  ("… reviewed", beside the AI's SR series: PACS viewers show the AI's findings and the reviewed ones apart,
  and the versions of the review together), the version as Instance Number. The triage score is left out: it
  ordered the worklist; the reviewed counts are the result. A Comprehensive SR with the same content is the
  fallback for a PACS that refuses the 3D SOP class, as for the AI's SR;
* the report (HTML, PDF) with the corrected figures and the line "Reviewed and signed by …".

Both carry the site-validation mark that the agent puts in ``doc`` at sign-off (:mod:`reports.validation_mark`)
while a model of the result is not validated at this site.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from highdicom.seg import Segmentation
from highdicom.sr import (
    CodedConcept,
    Comprehensive3DSR,
    ComprehensiveSR,
    MeasurementReport,
    ObserverContext,
    PersonObserverIdentifyingAttributes,
    SubjectContext,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dicom_codes

from reports import document
from reports.annotations import level0_image
from reports.context import StudyContext
from reports.errors import ReportInputError
from reports.findings import MRI_PIPELINE, WSI_PIPELINE, MriFindings, SlideFindings
from reports.producer import Producer
from reports.sr import Identity, mri_report, slide_report, sr_document
from reports.uids import reviewed_series_uid, reviewed_uids
from reports.validation_mark import mark_of, mark_report

REVIEWED_SERIES_NUMBER = 9102
REVIEWED_NOTICE = (
    "For research use only. Not for use in diagnostic procedures. The findings were produced by an algorithm "
    "and reviewed, corrected and signed by the physician named above."
)
PHYSICIAN_ROLES = ("pathologist", "radiologist")


@dataclass(frozen=True)
class Review:
    """Who signed which version, when (epoch seconds), on behalf of which organization, with what note."""

    reviewer: str
    role: str
    organization: str
    signed_at: float
    version: int
    note: str | None = None

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.signed_at, UTC)

    def signed_lines(self) -> tuple[str, ...]:
        line = (f"Reviewed and signed by {self.reviewer} ({self.role}) on "
                f"{self.when.strftime('%Y-%m-%d %H:%M UTC')} (version {self.version}).")
        return (line, f"Note: {self.note}") if self.note else (line,)


@dataclass(frozen=True)
class Sources:
    """What the AI's SR was built on, read back by the caller: the AI's SR (its header), the SR the signed one
    supersedes (the previous signed version's, or the AI's), the input's DICOM headers (none for a slide
    file), and the AI's SEG (MRI) or overview (a slide file with context) when it made one."""

    ai_sr: Dataset
    predecessor: Dataset
    headers: Sequence[Dataset] = ()
    seg: Dataset | None = None  # read whole (pixel data too)
    overview: Dataset | None = None


# ------------------------------------------------------------------------------------------ corrections


def corrected_doc(doc: Mapping[str, Any], corrected: Mapping[str, Any]) -> dict[str, Any]:
    """result.json's content with the reviewer's figures in place of the AI's summary: a slide's counts,
    densities and detections (``corrected["counts"]``, ``corrected["detections"]``, rejected ones left out),
    an MR series' accepted lesions with their (possibly changed) labels (``corrected["lesions"]``)."""
    pipeline = doc.get("pipeline")
    summary = dict(doc.get("summary") or {})
    try:
        if pipeline == WSI_PIPELINE:
            counts = corrected["counts"]
            ctc, ctm = int(counts.get("CTC", 0)), int(counts.get("CTM", 0))
            area = float(summary.get("tissue_area_mm2") or 0.0)
            summary.update(
                ctc_count=ctc, ctm_count=ctm,
                density_per_mm2={"CTC": ctc / area, "CTM": ctm / area} if area > 0 else {},
                detections=[{"class": d["class"], "confidence": d.get("confidence"), "l0_box": list(d["l0_box"]),
                             "source": d.get("source", "ai")} for d in corrected.get("detections") or ()],
            )
        elif pipeline == MRI_PIPELINE:
            lesions = [dict(les) for les in corrected["lesions"] if les.get("accepted")]
            for lesion in lesions:
                lesion.pop("accepted", None)
            malignant = sum(1 for les in lesions if les.get("label") == "malignant")
            summary.update(lesions=lesions, lesion_count=len(lesions), series_summary={
                **(summary.get("series_summary") or {}), "lesions": len(lesions), "malignant": malignant,
                "finding": f"{malignant} lesion(s) classified malignant" if lesions else "no lesion found"})
        else:
            raise ReportInputError(f"no sign-off for pipeline {pipeline!r}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReportInputError(f"corrected findings: {type(exc).__name__}: {exc}") from exc
    return {**doc, "summary": summary}


# ------------------------------------------------------------------------------------------ the SR


def reviewer_context(review: Review) -> ObserverContext:
    """TID 1002/1003: the reviewer as the person observer who verified the device's findings."""
    physician = review.role in PHYSICIAN_ROLES
    return ObserverContext(
        observer_type=CodedConcept.from_code(dicom_codes.cid270.Person),
        observer_identifying_attributes=PersonObserverIdentifyingAttributes(
            name=review.reviewer,
            login_name=review.reviewer,
            organization_name=review.organization,
            role_in_organization=dicom_codes.cid7452.Physician if physician else None,
            role_in_procedure=dicom_codes.cid7453.Verifying,
        ),
    )


def verified_srs(doc: Mapping[str, Any], producer: Producer, sources: Sources, review: Review
                 ) -> tuple[Comprehensive3DSR, ComprehensiveSR]:
    """The verified SR of the corrected result ``doc`` (see :func:`corrected_doc`) and its Comprehensive SR
    fallback. ``producer`` is the AI result's (its lesion tracking UIDs are the SEG's)."""
    uids = reviewed_uids(str(sources.ai_sr.SOPInstanceUID), review.version)
    person = reviewer_context(review)
    report, evidence = _report(doc, producer, uids_producer=dataclasses.replace(producer, uids=uids),
                               sources=sources, person=person)
    mark_report(report, mark_of(doc))
    stamp = review.when.strftime("%Y%m%d%H%M%S+0000")
    identity = Identity(
        series_instance_uid=reviewed_series_uid(str(sources.ai_sr.SOPInstanceUID)),
        sop_instance_uid=uids.instance("sr"),
        series_number=REVIEWED_SERIES_NUMBER,
        instance_number=review.version,
        series_description=f"OncoAgent {producer.pipeline} results, reviewed",
        previous=sources.predecessor,
        verifier=(review.reviewer, review.organization, stamp),
        content_at=review.when,
    )
    sr = sr_document(Comprehensive3DSR, report, evidence, producer, identity)
    fallback = sr_document(ComprehensiveSR, report, evidence, producer,
                           dataclasses.replace(identity, sop_instance_uid=uids.instance("sr-comprehensive")))
    assert isinstance(sr, Comprehensive3DSR) and isinstance(fallback, ComprehensiveSR)
    return sr, fallback


def _report(doc: Mapping[str, Any], producer: Producer, *, uids_producer: Producer, sources: Sources,
            person: ObserverContext) -> tuple[MeasurementReport, list[Dataset]]:
    if doc.get("pipeline") == WSI_PIPELINE:
        found = SlideFindings.from_summary(doc["summary"])
        level0 = level0_image(sources.headers)
        if level0 is not None:  # a DICOM whole-slide image: detections as regions, as the AI's SR had them
            subject = SubjectContext.from_image(level0)
            return slide_report(found, uids_producer, level0, regions=True, subject=subject, triage=False,
                                person=person), list(sources.headers)
        if sources.overview is not None:  # a slide file: counts only, on the AI's overview
            return slide_report(found, uids_producer, sources.overview, regions=False, triage=False,
                                person=person), [sources.overview]
        if not sources.headers:
            raise ReportInputError("the slide's result has neither DICOM sources nor an overview image")
        return slide_report(found, uids_producer, None, regions=False, triage=False, person=person), \
            list(sources.headers)
    mri = MriFindings.from_summary(doc["summary"])
    numbers = segment_numbers(sources.seg) if sources.seg is not None else {}
    seg = sources.seg if any(les.index in numbers for les in mri.lesions) else None
    evidence = [*sources.headers, *([seg] if seg is not None else [])]
    if not evidence:
        raise ReportInputError("the MR result has no DICOM sources")
    segmentation = Segmentation.from_dataset(seg, copy=False) if seg is not None else None
    return mri_report(mri, producer, segmentation, numbers, person=person), evidence


def segment_numbers(seg: Dataset) -> dict[int, int]:
    """Lesion index → segment number of the AI's SEG, from its segments' tracking IDs ("Lesion N")."""
    numbers: dict[int, int] = {}
    for segment in seg.get("SegmentSequence", []):
        tracking = str(segment.get("TrackingID", ""))
        if tracking.startswith("Lesion ") and tracking[7:].isdigit():
            numbers[int(tracking[7:])] = int(segment.SegmentNumber)
    return numbers


# ------------------------------------------------------------------------------------------ the report


def reviewed_document(doc: Mapping[str, Any], context: StudyContext | None, input_name: str, review: Review,
                      objects: Sequence[document.DicomObject] = ()) -> document.ReportDocument:
    """The report of the corrected result ``doc``, signed."""
    report = document.build_document(doc, context, input_name, (), objects)
    return dataclasses.replace(
        report,
        title=f"{report.title}, reviewed",
        headline=_headline(doc),
        signed=review.signed_lines(),
        notice=REVIEWED_NOTICE,
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(review.signed_at)),
    )


def _headline(doc: Mapping[str, Any]) -> str:
    if doc.get("pipeline") == WSI_PIPELINE:
        f = SlideFindings.from_summary(doc["summary"])
        return (f"Reviewed: {f.ctc_count} CTC and {f.ctm_count} CTM confirmed on {f.tissue_area_mm2:.2f} mm² "
                "of tissue.")
    m = MriFindings.from_summary(doc["summary"])
    return f"Reviewed: {len(m.lesions)} lesion(s) confirmed, {m.malignant} malignant."

