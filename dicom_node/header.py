"""Reading the header of a received instance, up to its pixel data, without decoding a pixel.

A header that cannot be parsed, or a dataset that ends inside an element, raises
:class:`~dicom_node.errors.UnreadableHeaderError` (the SCP answers 0xC210). The stream is left where parsing
stopped, at the Pixel Data element if there is one: :func:`dicom_node.storage.truncation` checks the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import BinaryIO, cast

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from dicom_node.errors import UnreadableHeaderError
from dicom_node.storage import ShortReads

_PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # float, double float, pixel data
_PARSE_ERRORS = (InvalidDicomError, BytesLengthException, ValueError, EOFError, OSError, KeyError, TypeError,
                 AttributeError)


def read_file_header(stream: BinaryIO, sop_uid: str) -> pydicom.Dataset:
    """The header of a DICOM file (preamble, file meta, dataset) up to the pixel data."""
    watched = ShortReads(stream)
    return _parsed(lambda: pydicom.dcmread(watched, stop_before_pixels=True), watched, sop_uid)


def read_dataset_header(stream: BinaryIO, transfer_syntax: str, sop_uid: str, meta: bytes) -> pydicom.Dataset:
    """The header of a received dataset (the bytes the peer sent, without file meta: ``meta`` is the one we
    made for it) up to the pixel data; the stream is left at an offset into the dataset. The header's
    ``file_meta`` holds the transfer syntax.

    The usual little-endian syntaxes are read straight from the dataset's bytes (our own file meta header is
    not parsed again: this is the receive path's hot spot). A deflated or big-endian dataset, or one that
    begins with file meta elements (group 0002, which pydicom then reads as part of the file meta), is read
    as a whole file by :func:`read_file_header`, as pydicom knows how."""
    syntax = UID(transfer_syntax)
    try:
        plain = not syntax.is_deflated and syntax.is_little_endian
    except ValueError:  # not a transfer syntax pydicom knows
        plain = False
    start = stream.tell()
    plain = plain and stream.read(2) != b"\x02\x00"
    stream.seek(start)
    if not plain:
        whole = BytesIO(meta + stream.read())
        header = read_file_header(whole, sop_uid)
        stream.seek(start + whole.tell() - len(meta))
        return header
    watched = ShortReads(stream)
    header = _parsed(lambda: read_dataset(cast(BinaryIO, watched), syntax.is_implicit_VR, True,
                                          stop_when=_at_pixel_data), watched, sop_uid)
    header.file_meta = FileMetaDataset()
    header.file_meta.TransferSyntaxUID = syntax
    return header


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag in _PIXEL_DATA_TAGS


def _parsed(parse: Callable[[], pydicom.Dataset], watched: ShortReads, sop_uid: str) -> pydicom.Dataset:
    try:
        header = parse()
    except _PARSE_ERRORS as exc:
        raise UnreadableHeaderError(f"dataset {sop_uid} cannot be parsed: {exc}") from exc
    if watched.cut_at is not None:
        raise UnreadableHeaderError(f"dataset {sop_uid} is truncated: it ends inside an element "
                                    f"(byte {watched.cut_at})")
    return header
