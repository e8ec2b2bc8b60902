from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from dicom_node.errors import InvalidUIDError
from dicom_node.storage import instance_path, routing_attrs, validate_uid
from pipelines.errors import InputError


@pytest.mark.parametrize(
    "bad",
    ["", "../../etc/passwd", "1.2.3/../../x", "1.2.abc", "1." + "2" * 70, "1..2", ".1.2", "1.2 3", None],
)
def test_invalid_uids_never_become_paths(bad: object, tmp_path: Path) -> None:
    with pytest.raises(InvalidUIDError, match="SOPInstanceUID"):
        instance_path(tmp_path, "1.2", "1.2.3", bad)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_an_invalid_uid_is_an_input_error_for_every_room() -> None:
    # drop folders quarantine and the one-shot command reports a file on InputError, knowing nothing of dicom_node
    with pytest.raises(InputError, match=r"StudyInstanceUID '1\.2\.abc' is not a valid UID"):
        validate_uid("1.2.abc", "StudyInstanceUID")


def test_valid_uid_path_layout(tmp_path: Path) -> None:
    path = instance_path(tmp_path, "1.2", "1.2.3", "1.2.3.4")
    assert path == tmp_path / "1.2" / "1.2.3" / "1.2.3.4.dcm"
    assert validate_uid(" 1.2.840.10008 ", "UID") == "1.2.840.10008"


def test_routing_attrs_keep_routing_keys_and_drop_patient_identity() -> None:
    ds = Dataset()
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "MRN123456"
    ds.PatientBirthDate = "19700101"
    ds.OtherPatientIDs = "X"
    ds.ReferringPhysicianName = "WHO^DR"
    ds.PatientPosition = "HFS"
    ds.Modality = "MR"
    ds.SeriesDescription = "AX T2"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImagesInAcquisition = 24
    ds.SliceThickness = "3.0"
    attrs = routing_attrs(ds)
    assert attrs["Modality"] == "MR"
    assert attrs["ImageType"] == ["ORIGINAL", "PRIMARY"]
    assert attrs["ImagesInAcquisition"] == 24
    assert attrs["SliceThickness"] == 3.0
    assert attrs["PatientPosition"] == "HFS"
    text = repr(attrs)
    for secret in ("DOE", "MRN123456", "19700101", "WHO^DR"):
        assert secret not in text


def _header_and_offset(raw: bytes) -> tuple[object, int]:
    from io import BytesIO

    import pydicom

    stream = BytesIO(raw)
    header = pydicom.dcmread(stream, stop_before_pixels=True)
    return header, stream.tell()


def test_truncation_of_native_and_encapsulated_pixel_data() -> None:
    from dicom_node.storage import truncation
    from tests.conftest import shared

    whole = shared("mri/MR_small.dcm").read_bytes()
    header, offset = _header_and_offset(whole)
    assert truncation(whole, offset, header) is None  # type: ignore[arg-type]
    cut = whole[: offset + 12 + 4000]
    header, offset = _header_and_offset(cut)
    assert "only 4000 arrived" in (truncation(cut, offset, header) or "")  # type: ignore[arg-type]

    jpeg = shared("wsi/dicom-boxes/boxes_0.dcm").read_bytes()
    header, offset = _header_and_offset(jpeg)
    assert truncation(jpeg, offset, header) is None  # type: ignore[arg-type]
    cut = jpeg[:-12]
    header, offset = _header_and_offset(cut)
    assert "no sequence delimiter" in (truncation(cut, offset, header) or "")  # type: ignore[arg-type]
