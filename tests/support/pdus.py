"""Raw DICOM upper-layer PDUs for tests that must see exactly what the SCP sends (no requestor library in
between to interpret it)."""

from __future__ import annotations

import socket
import struct

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext, build_context

from dicom_node.association import APPLICATION_CONTEXT


def associate_rq(calling: str = "MODALITY", called: str = "ONCOAGENT") -> bytes:
    """A well-formed A-ASSOCIATE-RQ proposing Verification."""
    context = build_context("1.2.840.10008.1.1")
    context.context_id = 1
    return _associate_rq([context], calling, called)


def read_pdu(sock: socket.socket) -> bytes:
    header = read_exactly(sock, 6)
    return header + read_exactly(sock, struct.unpack(">I", header[2:6])[0])


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the SCP closed the connection early"
        data += chunk
    return data


def associate_rq_for(contexts: list[tuple[int, str, str]], calling: str = "MODALITY", called: str = "ONCOAGENT",
                     ) -> bytes:
    """A well-formed A-ASSOCIATE-RQ proposing ``(context id, abstract syntax, transfer syntax)`` each."""
    proposed = []
    for context_id, abstract, transfer in contexts:
        context = build_context(abstract, [transfer])
        context.context_id = context_id
        proposed.append(context)
    return _associate_rq(proposed, calling, called)


def _associate_rq(contexts: list[PresentationContext], calling: str, called: str) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT)
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    primitive.presentation_context_definition_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    primitive.user_information = [max_length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def p_data(*pdvs: tuple[int, int, bytes]) -> bytes:
    """A P-DATA-TF PDU of ``(context id, message control header, fragment)`` PDV items (control: bit 0
    command, bit 1 last fragment)."""
    items = b"".join(struct.pack(">IBB", len(value) + 2, context_id, control) + value
                     for context_id, control, value in pdvs)
    return b"\x04\x00" + struct.pack(">I", len(items)) + items


def command_set(command_field: int, message_id: int, *, sop_class: str = "", sop_instance: str = "",
                has_dataset: bool = False) -> bytes:
    """A DIMSE request command set (implicit VR little endian, group 0000 with its group length)."""

    def uid(element: int, value: str) -> bytes:
        data = value.encode("ascii")
        data += b"\0" * (len(data) % 2)
        return struct.pack("<HHI", 0, element, len(data)) + data

    def us(element: int, value: int) -> bytes:
        return struct.pack("<HHIH", 0, element, 2, value)

    body = (uid(0x0002, sop_class) if sop_class else b"") + us(0x0100, command_field) + us(0x0110, message_id)
    body += us(0x0700, 0) if command_field == 0x0001 else b""  # priority: medium
    body += us(0x0800, 0x0000 if has_dataset else 0x0101)
    body += uid(0x1000, sop_instance) if sop_instance else b""
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def response_status(pdu: bytes) -> tuple[int, int, int]:
    """(command field, message id responded to, status) of a P-DATA-TF PDU holding one whole response command."""
    assert pdu[0] == 0x04, f"expected P-DATA-TF, got PDU type 0x{pdu[0]:02X}"
    assert pdu[11] & 0x03 == 0x03, "expected one whole command fragment"
    data, values = pdu[12:], {}
    offset = 0
    while offset < len(data):
        _, element, length = struct.unpack_from("<HHI", data, offset)
        if length == 2:
            values[element] = struct.unpack_from("<H", data, offset + 8)[0]
        offset += 8 + length
    return values[0x0100], values[0x0120], values[0x0900]



def cancel_rq(message_id: int) -> bytes:
    """A C-CANCEL-RQ command set (PS3.7 9.3.2.3): Message ID Being Responded To, no Message ID of its own."""
    body = struct.pack("<HHIH", 0, 0x0100, 2, 0x0FFF) + struct.pack("<HHIH", 0, 0x0120, 2, message_id)
    body += struct.pack("<HHIH", 0, 0x0800, 2, 0x0101)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body
