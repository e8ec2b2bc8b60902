"""Reading a received dataset's header: the scan of an instance of a known series finds what pydicom finds, and
leaves to pydicom whatever it does not vouch for."""

from __future__ import annotations

import struct
from collections.abc import Callable
from io import BytesIO

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.header import ScannedHeader, read_dataset_header
from dicom_node.storage import truncation

SERIES = "1.2.826.0.1.3680043.2.1125.2"
KEYS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns", "SamplesPerPixel",
        "BitsAllocated", "NumberOfFrames")


def dataset(**changes: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.3.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.1"
    ds.SeriesInstanceUID = SERIES
    ds.PatientName = "SYNTHETIC^HEADER"
    ds.Modality = "MR"
    ds.SamplesPerPixel = 1
    ds.NumberOfFrames = 2
    ds.Rows, ds.Columns = 4, 3
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(4 * 3 * 2 * 2)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def encoded(ds: Dataset, implicit: bool) -> bytes:
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, implicit
    write_dataset(out, ds)
    return out.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_an_instance_of_a_known_series_is_scanned_to_the_values_and_offset_pydicom_reads(syntax: str) -> None:
    data = encoded(dataset(), syntax == ImplicitVRLittleEndian)
    parsed_stream, scanned_stream = BytesIO(data), BytesIO(data)
    parsed = read_dataset_header(parsed_stream, syntax, "x", b"")
    scanned = read_dataset_header(scanned_stream, syntax, "x", b"", {SERIES})
    assert isinstance(parsed, Dataset) and isinstance(scanned, ScannedHeader)
    assert {k: scanned.get(k) for k in KEYS} == {k: parsed.get(k) for k in KEYS}
    assert scanned.file_meta.TransferSyntaxUID == syntax
    assert scanned_stream.tell() == parsed_stream.tell() == data.index(b"\xe0\x7f\x10\x00")
    assert truncation(data, scanned_stream.tell(), scanned) is None
    assert truncation(data[:-2], scanned_stream.tell(), scanned) == "pixel data declares 48 bytes but only 46 arrived"


def _with_sequence(data: bytes) -> bytes:
    return encoded(dataset(ReferencedImageSequence=Sequence([Dataset()])), False)


def _out_of_order(data: bytes) -> bytes:
    first = 8 + struct.unpack_from("<H", data, 6)[0]
    second = first + 8 + struct.unpack_from("<H", data, first + 6)[0]
    return data[first:second] + data[:first] + data[second:]


def _rows_as_text(data: bytes) -> bytes:
    return data.replace(b"\x28\x00\x10\x00US\x02\x00\x04\x00", b"\x28\x00\x10\x00SS\x02\x00\x04\x00")


def _cut_inside_an_element(data: bytes) -> bytes:
    return data[: data.index(b"SYNTHETIC") + 3]


@pytest.mark.parametrize("damage", [_with_sequence, _out_of_order, _rows_as_text, _cut_inside_an_element,
                                    lambda data: data.replace(SERIES.encode(), SERIES[:-1].encode() + b"x")],
                         ids=["sequence", "out of order", "unexpected VR", "cut", "not a UID"])
def test_what_the_scan_does_not_vouch_for_goes_to_pydicom(damage: Callable[[bytes], bytes]) -> None:
    data = damage(encoded(dataset(), False))
    try:
        header = read_dataset_header(BytesIO(data), ExplicitVRLittleEndian, "x", b"", {SERIES})
    except Exception as exc:  # pydicom refused it: the SCP answers 0xC210
        assert type(exc).__name__ == "UnreadableHeaderError"
    else:
        assert isinstance(header, pydicom.Dataset)


def test_the_first_instance_of_a_series_is_read_by_pydicom() -> None:
    header = read_dataset_header(BytesIO(encoded(dataset(), False)), ExplicitVRLittleEndian, "x", b"", {"1.2.3"})
    assert isinstance(header, Dataset)
    assert header.PatientName == "SYNTHETIC^HEADER"  # the routing attributes come from the whole header
