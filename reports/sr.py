"""Structured reports: a TID 1500 Measurement Report as Comprehensive 3D SR (and Comprehensive SR fallback).

The content follows IHE AI Results: the pipeline is the observer device (its models by name, version and
weights hash), the source series is the evidence, and the findings are measurement groups:

* slides: one TID 1501 group for the slide (CTC and CTM counts, densities per mm² of tissue, the analysed
  area, the triage score and level) and, when the slide is a DICOM whole-slide image, one TID 1410 group per
  detection as an image region on the level-0 image, capped at ``max_regions`` (the most confident first;
  the full set goes to the bulk annotations);
* MRI: one TID 1501 group for the series (number of lesions, how many malignant, total volume, lesion
  present/absent) and one TID 1411 group per lesion (volume, longest diameter, probability of malignancy and
  its label, the classifier's radiomics features), each referencing its segment in the SEG.

Everything is built with highdicom's templates; the document is finished by highdicom's SOP classes, which
copy patient and study from the evidence. A result that supersedes another names the earlier SR in the
Predecessor Documents Sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from highdicom.seg import Segmentation
from highdicom.sr import (
    CodedConcept,
    Comprehensive3DSR,
    ComprehensiveSR,
    DeviceObserverIdentifyingAttributes,
    ImageRegion,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    ReferencedSegment,
    SourceImageForMeasurementGroup,
    SourceImageForRegion,
    SourceImageForSegmentation,
    SourceSeriesForSegmentation,
    SubjectContext,
    TrackingIdentifier,
    VolumetricROIMeasurementsAndQualitativeEvaluations,
)
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from reports import codes
from reports.findings import Detection, Lesion, MriFindings, SlideFindings
from reports.producer import MANUFACTURER, Producer, sr_identification

log = logging.getLogger(__name__)

MAX_REGIONS = 100
SR_SERIES_NUMBER = 9101

Group = (
    MeasurementsAndQualitativeEvaluations
    | PlanarROIMeasurementsAndQualitativeEvaluations
    | VolumetricROIMeasurementsAndQualitativeEvaluations
)


# ------------------------------------------------------------------------------------------ shared parts


def observation_context(producer: Producer, subject: SubjectContext | None = None,
                        person: ObserverContext | None = None) -> ObservationContext:
    """TID 1001: the pipeline as observer device (TID 1004), optionally the specimen as subject and the person
    who verified the device's findings (TID 1003, see :mod:`reports.verified`)."""
    device = DeviceObserverIdentifyingAttributes(
        uid=producer.device_uid,
        name=producer.device_name,
        manufacturer_name=MANUFACTURER,
        model_name=producer.model_names,
    )
    return ObservationContext(
        observer_person_context=person,
        observer_device_context=ObserverContext(
            observer_type=CodedConcept.from_code(codes.OBSERVER_DEVICE), observer_identifying_attributes=device
        ),
        subject_context=subject,
    )


def _measurement(producer: Producer, model: int, name: Code, value: float, unit: Code,
                 derivation: Code | None = None) -> Measurement:
    algorithm = producer.algorithm(model)
    return Measurement(
        name=name,
        value=value,
        unit=unit,
        derivation=derivation,
        algorithm_id=sr_identification(algorithm) if algorithm is not None else None,
    )


# ------------------------------------------------------------------------------------------ slides


