"""The DICOM upper-layer bytes the fuzzer builds streams from and reads replies with, written here rather than
taken from the SCP's code so that the harness does not check the parser with itself."""

from __future__ import annotations

import struct

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
ECHO_CONTEXT, STORE_CONTEXT = 1, 3
C_STORE_RQ, C_ECHO_RQ = 0x0001, 0x0030
COMMAND, LAST = 0x01, 0x02  # PDV message control header bits
A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RP, A_ABORT = 0x02, 0x03, 0x04, 0x06, 0x07
RELEASE_RQ = b"\x05\x00" + struct.pack(">I", 4) + b"\x00" * 4
ABORT_RQ = b"\x07\x00" + struct.pack(">I", 4) + b"\x00" * 4
SCP_REPLY_TYPES = {A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RP, A_ABORT}


def associate_rq(calling: str = "MODALITY", called: str = "ONCOAGENT") -> bytes:
    """A-ASSOCIATE-RQ: Verification as context 1, Secondary Capture in Implicit VR Little Endian as context 3."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT)
    primitive.calling_ae_title, primitive.called_ae_title = calling, called
    echo = build_context(VERIFICATION, [IMPLICIT_VR_LITTLE_ENDIAN])
    store = build_context(SECONDARY_CAPTURE, [IMPLICIT_VR_LITTLE_ENDIAN])
    echo.context_id, store.context_id = ECHO_CONTEXT, STORE_CONTEXT
    primitive.presentation_context_definition_list = [echo, store]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    primitive.user_information = [max_length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def pdv(context_id: int, control: int, fragment: bytes) -> bytes:
    return struct.pack(">IBB", len(fragment) + 2, context_id, control) + fragment


def pdu(kind: int, body: bytes) -> bytes:
    return bytes([kind, 0]) + struct.pack(">I", len(body)) + body


def command_set(command_field: int, message_id: int, sop_class: str, sop_instance: str = "",
                has_dataset: bool = False) -> bytes:
    """A DIMSE request command set with its group length (Implicit VR Little Endian)."""

    def element(tag: int, value: bytes) -> bytes:
        return struct.pack("<HHI", 0, tag, len(value)) + value

    def uid(value: str) -> bytes:
        data = value.encode("ascii")
        return data + b"\0" * (len(data) % 2)

    body = element(0x0002, uid(sop_class)) + element(0x0100, struct.pack("<H", command_field))
    body += element(0x0110, struct.pack("<H", message_id))
    if command_field == C_STORE_RQ:
        body += element(0x0700, b"\0\0")
    body += element(0x0800, struct.pack("<H", 0x0000 if has_dataset else 0x0101))
    if sop_instance:
        body += element(0x1000, uid(sop_instance))
    return element(0x0000, struct.pack("<I", len(body))) + body


def secondary_capture(sop_instance: str, study: str, series: str) -> bytes:
    """A small, whole Secondary Capture instance (8 x 8, 8 bits), encoded Implicit VR Little Endian."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, sop_instance
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.PatientName, ds.PatientID, ds.ConversionType = "OT", "FUZZ^PEER", "FUZZ", "WSD"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 8, 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(range(64))
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    return buffer.getvalue()


# ------------------------------------------------------------------------------ reading the SCP's replies

def split_pdus(data: bytes) -> tuple[list[bytes], bytes]:
    """The whole PDUs at the start of ``data`` and what follows them (a PDU cut short, or nothing)."""
    pdus, offset = [], 0
    while offset + 6 <= len(data):
        end = offset + 6 + struct.unpack_from(">I", data, offset + 2)[0]
        if end > len(data):
            break
        pdus.append(data[offset:end])
        offset = end
    return pdus, data[offset:]


def pdvs(p_data: bytes) -> list[tuple[int, int, bytes]]:
    """(context id, control header, fragment) of each PDV item; ValueError when they do not fill the PDU."""
    items, offset = [], 6
    while offset < len(p_data):
        if offset + 6 > len(p_data):
            raise ValueError("P-DATA-TF ends inside a PDV item header")
        length = struct.unpack_from(">I", p_data, offset)[0]
        if length < 2 or offset + 4 + length > len(p_data):
            raise ValueError(f"PDV item of {length} bytes does not fit its PDU")
        items.append((p_data[offset + 4], p_data[offset + 5], p_data[offset + 6 : offset + 4 + length]))
        offset += 4 + length
    return items


def command_values(data: bytes) -> dict[int, bytes]:
    """Element number -> raw value of a command set; ValueError when it is not one."""
    values, offset = {}, 0
    while offset < len(data):
        if offset + 8 > len(data):
            raise ValueError("command set ends inside an element header")
        group, element, length = struct.unpack_from("<HHI", data, offset)
        if group != 0 or offset + 8 + length > len(data):
            raise ValueError(f"element ({group:04X},{element:04X}) does not belong or does not fit")
        values[element] = data[offset + 8 : offset + 8 + length]
        offset += 8 + length
    return values


def responses(reply: bytes) -> list[tuple[int, int, str]]:
    """(command field, status, affected SOP instance) of each DIMSE response in a reply stream (each sent as one
    command PDV, as the SCP sends them); ValueError when the stream is not whole PDUs of the types an SCP sends
    or a response is not a command set with those elements."""
    pdus, rest = split_pdus(reply)
    if rest:
        raise ValueError(f"reply ends inside a PDU: {rest[:16].hex()}")
    found = []
    for item in pdus:
        if item[0] not in SCP_REPLY_TYPES or item[1] != 0:
            raise ValueError(f"reply holds a PDU of type 0x{item[0]:02X}")
        if item[0] != P_DATA_TF:
            continue
        for _, control, fragment in pdvs(item):
            if control != COMMAND | LAST:
                raise ValueError(f"response PDV with control header 0x{control:02X}")
            values = command_values(fragment)
            field = struct.unpack("<H", values[0x0100])[0]
            status = struct.unpack("<H", values[0x0900])[0]
            instance = values.get(0x1000, b"").rstrip(b"\0 ").decode("ascii")
            found.append((field, status, instance))
    return found


def dataset_cut_short(stored: bytes) -> str | None:
    """Where the dataset of a stored Part 10 file (Implicit VR Little Endian, as the fuzzer sends) ends inside
    an element, or None when its top-level elements fill it exactly. An undefined length ends the walk (None):
    sequences and encapsulated pixel data are left to pydicom."""
    meta_length = struct.unpack_from("<I", stored, 140)[0]  # (0002,0000) after the preamble and "DICM"
    offset = 144 + meta_length
    while offset < len(stored):
        if offset + 8 > len(stored):
            return f"the file ends {len(stored) - offset} byte(s) into an element header"
        group, element, length = struct.unpack_from("<HHI", stored, offset)
        if length == 0xFFFFFFFF:
            return None
        if offset + 8 + length > len(stored):
            return (f"element ({group:04X},{element:04X}) declares {length} bytes, "
                    f"{len(stored) - offset - 8} are stored")
        offset += 8 + length
    return None
