"""What an MR series' header says about how it was acquired: body part, names, echo and repetition time.

Read from one instance of the series (every instance of a series shares these). Classic MR objects carry
EchoTime and RepetitionTime at the top level; Enhanced MR objects carry them in the functional groups
(MR Echo: EffectiveEchoTime; MR Timing and Related Parameters: RepetitionTime), shared or of the first frame.
Only acquisition attributes are read, never patient ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from pipelines.errors import InputError


@dataclass(frozen=True)
class Acquisition:
    modality: str
    body_part: str  # BodyPartExamined, "" when absent
    series_description: str
    protocol_name: str
    manufacturer: str
    model_name: str
    echo_time_ms: float | None
    repetition_time_ms: float | None
    acquisition_contrast: str  # Enhanced MR's AcquisitionContrast (T1, T2, PROTON_DENSITY…), "" when absent

    @classmethod
    def of(cls, ds: Dataset) -> Acquisition:
        return cls(
            modality=_text(ds.get("Modality")),
            body_part=_text(ds.get("BodyPartExamined")),
            series_description=_text(ds.get("SeriesDescription")),
            protocol_name=_text(ds.get("ProtocolName")),
            manufacturer=_text(ds.get("Manufacturer")),
            model_name=_text(ds.get("ManufacturerModelName")),
            echo_time_ms=_number(ds.get("EchoTime")) or _functional(ds, "MREchoSequence", "EffectiveEchoTime"),
            repetition_time_ms=_number(ds.get("RepetitionTime"))
            or _functional(ds, "MRTimingAndRelatedParametersSequence", "RepetitionTime"),
            acquisition_contrast=_text(ds.get("AcquisitionContrast")).upper(),
        )

    @property
    def names(self) -> tuple[str, ...]:
        """The series' names as the scanner wrote them: SeriesDescription, ProtocolName (either may be empty)."""
        return tuple(name for name in (self.series_description, self.protocol_name) if name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "body_part": self.body_part,
            "series_description": self.series_description,
            "protocol_name": self.protocol_name,
            "manufacturer": self.manufacturer,
            "model_name": self.model_name,
            "echo_time_ms": self.echo_time_ms,
            "repetition_time_ms": self.repetition_time_ms,
        }


def read_acquisition(path: Path) -> Acquisition:
    """The acquisition attributes of the instance at ``path`` (pixel data not read)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError, OSError, TypeError, KeyError) as exc:
        raise InputError(f"{path.name}: not a readable DICOM file ({exc})") from exc
    return Acquisition.of(ds)


def _functional(ds: Dataset, sequence: str, keyword: str) -> float | None:
    groups = [*(ds.get("SharedFunctionalGroupsSequence") or [])[:1],
              *(ds.get("PerFrameFunctionalGroupsSequence") or [])[:1]]
    for group in groups:
        items = group.get(sequence)
        if items and keyword in items[0]:
            value = _number(items[0].get(keyword))
            if value is not None:
                return value
    return None


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()