def slide_report(
    findings: SlideFindings,
    producer: Producer,
    source_image: Dataset | None,
    *,
    regions: bool,
    max_regions: int = MAX_REGIONS,
    subject: SubjectContext | None = None,
    triage: bool = True,
    person: ObserverContext | None = None,
) -> MeasurementReport:
    """TID 1500 for a ``wsi-ctc`` result. ``source_image`` is the level-0 whole-slide image (``regions``
    true: detections become image regions on it) or, for a slide that is not DICOM, the secondary capture of
    its overview (``regions`` false: counts only). ``triage`` false leaves out the triage score and level (a
    reviewed result: the triage ordered the worklist, the counts are the reviewer's); ``person`` is the
    verifying observer of a reviewed result."""
    measurements = [
        _measurement(producer, 0, codes.CTC_COUNT, findings.ctc_count, codes.UNIT_NONE),
        _measurement(producer, 0, codes.CTM_COUNT, findings.ctm_count, codes.UNIT_NONE),
    ]
    if findings.ctc_density_per_mm2 is not None:
        measurements.append(
            _measurement(producer, 0, codes.CTC_DENSITY, findings.ctc_density_per_mm2, codes.UNIT_PER_MM2)
        )
    if findings.ctm_density_per_mm2 is not None:
        measurements.append(
            _measurement(producer, 0, codes.CTM_DENSITY, findings.ctm_density_per_mm2, codes.UNIT_PER_MM2)
        )
    listed = findings.top_detections(max_regions) if regions and source_image is not None else ()
    measurements.append(_measurement(producer, 0, codes.TISSUE_AREA, findings.tissue_area_mm2, codes.UNIT_MM2))
    if triage:
        measurements.append(_measurement(producer, 0, codes.PRIORITY_SCORE, findings.priority_score,
                                         codes.UNIT_NONE))
    measurements.append(_measurement(producer, 0, codes.REGIONS_LISTED, len(listed), codes.UNIT_NONE))
    level = codes.PRIORITY_LEVELS.get(findings.priority.lower()) if triage else None
    slide_group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=producer.uids.item("slide", 0), identifier="Slide"),
        algorithm_id=producer.pipeline_identification(),
        measurements=measurements,
        qualitative_evaluations=[QualitativeEvaluation(codes.PRIORITY, level)] if level is not None else None,
        source_images=[SourceImageForMeasurementGroup.from_source_image(source_image)] if source_image else None,
    )
    groups: list[Group] = [slide_group]
    if listed and source_image is not None:
        source = SourceImageForRegion.from_source_image(source_image)
        groups += [_detection_group(d, n, source, producer) for n, d in enumerate(listed, start=1)]
    return MeasurementReport(
        observation_context=observation_context(producer, subject, person),
        procedure_reported=codes.PROCEDURE_SLIDE,
        imaging_measurements=groups,
        title=codes.REPORT_TITLE,
    )


def _detection_group(
    detection: Detection, number: int, source: SourceImageForRegion, producer: Producer
) -> PlanarROIMeasurementsAndQualitativeEvaluations:
    box = np.array(
        [
            [detection.l0_x0, detection.l0_y0],
            [detection.l0_x1, detection.l0_y0],
            [detection.l0_x1, detection.l0_y1],
            [detection.l0_x0, detection.l0_y1],
            [detection.l0_x0, detection.l0_y0],
        ],
        dtype=np.float64,
    )
    measurements = [] if detection.confidence is None else [  # None: a cell the reviewer added
        _measurement(producer, 0, codes.DETECTION_CONFIDENCE, detection.confidence, codes.UNIT_NONE)]
    if detection.cls == "CTM" and detection.members:
        measurements.append(_measurement(producer, 0, codes.CLUSTER_MEMBERS, detection.members, codes.UNIT_NONE))
    return PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=producer.uids.item("detection", number), identifier=f"{detection.cls} {number}"
        ),
        referenced_region=ImageRegion(graphic_type="POLYLINE", graphic_data=box, source_image=source),
        finding_type=codes.DETECTION_CLASSES.get(detection.cls, codes.private(detection.cls[:16], detection.cls)),
        finding_category=codes.CELL_CATEGORY if detection.cls == "CTC" else codes.LESION_CATEGORY,
        measurements=measurements,
    )


# ------------------------------------------------------------------------------------------ MRI


