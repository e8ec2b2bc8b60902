"""Secondary Capture of a slide overview (reports.capture) and the PDF as Encapsulated PDF
(reports.encapsulated), for results whose context came from a scanner folder's accession mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import EncapsulatedPDFStorage, SecondaryCaptureImageStorage

from reports.capture import slide_overview
from reports.context import StudyContext
from reports.encapsulated import encapsulated_pdf
from reports.findings import Algorithm
from reports.producer import Producer
from reports.uids import OutputUids, context_study_uid, derived_uid

CONTEXT = StudyContext(study_uid=context_study_uid("ACC-77", "1234"), patient_id="1234", patient_sex="F",
                       accession_number="ACC-77", study_date="20260203", source="filename")
PRODUCER = Producer("wsi-ctc", "1.0.0", (Algorithm("wsi-ctc-yolo11n", "1.0", "c" * 64),),
                    OutputUids.for_result(pipeline="wsi-ctc", pipeline_version="1.0.0", input_key="/scans/s1.svs",
                                          study_uid=None, series_uid=None, fingerprint="f"))
PDF = b"%PDF-1.7\n% tiny\n%%EOF\n"


class TestSlideOverview:
    def test_attributes_and_pixels(self, tmp_path: Path) -> None:
        rgb = np.zeros((30, 40, 3), np.uint8)
        rgb[..., 0] = np.arange(40, dtype=np.uint8)
        image = slide_overview(rgb, CONTEXT, PRODUCER, "ACC-77-S1", (0.01, 0.02))
        image.save_as(tmp_path / "ov.dcm", enforce_file_format=True)
        ds = pydicom.dcmread(tmp_path / "ov.dcm")
        assert ds.SOPClassUID == SecondaryCaptureImageStorage
        assert (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID) == (
            PRODUCER.uids.instance("overview"), PRODUCER.uids.series("overview"), CONTEXT.study_uid)
        assert (ds.PatientID, ds.PatientSex, ds.AccessionNumber, ds.StudyDate) == ("1234", "F", "ACC-77", "20260203")
        assert (ds.ContainerIdentifier, ds.SpecimenDescriptionSequence[0].SpecimenUID) == (
            "ACC-77-S1", derived_uid("specimen", CONTEXT.study_uid, "ACC-77-S1"))
        assert (ds.Rows, ds.Columns, ds.PhotometricInterpretation, ds.SeriesNumber) == (30, 40, "RGB", 9104)
        assert [float(v) for v in ds.PixelSpacing] == [0.01, 0.02]
        assert np.array_equal(ds.pixel_array, rgb)

    def test_names_beyond_ascii_are_written_as_utf8(self, tmp_path: Path) -> None:
        context = StudyContext(study_uid=CONTEXT.study_uid, patient_id="1234", patient_name="Müller^Jürgen",
                               accession_number="ACC-77")
        slide_overview(np.zeros((4, 4, 3), np.uint8), context, PRODUCER, "S").save_as(
            tmp_path / "ov.dcm", enforce_file_format=True)
        encapsulated_pdf(PDF, context, PRODUCER, "t").save_as(tmp_path / "pdf.dcm", enforce_file_format=True)
        for name in ("ov.dcm", "pdf.dcm"):
            back = pydicom.dcmread(tmp_path / name)
            assert (back.SpecificCharacterSet, str(back.PatientName)) == ("ISO_IR 192", "Müller^Jürgen")

    def test_refuses_what_is_not_rgb(self) -> None:
        with pytest.raises(ValueError, match="RGB uint8"):
            slide_overview(np.zeros((3, 4), np.uint8), CONTEXT, PRODUCER, "S")


class TestEncapsulatedPdf:
    def test_attributes_and_document(self, tmp_path: Path) -> None:
        ds = encapsulated_pdf(PDF, CONTEXT, PRODUCER, "OncoAgent: CTC report")
        ds.save_as(tmp_path / "pdf.dcm", enforce_file_format=True)
        back = pydicom.dcmread(tmp_path / "pdf.dcm")
        assert back.SOPClassUID == EncapsulatedPDFStorage
        assert (back.SOPInstanceUID, back.SeriesInstanceUID, back.StudyInstanceUID) == (
            PRODUCER.uids.instance("pdf"), PRODUCER.uids.series("pdf"), CONTEXT.study_uid)
        assert (back.Modality, back.MIMETypeOfEncapsulatedDocument, back.DocumentTitle, back.ConversionType) == (
            "DOC", "application/pdf", "OncoAgent: CTC report", "WSD")
        assert back.EncapsulatedDocumentLength == len(PDF)
        assert bytes(back.EncapsulatedDocument)[: len(PDF)] == PDF
        assert back.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurement Report"

    def test_refuses_what_is_not_a_pdf(self) -> None:
        with pytest.raises(ValueError, match="not a PDF"):
            encapsulated_pdf(b"<html>", CONTEXT, PRODUCER, "x")
