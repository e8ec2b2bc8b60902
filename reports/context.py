"""Patient and study context of a result: whose images these are and which study the findings belong to.

DICOM inputs carry it: the objects we write copy it from the source instances (highdicom does so from the
evidence and source images), and :func:`from_dataset` reads it for the documents. Slides from scanner folders
carry none; the watcher stores what the accession mapping found (named groups of ``ingest.filename_regex``
and the JSON sidecar) in ``attrs["context"]``. :func:`from_mapping` turns that into a context when it names
the patient and the accession (or a study UID); without both the result stays local: documents only, and a
warning that says why. Patient values are never logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from reports.uids import context_study_uid

log = logging.getLogger(__name__)

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
DATE_PATTERN = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
TIME_PATTERN = re.compile(r"^(\d{2}):?(\d{2})(?::?(\d{2}))?$")
SEXES = {"M": "M", "F": "F", "O": "O", "MALE": "M", "FEMALE": "F", "OTHER": "O"}
CHARACTER_SET = "ISO_IR 192"  # UTF-8: objects we fill from a context may carry any name

# accepted spellings of mapping keys (compared lower-case, without "_"): first match wins
_ALIASES: dict[str, tuple[str, ...]] = {
    "patient_id": ("patientid", "mrn", "patient"),
    "patient_name": ("patientname",),
    "patient_birth_date": ("patientbirthdate", "birthdate", "dob"),
    "patient_sex": ("patientsex", "sex"),
    "accession_number": ("accessionnumber", "accession", "accessionno", "acc"),
    "study_uid": ("studyinstanceuid", "studyuid"),
    "study_id": ("studyid",),
    "study_date": ("studydate",),
    "study_time": ("studytime",),
    "study_description": ("studydescription",),
    "referring_physician_name": ("referringphysicianname", "referringphysician"),
    "container_identifier": ("containeridentifier", "slideid", "slide", "specimenid"),
}
_LIMITS = {"patient_id": 64, "accession_number": 16, "study_id": 16, "patient_name": 64 * 5,
           "study_description": 64, "container_identifier": 64, "referring_physician_name": 64 * 5}


class PatientStudyArgs(TypedDict):
    """Patient and study keyword arguments of highdicom's SOP class constructors."""

    patient_id: str | None
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None
    accession_number: str | None
    study_id: str | None
    study_date: str | None
    study_time: str | None
    referring_physician_name: str | None


@dataclass(frozen=True)
class StudyContext:
    """Patient and study attributes (DICOM formats: dates YYYYMMDD, sex M/F/O, names as PN)."""

    study_uid: str
    patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""
    referring_physician_name: str = ""
    container_identifier: str = ""
    source: str = "dicom"  # "dicom", or where a slide's mapping came from ("filename", "sidecar", …)

    @property
    def from_dicom(self) -> bool:
        return self.source == "dicom"

    def patient_study_kwargs(self) -> PatientStudyArgs:
        """The patient and study arguments highdicom's constructors take (absent values as None)."""
        return PatientStudyArgs(
            patient_id=self.patient_id or None,
            patient_name=self.patient_name or None,
            patient_birth_date=self.patient_birth_date or None,
            patient_sex=self.patient_sex or None,
            accession_number=self.accession_number or None,
            study_id=self.study_id or None,
            study_date=self.study_date or None,
            study_time=self.study_time or None,
            referring_physician_name=self.referring_physician_name or None,
        )


def from_dataset(ds: Dataset) -> StudyContext:
    """The context of a DICOM source instance."""

    def text(keyword: str) -> str:
        value = ds.get(keyword)
        return "" if value is None else str(value).strip()

    return StudyContext(
        study_uid=text("StudyInstanceUID"),
        patient_id=text("PatientID"),
        patient_name=text("PatientName"),
        patient_birth_date=text("PatientBirthDate"),
        patient_sex=text("PatientSex"),
        accession_number=text("AccessionNumber"),
        study_id=text("StudyID"),
        study_date=text("StudyDate"),
        study_time=text("StudyTime"),
        study_description=text("StudyDescription"),
        referring_physician_name=text("ReferringPhysicianName"),
        container_identifier=text("ContainerIdentifier"),
    )


def from_mapping(mapping: Mapping[str, Any], source: str | None) -> tuple[StudyContext | None, list[str]]:
    """A slide's context from its accession mapping, or None and the reason; values that do not fit their
    DICOM format are left out with a warning (without the value: it may identify the patient)."""
    values: dict[str, str] = {}
    warnings: list[str] = []
    normalised = {re.sub(r"[^a-z0-9]", "", str(k).lower()): v for k, v in mapping.items()}
    for field_name, aliases in _ALIASES.items():
        for alias in (field_name.replace("_", ""), *aliases):
            raw = normalised.get(alias)
            if raw is not None and str(raw).strip():
                value, problem = _clean(field_name, str(raw).strip())
                if problem:
                    warnings.append(f"slide context: {field_name} ignored ({problem})")
                elif value:
                    values[field_name] = value
                break
    missing = [name for name, ok in (
        ("patient ID", "patient_id" in values),
        ("accession number or study UID", "accession_number" in values or "study_uid" in values),
    ) if not ok]
    if missing:
        return None, [*warnings, f"no patient/study context ({' and '.join(missing)} missing from the slide's "
                      "filename mapping and sidecar): DICOM objects not produced, reports only"]
    study_uid = values.pop("study_uid", None) or context_study_uid(values.get("accession_number", ""),
                                                                   values["patient_id"])
    return StudyContext(study_uid=study_uid, source=source or "mapping", **values), warnings


def read_headers(paths: Sequence[Path]) -> tuple[list[Dataset], list[str]]:
    """Headers (no pixel data) of the DICOM source instances, sorted by path; unreadable ones are skipped
    with a warning."""
    headers: list[Dataset] = []
    warnings: list[str] = []
    for path in sorted(paths):
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (InvalidDicomError, OSError, ValueError, EOFError, TypeError, KeyError) as exc:
            warnings.append(f"source {path.name} is not readable DICOM ({exc}); left out of the references")
    return headers, warnings


def _clean(field_name: str, value: str) -> tuple[str, str | None]:
    if field_name == "study_uid":
        return (value, None) if UID_PATTERN.match(value) and len(value) <= 64 else ("", "not a DICOM UID")
    if field_name in ("patient_birth_date", "study_date"):
        match = DATE_PATTERN.match(value)
        return ("".join(match.groups()), None) if match else ("", "not a date YYYYMMDD or YYYY-MM-DD")
    if field_name == "study_time":
        match = TIME_PATTERN.match(value)
        return ("".join(g or "00" for g in match.groups()), None) if match else ("", "not a time HHMM[SS]")
    if field_name == "patient_sex":
        sex = SEXES.get(value.upper())
        return (sex, None) if sex else ("", "not M, F or O")
    if "\\" in value or any(ord(c) < 32 for c in value):
        return "", "contains control characters or a backslash"
    limit = _LIMITS.get(field_name, 64)
    if len(value) > limit:
        return "", f"longer than {limit} characters"
    return value, None
