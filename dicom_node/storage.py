"""Where received DICOM instances live, how their UIDs are checked, and what of their header is kept.

Instances are stored as ``storage/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. A UID only
becomes part of a path after :func:`validate_uid` accepted it.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from dicom_node.errors import InvalidUIDError

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_NOT_KEPT_VR = {"PN", "SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN", "UT", "LT", "ST"}
_KEPT_PATIENT_KEYWORDS = {"PatientPosition", "PatientOrientation"}
_PHI_KEYWORDS = {"OtherPatientIDs", "InstitutionAddress", "MilitaryRank", "EthnicGroup", "Occupation"}
_MAX_VALUE_CHARS = 256


def validate_uid(value: object, what: str) -> str:
    """Return ``value`` as a UID string, or raise InvalidUIDError: digits and dots only, at most 64 characters."""
    uid = str(value or "").strip()
    if not uid:
        raise InvalidUIDError(f"{what} is missing")
    if len(uid) > 64 or not _UID.match(uid):
        raise InvalidUIDError(f"{what} {uid[:80]!r} is not a valid UID (digits and dots, at most 64 characters)")
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


_PIXEL_DATA_TAG_LE = b"\xe0\x7f\x10\x00"
_SEQUENCE_DELIMITER_LE = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_UNDEFINED_LENGTH = 0xFFFFFFFF


_ELEMENT_HEADER = 8  # what pydicom reads for the next element: tag and VR/length, or tag and length


class ShortReads:
    """A read-only view of a stream that notes where a read got fewer bytes than asked, other than the stream
    ending where the next element would start: the stream ended inside an element. pydicom takes such a cut
    value as it is; a cut exactly between two elements cannot be told from a shorter dataset, one inside can."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.cut_at: int | None = None

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        # the stream may end where an element header (8 bytes) would start; anywhere else a short read is a cut
        if self.cut_at is None and len(data) < size and (data or size != _ELEMENT_HEADER):
            self.cut_at = self._raw.tell()
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()


class HeaderValues(Protocol):
    """What the receive path reads of an instance's header: a pydicom Dataset, or the values a scan of the
    dataset found (:class:`dicom_node.header.ScannedHeader`)."""

    @property
    def file_meta(self) -> Any: ...  # its TransferSyntaxUID

    def get(self, key: str, default: Any = None, /) -> Any: ...  # by keyword


def truncation(raw: bytes, pixel_offset: int, header: HeaderValues) -> str | None:
    """Why the pixel data of an encoded instance is cut short, or None when it is whole.

    ``pixel_offset`` is where header parsing stopped (at the Pixel Data tag, if any). Only the element
    framing is checked, no pixel is decoded: a defined length must fit in the bytes received and hold the
    whole image the header describes, and encapsulated (compressed) data must end with its sequence
    delimiter. Big endian and deflated streams are left to the parser.
    """
    return _truncation(lambda offset, size: raw[offset : offset + size], len(raw),
                       lambda pattern, start: raw.find(pattern, start) != -1, pixel_offset, header)


def truncation_in_file(handle: BinaryIO, size: int, pixel_offset: int, header: HeaderValues) -> str | None:
    """:func:`truncation` of an instance in an open file of ``size`` bytes, read a chunk at a time (a
    multi-GB whole-slide image is never held in memory); moves the file position."""

    def read(offset: int, count: int) -> bytes:
        handle.seek(offset)
        return handle.read(count)

    def contains(pattern: bytes, start: int) -> bool:
        if size >= start + len(pattern) and read(size - len(pattern), len(pattern)) == pattern:
            return True  # the usual case: the delimiter ends the file
        tail = b""
        handle.seek(start)
        while chunk := handle.read(_SCAN_CHUNK):
            if pattern in tail + chunk[: len(pattern)] or pattern in chunk:
                return True
            tail = chunk[-(len(pattern) - 1) :]
        return False

    return _truncation(read, size, contains, pixel_offset, header)


_SCAN_CHUNK = 1 << 20


def _truncation(read: Callable[[int, int], bytes], size: int, contains: Callable[[bytes, int], bool],
                pixel_offset: int, header: HeaderValues) -> str | None:
    transfer_syntax = header.file_meta.TransferSyntaxUID
    if transfer_syntax.is_deflated or not transfer_syntax.is_little_endian:
        return None
    head = read(pixel_offset, 12)
    if head[:4] != _PIXEL_DATA_TAG_LE:
        return None
    length_at, value_at = (4, 8) if transfer_syntax.is_implicit_VR else (8, 12)
    if pixel_offset + value_at > size:
        return "pixel data element header is cut off"
    length = int.from_bytes(head[length_at : length_at + 4], "little")
    value_at += pixel_offset
    if length == _UNDEFINED_LENGTH:
        if not contains(_SEQUENCE_DELIMITER_LE, value_at):
            return "encapsulated pixel data has no sequence delimiter (stream cut short)"
        return None
    available = size - value_at
    if length > available:
        return f"pixel data declares {length} bytes but only {available} arrived"
    needed = _native_pixel_bytes(header)
    if needed is not None and length < needed:
        return f"pixel data holds {length} bytes, the image described needs {needed}"
    return _cut_after(read, size, value_at + length, transfer_syntax.is_implicit_VR)


# explicit VR little endian: the VRs with a 4-byte length after 2 reserved bytes (PS3.5 7.1.2)
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


def _cut_after(read: Callable[[int, int], bytes], size: int, offset: int, implicit: bool) -> str | None:
    """Why the elements after Pixel Data (padding, signatures: a few) end inside one, or None."""
    for _ in range(1000):
        if offset >= size:
            return None
        head = read(offset, 12)
        long_vr = not implicit and head[4:6] in LONG_VRS
        header_size = 12 if long_vr else 8
        if len(head) < header_size:
            return "the dataset ends inside an element header after the pixel data"
        if implicit or long_vr:
            length = int.from_bytes(head[header_size - 4 : header_size], "little")
        else:
            length = int.from_bytes(head[6:8], "little")
        if length == _UNDEFINED_LENGTH:
            return None  # a sequence: its framing is the parser's to check
        if offset + header_size + length > size:
            return f"an element after the pixel data declares {length} bytes; fewer arrived"
        offset += header_size + length
    return None


def _native_pixel_bytes(header: HeaderValues) -> int | None:
    try:
        pixels = int(header.get("Rows")) * int(header.get("Columns")) * int(header.get("SamplesPerPixel", 1) or 1)
        pixels *= int(header.get("NumberOfFrames", 1) or 1)
        bits = int(header.get("BitsAllocated"))
    except (AttributeError, TypeError, ValueError):
        return None
    return (pixels + 7) // 8 if bits == 1 else pixels * (bits // 8)


def file_meta_bytes(elements: list[tuple[int, str, str]]) -> bytes:
    """Preamble, ``DICM`` and a File Meta Information group (explicit VR little endian) of the given
    ``(element, VR, value)`` triples of group 0002 (string VRs only), with its group length and version."""
    encoded = [struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"]
    for element, vr, value in elements:
        data = value.encode("ascii")
        if len(data) % 2:
            data += b"\0" if vr == "UI" else b" "
        encoded.append(struct.pack("<HH2sH", 0x0002, element, vr.encode("ascii"), len(data)) + data)
    body = b"".join(encoded)
    return b"\0" * 128 + b"DICM" + struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body
