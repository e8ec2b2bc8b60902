"""Patient and study context of a result (reports.context)."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from reports.context import StudyContext, from_dataset, from_mapping, read_headers
from reports.uids import context_study_uid


class TestFromMapping:
    def test_watcher_keys_give_a_context_in_dicom_formats(self) -> None:
        context, warnings = from_mapping(
            {"accession": "ACC-77", "patient_id": "1234", "stain": "PapGold", "dob": "1970-01-02",
             "sex": "female", "Study_Date": "2026-02-03", "study_time": "14:05", "slide_id": "ACC-77-S1"},
            "filename+sidecar",
        )
        assert warnings == []
        assert context == StudyContext(
            study_uid=context_study_uid("ACC-77", "1234"), patient_id="1234", patient_birth_date="19700102",
            patient_sex="F", accession_number="ACC-77", study_date="20260203", study_time="140500",
            container_identifier="ACC-77-S1", source="filename+sidecar",
        )
        assert not context.from_dicom

    def test_a_study_uid_in_the_sidecar_is_used(self) -> None:
        context, _ = from_mapping({"PatientID": "P9", "StudyInstanceUID": "1.2.840.99.1"}, "sidecar")
        assert context is not None and context.study_uid == "1.2.840.99.1" and context.accession_number == ""

    def test_without_patient_or_accession_there_is_no_context_and_the_reason(self) -> None:
        context, warnings = from_mapping({"accession": "ACC-1"}, "filename")
        assert context is None
        assert warnings == [
            "no patient/study context (patient ID missing from the slide's filename mapping and sidecar): "
            "DICOM objects not produced, reports only"
        ]
        context, warnings = from_mapping({"patient_id": "P1", "stain": "HE"}, "sidecar")
        assert context is None and "accession number or study UID missing" in warnings[0]

    def test_values_that_do_not_fit_dicom_are_left_out_without_showing_them(self) -> None:
        context, warnings = from_mapping(
            {"accession": "ACC-1", "patient_id": "P1", "dob": "02/01/1970", "sex": "unknown",
             "study_uid": "not-a-uid", "patient_name": "Doe\\John"}, "sidecar",
        )
        assert context is not None
        assert (context.patient_birth_date, context.patient_sex, context.patient_name) == ("", "", "")
        assert context.study_uid == context_study_uid("ACC-1", "P1")
        assert warnings == [
            "slide context: patient_name ignored (contains control characters or a backslash)",
            "slide context: patient_birth_date ignored (not a date YYYYMMDD or YYYY-MM-DD)",
            "slide context: patient_sex ignored (not M, F or O)",
            "slide context: study_uid ignored (not a DICOM UID)",
        ]
        assert all("Doe" not in w and "02/01" not in w for w in warnings)


class TestFromDataset:
    def test_copies_patient_and_study(self) -> None:
        ds = Dataset()
        ds.StudyInstanceUID = "1.2.3"
        ds.PatientID = "P1"
        ds.PatientName = "Doe^Jane"
        ds.PatientSex = "F"
        ds.AccessionNumber = "A1"
        ds.StudyDate = "20260101"
        assert from_dataset(ds) == StudyContext(
            study_uid="1.2.3", patient_id="P1", patient_name="Doe^Jane", patient_sex="F", accession_number="A1",
            study_date="20260101",
        )


class TestReadHeaders:
    def test_reads_dicom_and_reports_the_rest(self, tmp_path: Path) -> None:
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid

        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
        (tmp_path / "b.dcm").write_bytes(b"not dicom")
        headers, warnings = read_headers([tmp_path / "b.dcm", tmp_path / "a.dcm"])
        assert [str(h.SOPInstanceUID) for h in headers] == [ds.SOPInstanceUID]
        assert len(warnings) == 1 and warnings[0].startswith("source b.dcm is not readable DICOM")