def mri_report(
    findings: MriFindings,
    producer: Producer,
    segmentation: Segmentation | None,
    segment_numbers: Mapping[int, int],
    person: ObserverContext | None = None,
) -> MeasurementReport:
    """TID 1500 for an ``mri-tumour`` result; ``segment_numbers`` maps lesion index → segment number in
    ``segmentation`` (lesions without a segment get a TID 1501 group without a region); ``person`` is the
    verifying observer of a reviewed result."""
    series_group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=producer.uids.item("series", 0), identifier="Series"),
        algorithm_id=producer.pipeline_identification(),
        measurements=[
            _measurement(producer, 0, codes.NUMBER_OF_LESIONS, len(findings.lesions), codes.UNIT_NONE),
            _measurement(producer, 1, codes.MALIGNANT_LESIONS, findings.malignant, codes.UNIT_NONE),
            _measurement(producer, 0, codes.TOTAL_LESION_VOLUME, findings.total_volume_ml, codes.UNIT_ML),
        ],
        qualitative_evaluations=[
            QualitativeEvaluation(codes.LESION_PRESENCE, codes.PRESENT if findings.lesions else codes.ABSENT)
        ],
    )
    groups: list[Group] = [series_group]
    for lesion in findings.lesions:
        number = segment_numbers.get(lesion.index)
        groups.append(_lesion_group(lesion, producer, segmentation if number else None, number or 0))
    return MeasurementReport(
        observation_context=observation_context(producer, person=person),
        procedure_reported=codes.PROCEDURE_MRI,
        imaging_measurements=groups,
        title=codes.REPORT_TITLE,
    )


def _lesion_group(lesion: Lesion, producer: Producer, segmentation: Segmentation | None,
                  segment_number: int) -> Group:
    measurements = [
        _measurement(producer, 0, codes.VOLUME, lesion.volume_ml, codes.UNIT_ML),
        _measurement(producer, 0, codes.DIAMETER, lesion.longest_diameter_mm, codes.UNIT_MM, codes.MAXIMUM),
    ]
    if lesion.malignancy_probability is not None:
        measurements.append(_measurement(producer, 1, codes.MALIGNANCY_PROBABILITY, lesion.malignancy_probability,
                                         codes.UNIT_NONE))
    measurements += [
        _measurement(producer, 1, codes.radiomics_feature(name), value, codes.radiomics_unit(name))
        for name, value in sorted(lesion.features.items())
    ]
    label = codes.LESION_LABELS.get((lesion.label or "").lower())
    evaluations = [QualitativeEvaluation(codes.CLASSIFICATION, label)] if label is not None else None
    tracking = TrackingIdentifier(uid=producer.uids.item("lesion", lesion.index), identifier=lesion.name)
    if segmentation is None:
        return MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, finding_type=codes.LESION, finding_category=codes.LESION_CATEGORY,
            measurements=measurements, qualitative_evaluations=evaluations,
        )
    return VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_segment=referenced_segment(segmentation, segment_number),
        finding_type=codes.LESION,
        finding_category=codes.LESION_CATEGORY,
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def referenced_segment(segmentation: Dataset, segment_number: int) -> ReferencedSegment:
    """The SR's reference to one segment of ``segmentation``. highdicom's ``from_segmentation`` looks for
    the Segment Identification in each frame's functional groups; a SEG with a single segment carries it in
    the shared ones instead, so then every frame is the segment's and the sources come from the frames."""
    shared = segmentation.SharedFunctionalGroupsSequence[0]
    if "SegmentIdentificationSequence" not in shared:
        return ReferencedSegment.from_segmentation(segmentation, segment_number)
    sources: dict[str, SourceImageForSegmentation] = {}
    for frame in segmentation.PerFrameFunctionalGroupsSequence:
        for derivation in frame.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                sources.setdefault(source.ReferencedSOPInstanceUID, SourceImageForSegmentation(
                    source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID))
    series = None if sources else SourceSeriesForSegmentation(
        segmentation.ReferencedSeriesSequence[0].SeriesInstanceUID)
    return ReferencedSegment(segmentation.SOPClassUID, segmentation.SOPInstanceUID, segment_number,
                             source_images=list(sources.values()) or None, source_series=series)


