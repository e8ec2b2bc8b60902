"""Reading the header of a received instance, up to its pixel data, without decoding a pixel.

The first instance of a series is read by pydicom (the routing attributes come from it); a later one, in
the usual little-endian encodings, is scanned element header by element header for the few values the
receive path checks (UIDs, image size), and goes to pydicom whenever the scan meets anything unusual.

A header that cannot be parsed, or a dataset that ends inside an element, raises
:class:`~dicom_node.errors.UnreadableHeaderError` (the SCP answers 0xC210). The stream is left where parsing
stopped, at the Pixel Data element if there is one: :func:`dicom_node.storage.truncation` checks the rest.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Container
from dataclasses import dataclass
from io import BytesIO
from typing import Any, BinaryIO, cast

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataset import FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from dicom_node.errors import UnreadableHeaderError
from dicom_node.storage import LONG_VRS as _LONG_VRS
from dicom_node.storage import ShortReads

_PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # float, double float, pixel data
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
                        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})
_PARSE_ERRORS = (InvalidDicomError, BytesLengthException, ValueError, EOFError, OSError, KeyError, TypeError,
                 AttributeError)


def read_file_header(stream: BinaryIO, sop_uid: str) -> pydicom.Dataset:
    """The header of a DICOM file (preamble, file meta, dataset) up to the pixel data."""
    watched = ShortReads(stream)
    return _parsed(lambda: pydicom.dcmread(watched, stop_before_pixels=True), watched, sop_uid)


def read_dataset_header(stream: BinaryIO, transfer_syntax: str, sop_uid: str, meta: bytes,
                        known_series: Container[str] = ()) -> pydicom.Dataset | ScannedHeader:
    """The header of a received dataset (the bytes the peer sent, without file meta: ``meta`` is the one we
    made for it) up to the pixel data; the stream is left at an offset into the dataset. The header's
    ``file_meta`` holds the transfer syntax.

    An instance of a series in ``known_series`` (whose other attributes were already kept) needs only its
    UIDs and image size: a plain dataset of such an instance is scanned for them (:func:`_scan`), and only
    what the scan does not vouch for goes to pydicom.

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
    if plain and known_series and isinstance(stream, BytesIO):
        scanned = _scan(stream.getbuffer(), syntax.is_implicit_VR)
        if scanned is not None and scanned[0].get("SeriesInstanceUID") in known_series:
            stream.seek(scanned[1])
            return ScannedHeader(scanned[0], ScannedMeta(syntax))
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


# what the receive path needs of an instance of a known series: (keyword, VR) by tag
_SCANNED = {0x00080018: ("SOPInstanceUID", b"UI"), 0x0020000D: ("StudyInstanceUID", b"UI"),
            0x0020000E: ("SeriesInstanceUID", b"UI"), 0x00280002: ("SamplesPerPixel", b"US"),
            0x00280008: ("NumberOfFrames", b"IS"), 0x00280010: ("Rows", b"US"), 0x00280011: ("Columns", b"US"),
            0x00280100: ("BitsAllocated", b"US")}
_UID_BYTES = re.compile(rb"^[0-9]+(\.[0-9]+)*$")
_UNDEFINED_LENGTH = 0xFFFFFFFF


def _scan(data: memoryview, implicit: bool) -> tuple[dict[str, object], int] | None:
    """The values of :data:`_SCANNED` in a little-endian dataset and the offset of its pixel data (or its end),
    read from the element headers alone; None for anything pydicom should judge: elements out of order, a
    sequence or undefined length, an element that does not fit, a VR or value not as expected, a value that
    is not a plain UID or number."""
    values: dict[str, object] = {}
    offset, end, previous = 0, len(data), -1
    while offset < end:
        if offset + 8 > end:
            return None
        group, element = struct.unpack_from("<HH", data, offset)
        tag = group << 16 | element
        if tag <= previous:
            return None
        previous = tag
        if tag in _PIXEL_DATA_TAGS:
            return values, offset
        if implicit:
            try:
                vr = dictionary_VR(tag).encode()
            except KeyError:  # private or unknown: pydicom reads it as UN
                vr = b"UN"
            length, value_at = struct.unpack_from("<I", data, offset + 4)[0], offset + 8
        else:
            vr = bytes(data[offset + 4 : offset + 6])
            if vr in _LONG_VRS:
                if offset + 12 > end:
                    return None
                length, value_at = struct.unpack_from("<I", data, offset + 8)[0], offset + 12
            elif vr in _SHORT_VRS:
                length, value_at = struct.unpack_from("<H", data, offset + 6)[0], offset + 8
            else:
                return None
        if vr == b"SQ" or length == _UNDEFINED_LENGTH or value_at + length > end:
            return None
        wanted = _SCANNED.get(tag)
        if wanted is not None:
            keyword, expected = wanted
            if vr != expected:
                return None
            raw = bytes(data[value_at : value_at + length])
            if expected == b"US":
                if length != 2:
                    return None
                values[keyword] = struct.unpack("<H", raw)[0]
            else:
                text = raw.rstrip(b"\0 ") if expected == b"UI" else raw.strip(b"\0 ")
                if expected == b"UI" and (len(text) > 64 or not _UID_BYTES.match(text)):
                    return None
                if expected == b"IS" and not text.isdigit():
                    return None
                values[keyword] = text.decode("ascii") if expected == b"UI" else int(text)
        offset = value_at + length
    return values, end


@dataclass(frozen=True)
class ScannedMeta:
    TransferSyntaxUID: UID


@dataclass(frozen=True)
class ScannedHeader:
    """The values :func:`_scan` found, read as a pydicom Dataset's (:class:`dicom_node.storage.HeaderValues`):
    building a Dataset of them would cost more than the scan."""

    values: dict[str, object]
    file_meta: ScannedMeta

    def get(self, key: str, default: Any = None, /) -> Any:
        return self.values.get(key, default)


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
