"""DIMSE command sets and the file meta written around received datasets, checked against pydicom's codecs."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pynetdicom.dsutils import encode_file_meta

from dicom_node.dimse import CommandError, read_command, response
from dicom_node.scp import part10_bytes

MR = "1.2.840.10008.5.1.4.1.1.4"


def _encoded(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _store_request(**changes: object) -> Dataset:
    ds = Dataset()
    ds.CommandGroupLength = 0
    ds.AffectedSOPClassUID = MR
    ds.CommandField = 0x0001
    ds.MessageID = 7
    ds.Priority = 0
    ds.CommandDataSetType = 0x0000
    ds.AffectedSOPInstanceUID = "1.2.3.4.5"
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def test_a_store_request_is_read() -> None:
    command = read_command(_encoded(_store_request()))
    assert (command.command_field, command.message_id, command.has_dataset) == (0x0001, 7, True)
    assert (command.affected_sop_class, command.affected_sop_instance) == (MR, "1.2.3.4.5")
    assert not read_command(_encoded(_store_request(CommandDataSetType=0x0101))).has_dataset


def test_the_response_is_a_valid_command_set_pydicom_reads() -> None:
    request = read_command(_encoded(_store_request()))
    encoded = response(request, 0xA700)
    ds = read_dataset(BytesIO(encoded), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandGroupLength == len(encoded) - 12
    assert (ds.CommandField, ds.MessageIDBeingRespondedTo, ds.Status, ds.CommandDataSetType) == (
        0x8001, 7, 0xA700, 0x0101)
    assert (ds.AffectedSOPClassUID, ds.AffectedSOPInstanceUID) == (MR, "1.2.3.4.5")
    assert len(encoded) % 2 == 0


@pytest.mark.parametrize("data", [b"\x00\x00\x00", _encoded(_store_request())[:-3],
                                  b"\x08\x00\x18\x00\x02\x00\x00\x001\x00"])
def test_what_is_not_a_command_set_is_refused(data: bytes) -> None:
    with pytest.raises(CommandError):
        read_command(data)


@pytest.mark.parametrize("keyword", ["AffectedSOPClassUID", "AffectedSOPInstanceUID"])
def test_a_uid_that_is_not_ascii_is_refused_not_read_into_an_unanswerable_command(keyword: str) -> None:
    """Found by tests/fuzz: a UID byte over 0x7F was read as U+FFFD, and the response could not encode it
    (UnicodeEncodeError in the association thread: the socket closed without an answer or an A-ABORT)."""
    data = _encoded(_store_request(**{keyword: "1.2.3"})).replace(b"1.2.3", b"1.2\xff3")
    with pytest.raises(CommandError, match="not an ASCII UID"):
        read_command(data)


def test_file_meta_is_what_pydicom_would_write_and_the_file_reads() -> None:
    dataset = Dataset()
    dataset.SOPClassUID, dataset.SOPInstanceUID, dataset.PatientID = MR, "1.2.3.45", "X"
    raw = part10_bytes(MR, "1.2.3.45", "1.2.840.10008.1.2", "STORESCU", _encoded(dataset))
    ds = pydicom.dcmread(BytesIO(raw))
    meta = ds.file_meta
    assert (meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID) == (
        MR, "1.2.3.45", "1.2.840.10008.1.2")
    assert (ds.SOPInstanceUID, ds.PatientID, meta.SourceApplicationEntityTitle) == ("1.2.3.45", "X", "STORESCU")
    reference = FileMetaDataset()
    for keyword in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID",
                    "ImplementationClassUID", "ImplementationVersionName", "SourceApplicationEntityTitle"):
        setattr(reference, keyword, getattr(meta, keyword))
    assert raw[132 : 132 + len(encode_file_meta(reference))] == encode_file_meta(reference)