# ------------------------------------------------------------------------------------------ documents


@dataclass(frozen=True)
class Identity:
    """Where an SR document goes and what it says of itself: its UIDs, whether a person verified it (the
    verifying observer's name, organization and time, DICOM DT), and the document it supersedes."""

    series_instance_uid: str
    sop_instance_uid: str
    series_number: int = SR_SERIES_NUMBER
    instance_number: int = 1
    series_description: str = ""
    previous: Dataset | None = None
    verifier: tuple[str, str, str] | None = None  # (name as PN, organization, verification DT)
    content_at: datetime | None = None  # Content Date/Time (None: now)


def sr_document(cls: type[Comprehensive3DSR] | type[ComprehensiveSR], report: MeasurementReport,
                evidence: Sequence[Dataset], producer: Producer, identity: Identity,
                ) -> Comprehensive3DSR | ComprehensiveSR:
    """The SR document of ``report``: unverified (an algorithm's findings) or verified by a person, final."""
    previous = identity.previous
    superseded = previous is not None and previous.get("SOPInstanceUID") != identity.sop_instance_uid
    verifier = identity.verifier
    sr = cls(
        evidence=list(evidence),
        content=report[0],
        series_instance_uid=identity.series_instance_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=identity.instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=verifier is not None,  # an algorithm's findings are final only once a person verified them
        is_verified=verifier is not None,
        verifying_observer_name=verifier[0] if verifier else None,
        verifying_organization=verifier[1] if verifier else None,
        previous_versions=[previous] if superseded and previous is not None else None,
        coding_schemes=codes.coding_schemes(),
        series_description=(identity.series_description or f"{MANUFACTURER} {producer.pipeline} results")[:64],
        manufacturer_model_name=producer.pipeline,
        software_versions=producer.version,
        device_serial_number=producer.serial_number,
        content_date=identity.content_at.date() if identity.content_at else None,
        content_time=identity.content_at.time().replace(microsecond=0) if identity.content_at else None,
    )
    if verifier is not None:  # highdicom stamps the time of the call; the verification is the reviewer's
        sr.VerifyingObserverSequence[0].VerificationDateTime = verifier[2]
    return sr


def _document(
    cls: type[Comprehensive3DSR] | type[ComprehensiveSR],
    report: MeasurementReport,
    evidence: Sequence[Dataset],
    producer: Producer,
    previous: Dataset | None,
    sop_instance_uid: str,
) -> Comprehensive3DSR | ComprehensiveSR:
    identity = Identity(producer.uids.series("sr"), sop_instance_uid, previous=previous)
    return sr_document(cls, report, evidence, producer, identity)


def comprehensive_3d_sr(report: MeasurementReport, evidence: Sequence[Dataset], producer: Producer,
                        previous: Dataset | None = None) -> Comprehensive3DSR:
    """The primary SR object (``sr.dcm``); ``previous`` is the SR of the result this one supersedes."""
    sr = _document(Comprehensive3DSR, report, evidence, producer, previous, producer.uids.instance("sr"))
    assert isinstance(sr, Comprehensive3DSR)
    return sr


def comprehensive_sr(report: MeasurementReport, evidence: Sequence[Dataset], producer: Producer,
                     previous: Dataset | None = None) -> ComprehensiveSR:
    """The same content as Comprehensive SR (``fallback/sr-comprehensive.dcm``) for a PACS that refuses the
    3D SOP class; the content uses 2D regions only, which both classes allow."""
    sr = _document(ComprehensiveSR, report, evidence, producer, previous, producer.uids.instance("sr-comprehensive"))
    assert isinstance(sr, ComprehensiveSR)
    return sr
