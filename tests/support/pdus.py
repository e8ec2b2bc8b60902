"""Raw DICOM upper-layer PDUs for tests that must see exactly what the SCP sends (no requestor library in
between to interpret it)."""

from __future__ import annotations

import socket
import struct

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context

from dicom_node.association import APPLICATION_CONTEXT


def associate_rq(calling: str = "MODALITY", called: str = "ONCOAGENT") -> bytes:
    """A well-formed A-ASSOCIATE-RQ proposing Verification."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT)
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    context = build_context("1.2.840.10008.1.1")
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    primitive.user_information = [max_length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


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
