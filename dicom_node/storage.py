"""Where received DICOM instances live, how their UIDs are checked, and what of their header is kept.

Instances are stored as ``storage/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. A UID only
becomes part of a path after :func:`validate_uid` accepted it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from agent.errors import InputError

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_NOT_KEPT_VR = {"PN", "SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN", "UT", "LT", "ST"}
_KEPT_PATIENT_KEYWORDS = {"PatientPosition", "PatientOrientation"}
_PHI_KEYWORDS = {"OtherPatientIDs", "InstitutionAddress", "MilitaryRank", "EthnicGroup", "Occupation"}
_MAX_VALUE_CHARS = 256


def validate_uid(value: object, what: str) -> str:
    """Return ``value`` as a UID string, or raise InputError: digits and dots only, at most 64 characters."""
    uid = str(value or "").strip()
    if not uid:
        raise InputError(f"{what} is missing")
    if len(uid) > 64 or not _UID.match(uid):
        raise InputError(f"{what} {uid[:80]!r} is not a valid UID (digits and dots, at most 64 characters)")
    return uid


def instance_path(storage: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    return (
        storage
        / validate_uid(study_uid, "StudyInstanceUID")
        / validate_uid(series_uid, "SeriesInstanceUID")
        / (validate_uid(sop_uid, "SOPInstanceUID") + ".dcm")
    )


def routing_attrs(ds: Dataset) -> dict[str, Any]:
    """Top-level header values usable by routing rules, without patient identity.

    Person names, patient-module attributes (except position/orientation), free text, sequences and
    binary values are left out.
    """
    attrs: dict[str, Any] = {}
    for elem in ds:
        keyword = elem.keyword
        if not keyword or elem.VR in _NOT_KEPT_VR or keyword in _PHI_KEYWORDS:
            continue
        if keyword.startswith("Patient") and keyword not in _KEPT_PATIENT_KEYWORDS:
            continue
        value = elem.value
        if value is None or value == "":
            continue
        if isinstance(value, MultiValue | list | tuple):
            converted: Any = [_plain(v) for v in value]
        else:
            converted = _plain(value)
        if len(str(converted)) <= _MAX_VALUE_CHARS:
            attrs[keyword] = converted
    return attrs


def _plain(value: Any) -> Any:
    if isinstance(value, bool | PersonName):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)
