"""Secondary Capture of a slide's overview, for slides that are not DICOM.

A slide from a scanner folder has no DICOM instance a PACS could show or an SR could cite as evidence. When
its accession mapping gives the patient and study, we write its overview (the thumbnail, as scanned) as a
Secondary Capture image in the slide coordinate system, in that study: the PACS shows what was analysed, and
the SR cites it as the source of its measurements.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from highdicom import UID, SpecimenDescription
from highdicom.sc import SCImage

from reports.context import CHARACTER_SET, StudyContext
from reports.producer import MANUFACTURER, Producer
from reports.uids import derived_uid

OVERVIEW_SERIES_NUMBER = 9104


def slide_overview(
    rgb: npt.NDArray[np.uint8],
    context: StudyContext,
    producer: Producer,
    container_identifier: str,
    pixel_spacing_mm: tuple[float, float] | None = None,
) -> SCImage:
    """The overview ``rgb`` (rows, columns, 3) as an SC image of the slide ``container_identifier``;
    ``pixel_spacing_mm`` is (between rows, between columns) of the overview."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"overview must be RGB uint8 (rows, columns, 3), got {rgb.dtype} {rgb.shape}")
    container = (container_identifier or "SLIDE")[:64]
    specimen_uid = UID(derived_uid("specimen", context.study_uid, container))
    image = SCImage(
        pixel_array=np.ascontiguousarray(rgb),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="SLIDE",
        study_instance_uid=context.study_uid,
        series_instance_uid=producer.uids.series("overview"),
        series_number=OVERVIEW_SERIES_NUMBER,
        sop_instance_uid=producer.uids.instance("overview"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        **context.patient_study_kwargs(),
        specific_character_set=CHARACTER_SET,
        pixel_spacing=pixel_spacing_mm,
        container_identifier=container,
        specimen_descriptions=[SpecimenDescription(specimen_id=container, specimen_uid=specimen_uid)],
        series_description=f"{MANUFACTURER} slide overview"[:64],
        manufacturer_model_name=producer.pipeline,
        software_versions=producer.version,
    )
    # General Image: Patient Orientation is Type 2C, required when there is no image plane (as here, a slide);
    # highdicom sets it only for the patient coordinate system. Empty: a slide has no patient orientation.
    image.PatientOrientation = []
    return image
