"""The PDF report as a DICOM Encapsulated PDF: the last fallback for a PACS that takes no SR at all.

highdicom has no class for this IOD, so the patient, study, series, equipment and SOP common modules come
from highdicom's :class:`~highdicom.base.SOPClass` (as for every object we write) and only the Encapsulated
Document and SC Equipment modules are filled here, attribute by attribute, as PS3.3 A.45.1 lists them.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from highdicom.base import SOPClass
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian
from pydicom.valuerep import DA, DT, TM

from reports import codes
from reports.context import CHARACTER_SET, StudyContext
from reports.producer import MANUFACTURER, Producer

PDF_SERIES_NUMBER = 9105
MAX_TITLE_CHARS = 64


def encapsulated_pdf(
    pdf: bytes,
    context: StudyContext,
    producer: Producer,
    title: str,
    sources: Sequence[Dataset] = (),
) -> SOPClass:
    """``pdf`` as Encapsulated PDF in the study of ``context``; ``sources`` are the instances it reports on
    (Source Instance Sequence)."""
    if not pdf.startswith(b"%PDF-"):
        raise ValueError("not a PDF document")
    ds = SOPClass(
        study_instance_uid=context.study_uid,
        series_instance_uid=producer.uids.series("pdf"),
        series_number=PDF_SERIES_NUMBER,
        sop_instance_uid=producer.uids.instance("pdf"),
        sop_class_uid=EncapsulatedPDFStorage,
        instance_number=1,
        modality="DOC",
        manufacturer=MANUFACTURER,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        **context.patient_study_kwargs(),
        specific_character_set=CHARACTER_SET,
        coding_schemes=None,
        series_description=f"{MANUFACTURER} {producer.pipeline} report"[:64],
        manufacturer_model_name=producer.pipeline,
        software_versions=producer.version,
        device_serial_number=producer.serial_number,
    )
    now = datetime.datetime.now()
    # SC Equipment (C.8.6.1): a workstation made the document
    ds.ConversionType = "WSD"
    # Encapsulated Document (C.24.2)
    ds.ContentDate = DA(now.date())
    ds.ContentTime = TM(now.time())
    ds.AcquisitionDateTime = DT(now)
    ds.BurnedInAnnotation = "YES"  # the document shows the patient's identity in its header
    ds.DocumentTitle = title[:MAX_TITLE_CHARS]
    ds.ConceptNameCodeSequence = DicomSequence([CodedConcept.from_code(codes.REPORT_TITLE)])
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    if sources:
        ds.SourceInstanceSequence = DicomSequence([_reference(src) for src in sources])
    body = pdf if len(pdf) % 2 == 0 else pdf + b"\x00"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = body
    return ds


def _reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item

